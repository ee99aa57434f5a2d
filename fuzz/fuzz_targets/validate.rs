//! Fuzzes the dataset validator: any bytes as a training file (and, for half the inputs, as
//! the validation file too) must give a consistent report and never panic. Covers the
//! whole-file scan (batching, line splitting, BOMs, line numbering) and the line checker
//! (UTF-8, JSON parsing and its limits, every format check, token counting).

#![no_main]

use std::sync::OnceLock;

use finetune_core::dataset::{self, Catalog, Input, Options};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/invariants.rs"]
mod invariants;

fuzz_target!(|data: &[u8]| {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    let catalog = CATALOG.get_or_init(Catalog::builtin);
    let options = Options {
        threads: 1,
        max_problems: 25,
        ..Options::default()
    };
    let validation = (data.len() % 2 == 1).then(|| Input::from_bytes("valid.jsonl", data));
    let report = dataset::validate(
        Input::from_bytes("train.jsonl", data),
        validation,
        &options,
        catalog,
    )
    .expect("validating bytes in memory cannot fail");
    invariants::assert_consistent(&report, "fuzz input");
});
