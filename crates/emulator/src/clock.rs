//! The emulated clock, and the anchor that carries it across restarts.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A wall time and the emulated time at that moment, both unix seconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Anchor {
    pub(crate) wall: f64,
    pub(crate) emulated: f64,
}

/// The emulated clock: real time since start, times `scale`, from the emulated time at
/// start (the real time on a first start; after a restart, where the saved anchor says
/// emulated time has got to: see `persist.rs`).
pub(crate) struct Clock {
    start: Instant,
    start_wall: f64,
    start_emulated: f64,
    scale: f64,
}

impl Clock {
    pub(crate) fn resume(scale: f64, anchor: Option<Anchor>) -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let start_emulated = match anchor {
            None => wall,
            Some(a) => a.emulated + (wall - a.wall).max(0.0) * scale,
        };
        Clock {
            start: Instant::now(),
            start_wall: wall,
            start_emulated,
            scale,
        }
    }

    /// Emulated unix time in seconds.
    pub(crate) fn now(&self) -> f64 {
        self.start_emulated + self.start.elapsed().as_secs_f64() * self.scale
    }

    /// This moment on both clocks, for the next start to continue from.
    pub(crate) fn anchor(&self) -> Anchor {
        let elapsed = self.start.elapsed().as_secs_f64();
        Anchor {
            wall: self.start_wall + elapsed,
            emulated: self.start_emulated + elapsed * self.scale,
        }
    }

    /// Real duration of `secs` emulated seconds.
    pub(crate) fn real(&self, secs: f64) -> std::time::Duration {
        std::time::Duration::from_secs_f64((secs / self.scale).max(0.0))
    }
}

/// Unix seconds of an emulated instant, as the API reports them.
pub(crate) fn ts(t: f64) -> i64 {
    t.floor() as i64
}
