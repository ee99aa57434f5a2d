//! The OpenAI adapter (reqwest + serde_json): files, uploads and fine-tuning jobs.
//! Being written in this session; see the helper's report.
