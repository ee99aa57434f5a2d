//! Anthropic's prompt cache as the emulator keeps it: prefixes by content hash, each with its
//! emulated expiry. Plain state: the Messages handler ([`crate::anthropic`]) hashes and
//! counts the prompt, the store holds the cache.

use std::collections::HashMap;

/// Cached prefixes by content hash (model included), with their emulated expiry.
#[derive(Default)]
pub(crate) struct PromptCache {
    entries: HashMap<[u8; 32], Entry>,
}

#[derive(Clone, Copy)]
struct Entry {
    expires: f64,
    ttl: f64,
}

/// A `cache_control` breakpoint: the prefix up to and including its block.
pub(crate) struct Breakpoint {
    pub(crate) prefix_tokens: u64,
    pub(crate) digest: [u8; 32],
    pub(crate) ttl_secs: f64,
}

/// What caching did for one request, in tokens.
#[derive(Default, Clone, Copy)]
pub(crate) struct CacheOutcome {
    pub(crate) read: u64,
    pub(crate) write_5m: u64,
    pub(crate) write_1h: u64,
}

impl PromptCache {
    /// Reads the longest live cached prefix, then writes every longer breakpoint. A read
    /// restarts its entry's lifetime; entries live from the start of the request.
    pub(crate) fn apply(&mut self, breakpoints: &[Breakpoint], now: f64) -> CacheOutcome {
        self.entries.retain(|_, e| e.expires > now);
        let mut outcome = CacheOutcome::default();
        let hit = breakpoints
            .iter()
            .rposition(|b| self.entries.contains_key(&b.digest));
        if let Some(i) = hit {
            let b = &breakpoints[i];
            if let Some(e) = self.entries.get_mut(&b.digest) {
                e.expires = now + e.ttl;
            }
            outcome.read = b.prefix_tokens;
        }
        let mut covered = outcome.read;
        let first_new = hit.map_or(0, |i| i + 1);
        for b in &breakpoints[first_new..] {
            let tokens = b.prefix_tokens.saturating_sub(covered);
            covered = covered.max(b.prefix_tokens);
            if b.ttl_secs > 300.0 {
                outcome.write_1h += tokens;
            } else {
                outcome.write_5m += tokens;
            }
            self.entries.insert(
                b.digest,
                Entry {
                    expires: now + b.ttl_secs,
                    ttl: b.ttl_secs,
                },
            );
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bp(tokens: u64, tag: u8, ttl: f64) -> Breakpoint {
        Breakpoint {
            prefix_tokens: tokens,
            digest: [tag; 32],
            ttl_secs: ttl,
        }
    }

    #[test]
    fn cache_writes_then_reads_then_expires() {
        let mut cache = PromptCache::default();
        let bps = [bp(2000, 1, 300.0)];
        let first = cache.apply(&bps, 0.0);
        assert_eq!((first.read, first.write_5m), (0, 2000));
        let second = cache.apply(&bps, 299.0);
        assert_eq!((second.read, second.write_5m), (2000, 0));
        // The read restarted the entry's lifetime.
        let third = cache.apply(&bps, 598.0);
        assert_eq!(third.read, 2000);
        let expired = cache.apply(&bps, 598.0 + 300.5);
        assert_eq!((expired.read, expired.write_5m), (0, 2000));
    }

    #[test]
    fn cache_reads_the_longest_live_prefix_and_writes_the_rest() {
        let mut cache = PromptCache::default();
        cache.apply(&[bp(1500, 1, 300.0)], 0.0);
        let both = [bp(1500, 1, 300.0), bp(4000, 2, 3600.0)];
        let out = cache.apply(&both, 1.0);
        assert_eq!((out.read, out.write_5m, out.write_1h), (1500, 0, 2500));
        let again = cache.apply(&both, 2.0);
        assert_eq!((again.read, again.write_1h), (4000, 0));
    }
}
