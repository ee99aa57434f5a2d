//! OpenAI's spec subset (`reference/openai-openapi-finetuning.yaml`) as JSON
//! Schema 2020-12 validators, for the contract tests.

use std::sync::OnceLock;

use serde_json::{Value, json};

/// The whole spec document, its OpenAPI 3.0 leftovers rewritten (see below).
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = super::repo_file("reference/openai-openapi-finetuning.yaml");
        let text = std::fs::read_to_string(path).expect("spec");
        // The chat schemas hold integer bounds beyond i64 (`seed.minimum:
        // -9223372036854776000`) that no YAML or JSON value type here can carry as an
        // integer: read such 19+ digit scalars as floats.
        let huge = regex::Regex::new(r"(?m)(:[ \t]+-?[0-9]{19,})[ \t]*$").unwrap();
        let text = huge.replace_all(&text, "${1}.0");
        let mut spec: Value = serde_norway::from_str(&text).expect("spec is YAML");
        openapi_to_json_schema(&mut spec);
        spec
    })
}

/// The spec says OpenAPI 3.1 (JSON Schema 2020-12) but still uses two OpenAPI 3.0 forms:
/// `nullable: true` and boolean `exclusiveMinimum`. Rewrite them into 2020-12 so the
/// validator enforces what they mean instead of rejecting the schema.
fn openapi_to_json_schema(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.get("nullable") == Some(&Value::Bool(true))
                && let Some(Value::String(kind)) = map.get("type").cloned()
            {
                map.insert("type".into(), json!([kind, "null"]));
            }
            if map.get("nullable").is_some_and(Value::is_boolean) {
                map.remove("nullable");
            }
            for (exclusive, bound) in [
                ("exclusiveMinimum", "minimum"),
                ("exclusiveMaximum", "maximum"),
            ] {
                match map.get(exclusive) {
                    Some(Value::Bool(true)) => {
                        let limit = map.remove(bound).expect("a bound to make exclusive");
                        map.insert(exclusive.into(), limit);
                    }
                    Some(Value::Bool(false)) => {
                        map.remove(exclusive);
                    }
                    _ => {}
                }
            }
            map.values_mut().for_each(openapi_to_json_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(openapi_to_json_schema),
        _ => {}
    }
}

/// A validator for `schema` placed in the spec's document, so `$ref`s resolve.
pub fn validator_for_schema(schema: Value) -> jsonschema::Validator {
    let mut root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec()["components"].clone(),
    });
    let root_map = root.as_object_mut().unwrap();
    for (k, v) in schema.as_object().unwrap() {
        root_map.insert(k.clone(), v.clone());
    }
    jsonschema::draft202012::new(&root).expect("schema compiles")
}

pub fn validator(name: &str) -> jsonschema::Validator {
    assert!(
        spec()["components"]["schemas"].get(name).is_some(),
        "no schema {name}"
    );
    validator_for_schema(json!({ "$ref": format!("#/components/schemas/{name}") }))
}

pub fn violations(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect()
}
