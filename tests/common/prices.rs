//! What a completion should cost, worked out in the tests from `data/models.toml` and the
//! usage the service reported, without the service's catalog: a test names the exact price
//! entry it expects the served model to bill at, so a wrong lookup (a prefix that matches the
//! wrong entry, the base price applied to a fine-tuned model) fails the comparison.

use finetune::pb;

/// One `[[inference]]` entry of data/models.toml, in dollars per million tokens.
#[derive(Debug, Clone, Copy)]
pub struct Price {
    pub input: f64,
    pub cached_input: f64,
    pub cache_write: f64,
    pub output: f64,
}

/// The `[[inference]]` entry for `model`, the fine-tuned one when `fine_tuned`.
pub fn price(model: &str, fine_tuned: bool) -> Price {
    let text = std::fs::read_to_string(super::repo_file("data/models.toml")).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    let entry = doc["inference"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_table().unwrap())
        .find(|e| {
            e["model"].as_str() == Some(model)
                && e.get("fine_tuned")
                    .and_then(toml::Value::as_bool)
                    .unwrap_or(false)
                    == fine_tuned
        })
        .unwrap_or_else(|| panic!("no [[inference]] entry for {model} (fine_tuned {fine_tuned})"));
    let number = |key: &str| entry.get(key).and_then(toml::Value::as_float);
    let input = number("input").unwrap();
    Price {
        input,
        cached_input: number("cached_input").unwrap_or(input),
        cache_write: number("cache_write").unwrap_or(input),
        output: number("output").unwrap(),
    }
}

/// The dollars `usage` costs at `price`: plain input, cache reads, cache writes and output,
/// each at its own rate.
pub fn cost(price: Price, usage: &pb::Usage) -> f64 {
    let plain = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens;
    (plain as f64 * price.input
        + usage.cached_tokens as f64 * price.cached_input
        + usage.cache_write_tokens as f64 * price.cache_write
        + usage.completion_tokens as f64 * price.output)
        / 1e6
}

/// Asserts that `completion` cost what its usage costs at `model`'s price.
pub fn assert_cost(completion: &pb::Completion, model: &str, fine_tuned: bool) {
    let usage = completion
        .usage
        .as_ref()
        .expect("a completion reports its usage");
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );
    let expected = cost(price(model, fine_tuned), usage);
    assert!(
        (completion.cost_usd - expected).abs() < 1e-12,
        "{} cost ${} for {usage:?}; data/models.toml's {model} prices make it ${expected}",
        completion.model,
        completion.cost_usd
    );
}
