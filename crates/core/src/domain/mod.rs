//! The records the core keeps and every layer reads: jobs with their events and
//! checkpoints, and served requests with their statistics. Plain data, below the ports
//! and the logic that use them.

pub mod job;
pub mod served;
