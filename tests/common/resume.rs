//! A watcher as the SDKs implement one, for tests that kill servers under their watchers.

use std::time::Duration;

use finetune::pb;
use finetune::pb::fine_tune_service_client::FineTuneServiceClient;
use finetune::pb::watch_job_response::Item;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// A client of the server at `addr` that connects lazily, so it reconnects by itself once
/// a killed server is back.
pub fn lazy_client(addr: &str) -> FineTuneServiceClient<Channel> {
    FineTuneServiceClient::new(
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy(),
    )
}

/// What a watcher saw: (sequence, message) of each event in arrival order, and how many
/// times its stream broke.
#[derive(Debug, Default)]
pub struct Seen {
    pub events: Vec<(u64, String)>,
    pub breaks: usize,
    pub final_state: Option<pb::JobState>,
}

/// Watches `job_id` to its end: on a broken stream (or one the server ended early) it
/// calls WatchJob again with the last sequence received, on the next server of `addrs`
/// (starting at `first`), as the SDKs resume. Not `TestServer::watch_to_end`, which fails
/// on a broken stream: these tests kill servers under their watchers on purpose.
pub async fn watch_across(addrs: Vec<String>, first: usize, job_id: String) -> Seen {
    let mut seen = Seen::default();
    let mut last = 0;
    let mut at = first;
    loop {
        let stream = lazy_client(&addrs[at % addrs.len()])
            .watch_job(pb::WatchJobRequest {
                job_id: job_id.clone(),
                after_sequence: last,
            })
            .await;
        if let Ok(stream) = stream {
            let mut stream = stream.into_inner();
            while let Some(Ok(item)) = stream.next().await {
                if let Some(Item::Event(e)) = item.item {
                    last = e.sequence;
                    if let Some(job) = &e.job {
                        seen.final_state = Some(job.state());
                    }
                    seen.events.push((e.sequence, e.message));
                }
            }
            if matches!(
                seen.final_state,
                Some(pb::JobState::Succeeded | pb::JobState::Failed | pb::JobState::Cancelled)
            ) {
                return seen;
            }
        }
        seen.breaks += 1;
        at += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
