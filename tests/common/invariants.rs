//! What must hold of any validation report, whatever the input: shared by tests/hostile.rs
//! and the fuzz target (fuzz/fuzz_targets/validate.rs).

use finetune_core::dataset::{Report, Role, render};

/// Panics, naming `what`, when `report` contradicts itself or its text form is unsafe to print.
pub fn assert_consistent(report: &Report, what: &str) {
    for p in &report.problems {
        let lines = match p.dataset {
            Role::Training => report.training.lines,
            Role::Validation => report.validation.as_ref().map_or(0, |v| v.lines),
        };
        assert!(
            u64::from(p.line) <= lines,
            "{what}: line {} of {lines}: {p:?}",
            p.line
        );
        assert_eq!(p.severity, p.code.severity(), "{what}: {p:?}");
        assert!(!p.message.is_empty(), "{what}: {p:?}");
    }
    assert!(report.training.examples <= report.training.lines, "{what}");
    let counted: u64 = report.counts_by_code.values().sum();
    assert_eq!(
        counted,
        report.error_count + report.warning_count,
        "{what}: every problem is counted once"
    );
    assert!(report.problems.len() <= report.max_problems, "{what}");
    assert!(
        report.problems.len() as u64 <= counted,
        "{what}: more listed than counted"
    );
    let text = render::to_text(report);
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "{what}: the text report prints a control character"
    );
    serde_json::to_string(&render::to_json(report)).expect("the JSON report serializes");
}
