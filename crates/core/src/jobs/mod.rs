//! The training lifecycle: reading the job history from the store (no provider needed),
//! starting jobs safely, one poller per active job, adopting jobs made outside the
//! service, and the watch hub that fans events out to any number of watchers.

mod changes;
mod manager;
mod poller;
mod reader;
mod watch;

pub use manager::{DatasetFile, JobManager, JobsConfig, StartRequest, Started, jobs_by_request_id};
pub use poller::SuccessHook;
pub use reader::{JobReader, Lookup};
pub use watch::WatchItem;
