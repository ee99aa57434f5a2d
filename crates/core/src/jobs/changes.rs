//! Writes made by other processes on a shared store, fed to this process's watch hub:
//! the store's notifications as they come, and a periodic read of the watched jobs'
//! positions, so that a lost notification delays an event by at most that period and
//! never loses it (a watcher reads the events themselves from the store).

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::watch::Hub;
use crate::store::{Change, Store};

/// What a released job's watchers are told: past any sequence, so they look and end.
const RELEASED: u64 = u64::MAX;

/// Follows `store`'s changes into `hub` until `shutdown`; returns at once (with nothing
/// to do) when the store is this process's alone.
pub(super) fn follow(
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    catch_up: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !store.is_shared() {
            return;
        }
        let mut changes = None;
        let mut tick = tokio::time::interval(catch_up);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if changes.is_none() {
                changes = match store.listen().await {
                    Ok(rx) => rx,
                    Err(e) => {
                        warn!(error = %e, "cannot listen to the store's changes; reading the watched jobs every {catch_up:?} meanwhile");
                        None
                    }
                };
                // Whatever happened while nobody listened is read now.
                catch_up_watched(&*store, &hub).await;
            }
            let change = async {
                match changes.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                change = change => match change {
                    Some(Change::Job { job_id, last_sequence }) => hub.notify(&job_id, last_sequence),
                    Some(Change::Released { job_id }) => hub.notify(&job_id, RELEASED),
                    Some(Change::Tiers) => {}
                    Some(Change::Lagged) => {
                        info!("the store's change feed reconnected; reading the watched jobs");
                        catch_up_watched(&*store, &hub).await;
                    }
                    None => {
                        warn!("the store's change feed ended; listening again");
                        changes = None;
                    }
                },
                _ = tick.tick() => catch_up_watched(&*store, &hub).await,
                () = shutdown.cancelled() => return,
            }
        }
    })
}

/// Tells the hub where each watched job stands in the store, in one query.
async fn catch_up_watched(store: &dyn Store, hub: &Hub) {
    let watched = hub.watched();
    if watched.is_empty() {
        return;
    }
    match store.last_sequences(&watched).await {
        Ok(found) => {
            for id in &watched {
                match found.iter().find(|(f, _)| f == id) {
                    Some((_, last)) => hub.notify(id, *last),
                    None => hub.notify(id, RELEASED),
                }
            }
            debug!(jobs = watched.len(), "caught up the watched jobs");
        }
        Err(e) => {
            warn!(error = %e, "cannot read the watched jobs' positions; next round will retry")
        }
    }
}
