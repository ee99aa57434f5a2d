//! OpenAI's training-file rules as the emulator applies them, written from the published
//! material alone: the line schemas `FineTuneChatRequestInput` and
//! `FineTunePreferenceRequestInput` (`reference/openai-openapi-finetuning-input-formats.yaml`)
//! and the fine-tuning guide's limits (`reference/openai-api.md`, sections 4-6). It shares no
//! code with the project's validator (`crate::dataset`): the two are compared by
//! `tests/differential.rs`, and every disagreement is explained in the README's table "Where
//! validation is stricter or looser than OpenAI".
//!
//! How the schemas are read:
//! - Objects are closed: a key its schema does not define is rejected, as OpenAI's API answers
//!   an unknown parameter (and as the cookbook's `message_unrecognized_key` check does). The
//!   one exception is the top level of a line, which the emulator leaves open: no published
//!   source says what OpenAI does with an extra key there.
//! - What a schema allows is allowed, even where the cookbook's data-prep notebook is stricter:
//!   empty content, an example without an assistant message.
//! - `integer` includes integer-valued numbers (`1.0`), as in JSON Schema; a string is never a
//!   number (`"1"`).
//! - The guide adds: image URLs are `https://` or `data:image/{jpeg,png,webp}` URLs, at most
//!   10 images an example, images only in user messages; a DPO output holds exactly one
//!   assistant message and DPO is text-only.
//!
//! Counting (`trained_tokens`): OpenAI publishes no rule. The emulator counts, per example,
//! 3 tokens per message plus the tokens of its role and text (content, refusal, name + 1,
//! tool-call names and arguments, tool and function results), the JSON text of `tools` and
//! `functions`, 85 tokens per image (the guide's `detail: low` price; the emulator cannot see
//! an image's size), and **1 token per example**, then keeps at most the model's training
//! context per example. Unlike the cookbook's estimate it adds no 3-token reply priming: that
//! primes a reply the model is about to generate, while a training example already holds its
//! reply. The 1 token per example is fitted, not published: it makes the count of
//! `reference/datasets/openai-dotnet_fine_tuning_sample.jsonl` 583 a epoch, the 5,830 tokens
//! the one recorded real job reported for 10 epochs (`GetCheckpoints.json`); an
//! end-of-sequence token would explain it, but nothing documents one. That job's examples
//! all have 3 messages, no names and no tools, so everything else in the rule is unverified.

use std::fmt;

use serde_json::{Map, Value};
use tiktoken_rs::CoreBPE;

/// The training method a file is checked for (`method.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Method {
    /// Supervised fine-tuning: chat `messages` examples.
    Supervised,
    /// Direct preference optimisation: `input` with preferred and non-preferred outputs.
    Dpo,
}

/// What the emulator learned from a file it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Lines, each one example.
    pub examples: u64,
    /// Tokens of one epoch: each example's count, at most the training context.
    pub tokens_per_epoch: u64,
}

/// Why a file is refused: the first offending line (1-based; 0 for the whole file), the JSON
/// path in it, and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line of the first offending example; 0 when the whole file is at fault.
    pub line: u64,
    /// JSON path inside that line, e.g. `messages[2].content`.
    pub path: String,
    /// OpenAI-style explanation shown to the client.
    pub reason: String,
}

impl fmt::Display for Rejected {
    /// OpenAI's wording for a failed file: `Invalid file format. Line 3, messages[0].role: ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Invalid file format. ")?;
        match (self.line, self.path.is_empty()) {
            (0, _) => {}
            (line, true) => write!(f, "Line {line}: ")?,
            (line, false) => write!(f, "Line {line}, {}: ", self.path)?,
        }
        f.write_str(&self.reason)
    }
}

/// The tokenizer of a base model, after tiktoken's own model table (`o200k_base` when the
/// table does not know the model).
pub fn tokenizer_for(model: &str) -> &'static CoreBPE {
    tiktoken_rs::bpe_for_model(model).unwrap_or_else(|_| tiktoken_rs::o200k_base_singleton())
}

/// Images an example may carry [GUIDE: vision fine-tuning].
const MAX_IMAGES: usize = 10;
/// Tokens an image counts: the guide's price of a `detail: low` image.
const TOKENS_PER_IMAGE: u64 = 85;
/// Tokens around each message (`<|start|>`, the role's end, `<|end|>`), as in the cookbook.
const TOKENS_PER_MESSAGE: u64 = 3;
/// Fitted to the one recorded real job; see the module comment.
const TOKENS_PER_EXAMPLE: u64 = 1;
/// Longest text tokenized in one call: tiktoken's pre-tokenizing regex overflows its stack on
/// about 1 MB without a word break. Longer text is counted in pieces cut at character
/// boundaries, which may differ by a token per cut.
const MAX_PIECE: usize = 16 * 1024;

/// Checks every line of a training or validation file for `method` and counts its tokens with
/// `bpe`. Examples longer than `training_context` tokens count as `training_context` (OpenAI
/// truncates them). The minimum example count is the caller's rule: it depends on the file's
/// role.
pub fn check_file(
    bytes: &[u8],
    method: Method,
    bpe: &CoreBPE,
    training_context: u64,
) -> Result<Accepted, Rejected> {
    let mut accepted = Accepted {
        examples: 0,
        tokens_per_epoch: 0,
    };
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Ok(accepted);
    }
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let at = |path: &str, reason: String| Rejected {
            line,
            path: path.to_owned(),
            reason,
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            at(
                "",
                format!(
                    "the line is not UTF-8 (byte {}); JSONL files are UTF-8",
                    e.valid_up_to() + 1
                ),
            )
        })?;
        if text.starts_with('\u{feff}') {
            return Err(at(
                "",
                "the line starts with a byte-order mark, which is not JSON".to_owned(),
            ));
        }
        if text.trim_matches([' ', '\t']).is_empty() {
            return Err(at(
                "",
                "the line is empty; every line must hold one JSON object".to_owned(),
            ));
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| at("", format!("the line is not JSON: {e}")))?;
        let Value::Object(example) = value else {
            return Err(at(
                "",
                format!("each line must be a JSON object, not {}", kind(&value)),
            ));
        };
        let mut walk = Walk {
            bpe,
            tokens: TOKENS_PER_EXAMPLE,
            images: 0,
        };
        let checked = match method {
            Method::Supervised => walk.chat_example(&example),
            Method::Dpo => walk.preference_example(&example),
        };
        checked.map_err(|(path, reason)| at(&path, reason))?;
        accepted.examples += 1;
        accepted.tokens_per_epoch += walk.tokens.min(training_context);
    }
    Ok(accepted)
}

/// OpenAI's default epochs when `n_epochs` is `auto`, as the cookbook states the rule:
/// 3 epochs, raised so that small files see about 100 examples (at most 25 epochs) and
/// lowered so that large ones see about 25,000 (at least 1).
pub fn auto_epochs(examples: u64) -> u32 {
    let n = examples.max(1);
    let epochs = if n * 3 < 100 {
        (100 / n).min(25)
    } else if n * 3 > 25_000 {
        (25_000 / n).max(1)
    } else {
        3
    };
    epochs as u32
}

/// A failed check: the JSON path and the reason.
type Fail = (String, String);
type Check<T = ()> = Result<T, Fail>;

fn fail<T>(path: impl Into<String>, reason: impl Into<String>) -> Check<T> {
    Err((path.into(), reason.into()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Rejects a key `allowed` does not list (closed objects).
fn closed(obj: &Map<String, Value>, path: &str, allowed: &[&str]) -> Check {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => fail(
            join(path, k),
            format!("unrecognized key '{k}' (allowed: {})", allowed.join(", ")),
        ),
        None => Ok(()),
    }
}

fn object<'v>(v: &'v Value, path: &str) -> Check<&'v Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => fail(path, format!("expected an object, got {}", kind(other))),
    }
}

fn array<'v>(v: &'v Value, path: &str) -> Check<&'v Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => fail(path, format!("expected an array, got {}", kind(other))),
    }
}

fn string<'v>(v: &'v Value, path: &str) -> Check<&'v str> {
    match v {
        Value::String(s) => Ok(s),
        other => fail(path, format!("expected a string, got {}", kind(other))),
    }
}

fn required<'v>(obj: &'v Map<String, Value>, path: &str, key: &str) -> Check<&'v Value> {
    obj.get(key)
        .map_or_else(|| fail(join(path, key), format!("'{key}' is required")), Ok)
}

/// `[a-zA-Z0-9_-]{1,64}`: the spec's function names.
fn function_name(v: &Value, path: &str) -> Check<String> {
    let name = string(v, path)?;
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return fail(
            path,
            "a function name is 1-64 characters of a-z, A-Z, 0-9, _ and -",
        );
    }
    Ok(name.to_owned())
}

/// The roles of the message schemas a list may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// `messages` of a chat example or `input.messages` of a preference example: system,
    /// user, assistant (with `weight`), tool, function.
    Conversation,
    /// An item of `preferred_output`/`non_preferred_output`: `ChatCompletionRequestAssistantMessage`.
    Output,
}

struct Walk<'a> {
    bpe: &'a CoreBPE,
    tokens: u64,
    images: usize,
}

impl Walk<'_> {
    fn count(&mut self, text: &str) {
        let mut rest = text;
        while !rest.is_empty() {
            let mut cut = rest.len().min(MAX_PIECE);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            self.tokens += self.bpe.encode_ordinary(&rest[..cut]).len() as u64;
            rest = &rest[cut..];
        }
    }

    /// `FineTuneChatRequestInput`.
    fn chat_example(&mut self, ex: &Map<String, Value>) -> Check {
        let messages = required(ex, "", "messages")?;
        self.tools(ex, "")?;
        if let Some(functions) = ex.get("functions") {
            let items = array(functions, "functions")?;
            if items.is_empty() || items.len() > 128 {
                return fail("functions", "expected 1 to 128 functions");
            }
            for (i, f) in items.iter().enumerate() {
                self.function_definition(f, &format!("functions[{i}]"))?;
            }
            self.count(&functions.to_string());
        }
        self.messages(messages, "messages", Place::Conversation)?;
        Ok(())
    }

    /// `FineTunePreferenceRequestInput`, with the guide's `*_output` names or the spec's
    /// `*_completion` ones.
    fn preference_example(&mut self, ex: &Map<String, Value>) -> Check {
        let input = object(required(ex, "", "input")?, "input")?;
        closed(
            input,
            "input",
            &["messages", "tools", "parallel_tool_calls"],
        )?;
        self.tools(input, "input")?;
        self.messages(
            required(input, "input", "messages")?,
            "input.messages",
            Place::Conversation,
        )?;
        for (name, legacy) in [
            ("preferred_output", "preferred_completion"),
            ("non_preferred_output", "non_preferred_completion"),
        ] {
            let (key, output) = match (ex.get(name), ex.get(legacy)) {
                (Some(v), _) => (name, v),
                (None, Some(v)) => (legacy, v),
                (None, None) => return fail(name, format!("'{name}' is required")),
            };
            match output {
                Value::Array(items) if items.len() == 1 => {}
                Value::Array(items) => {
                    return fail(
                        key,
                        format!("expected exactly 1 assistant message, got {}", items.len()),
                    );
                }
                other => return fail(key, format!("expected an array, got {}", kind(other))),
            }
            self.messages(output, key, Place::Output)?;
        }
        if self.images > 0 {
            return fail(
                "input.messages",
                "DPO training is text-only: remove the images",
            );
        }
        Ok(())
    }

    /// `tools` and `parallel_tool_calls`.
    fn tools(&mut self, obj: &Map<String, Value>, path: &str) -> Check {
        if let Some(flag) = obj.get("parallel_tool_calls") {
            if !flag.is_boolean() {
                let p = join(path, "parallel_tool_calls");
                return fail(p, format!("expected a boolean, got {}", kind(flag)));
            }
        }
        let Some(tools) = obj.get("tools") else {
            return Ok(());
        };
        let tp = join(path, "tools");
        let items = array(tools, &tp)?;
        for (i, tool) in items.iter().enumerate() {
            let p = format!("{tp}[{i}]");
            let t = object(tool, &p)?;
            closed(t, &p, &["type", "function"])?;
            if required(t, &p, "type")?.as_str() != Some("function") {
                return fail(join(&p, "type"), "the only tool type is 'function'");
            }
            self.function_definition(required(t, &p, "function")?, &join(&p, "function"))?;
        }
        self.count(&tools.to_string());
        Ok(())
    }

    /// `FunctionObject` / `ChatCompletionFunctions`.
    fn function_definition(&mut self, f: &Value, path: &str) -> Check {
        let f = object(f, path)?;
        closed(f, path, &["name", "description", "parameters", "strict"])?;
        function_name(required(f, path, "name")?, &join(path, "name"))?;
        if let Some(d) = f.get("description") {
            string(d, &join(path, "description"))?;
        }
        if let Some(p) = f.get("parameters") {
            object(p, &join(path, "parameters"))?;
        }
        match f.get("strict") {
            None | Some(Value::Null | Value::Bool(_)) => Ok(()),
            Some(other) => fail(
                join(path, "strict"),
                format!("expected a boolean or null, got {}", kind(other)),
            ),
        }
    }

    fn messages(&mut self, v: &Value, path: &str, place: Place) -> Check {
        let Value::Array(items) = v else {
            return fail(
                path,
                format!("expected an array of messages, got {}", kind(v)),
            );
        };
        if items.is_empty() {
            return fail(path, "expected at least 1 message");
        }
        for (i, m) in items.iter().enumerate() {
            self.message(m, &format!("{path}[{i}]"), place)?;
        }
        if self.images > MAX_IMAGES {
            return fail(
                path,
                format!(
                    "the example has {} images; at most {MAX_IMAGES} are allowed",
                    self.images
                ),
            );
        }
        Ok(())
    }

    fn message(&mut self, m: &Value, path: &str, place: Place) -> Check {
        let m = object(m, path)?;
        let role = string(required(m, path, "role")?, &join(path, "role"))?;
        let allowed: &[&str] = match (place, role) {
            (Place::Conversation, "system" | "user") => &["role", "content", "name"],
            (Place::Conversation, "assistant") => &[
                "role",
                "content",
                "refusal",
                "name",
                "audio",
                "tool_calls",
                "function_call",
                "weight",
            ],
            (Place::Output, "assistant") => &[
                "role",
                "content",
                "refusal",
                "name",
                "audio",
                "tool_calls",
                "function_call",
            ],
            (Place::Conversation, "tool") => &["role", "content", "tool_call_id"],
            (Place::Conversation, "function") => &["role", "content", "name"],
            (Place::Conversation, other) => {
                return fail(
                    join(path, "role"),
                    format!(
                        "unrecognized role '{other}': expected system, user, assistant, tool or function"
                    ),
                );
            }
            (Place::Output, other) => {
                return fail(
                    join(path, "role"),
                    format!("an output message's role must be 'assistant', got '{other}'"),
                );
            }
        };
        closed(m, path, allowed)?;
        self.tokens += TOKENS_PER_MESSAGE;
        self.count(role);
        if let Some(name) = m.get("name") {
            let name = string(name, &join(path, "name"))?;
            self.count(name);
            self.tokens += 1;
        }
        let content = m.get("content");
        match role {
            "system" => self.content(required(m, path, "content")?, path, &["text"]),
            "user" => self.content(
                required(m, path, "content")?,
                path,
                &["text", "image_url", "input_audio", "file"],
            ),
            "tool" => {
                let id = required(m, path, "tool_call_id")?;
                string(id, &join(path, "tool_call_id"))?;
                self.content(required(m, path, "content")?, path, &["text"])
            }
            "function" => {
                function_name(required(m, path, "name")?, &join(path, "name"))?;
                match required(m, path, "content")? {
                    Value::Null => Ok(()),
                    other => self.content(other, path, &[]),
                }
            }
            _ => self.assistant(m, content, path),
        }
    }

    fn assistant(&mut self, m: &Map<String, Value>, content: Option<&Value>, path: &str) -> Check {
        if let Some(w) = m.get("weight") {
            if !matches!(w.as_f64(), Some(x) if x == 0.0 || x == 1.0) {
                return fail(
                    join(path, "weight"),
                    format!("expected the integer 0 or 1, got {w}"),
                );
            }
        }
        if let Some(r) = m.get("refusal").filter(|r| !r.is_null()) {
            let r = string(r, &join(path, "refusal"))?;
            self.count(r);
        }
        if let Some(audio) = m.get("audio").filter(|a| !a.is_null()) {
            let p = join(path, "audio");
            let a = object(audio, &p)?;
            closed(a, &p, &["id"])?;
            string(required(a, &p, "id")?, &join(&p, "id"))?;
        }
        let mut calls = false;
        if let Some(tc) = m.get("tool_calls") {
            let p = join(path, "tool_calls");
            let items = array(tc, &p)?;
            for (i, call) in items.iter().enumerate() {
                let cp = format!("{p}[{i}]");
                let c = object(call, &cp)?;
                closed(c, &cp, &["id", "type", "function"])?;
                string(required(c, &cp, "id")?, &join(&cp, "id"))?;
                if required(c, &cp, "type")?.as_str() != Some("function") {
                    return fail(join(&cp, "type"), "the only tool-call type is 'function'");
                }
                self.called(required(c, &cp, "function")?, &join(&cp, "function"))?;
            }
            calls = true;
        }
        if let Some(fc) = m.get("function_call").filter(|f| !f.is_null()) {
            self.called(fc, &join(path, "function_call"))?;
            calls = true;
        }
        match content {
            None | Some(Value::Null) if calls => Ok(()),
            None | Some(Value::Null) => fail(
                join(path, "content"),
                "an assistant message needs content unless it has tool_calls or function_call",
            ),
            Some(c) => self.content(c, path, &["text", "refusal"]),
        }
    }

    /// A called function: `{name, arguments}`, both strings (the arguments' JSON is the
    /// model's output and is not checked: the spec says it may be invalid).
    fn called(&mut self, f: &Value, path: &str) -> Check {
        let f = object(f, path)?;
        closed(f, path, &["name", "arguments"])?;
        let name = string(required(f, path, "name")?, &join(path, "name"))?;
        let args = string(required(f, path, "arguments")?, &join(path, "arguments"))?;
        self.count(name);
        self.count(args);
        Ok(())
    }

    /// A string, or a non-empty array of the part types `parts` allows.
    fn content(&mut self, c: &Value, path: &str, parts: &[&str]) -> Check {
        let cp = join(path, "content");
        match c {
            Value::String(s) => {
                self.count(s);
                Ok(())
            }
            Value::Array(items) if !parts.is_empty() => {
                if items.is_empty() {
                    return fail(cp, "expected at least 1 content part");
                }
                for (i, part) in items.iter().enumerate() {
                    self.part(part, &format!("{cp}[{i}]"), parts)?;
                }
                Ok(())
            }
            other => fail(
                cp,
                format!(
                    "expected {}, got {}",
                    if parts.is_empty() {
                        "a string"
                    } else {
                        "a string or an array of content parts"
                    },
                    kind(other)
                ),
            ),
        }
    }

    fn part(&mut self, part: &Value, path: &str, allowed: &[&str]) -> Check {
        let p = object(part, path)?;
        let kind_of = string(required(p, path, "type")?, &join(path, "type"))?;
        if !allowed.contains(&kind_of) {
            return fail(
                join(path, "type"),
                format!(
                    "content part type '{kind_of}' is not allowed here (allowed: {})",
                    allowed.join(", ")
                ),
            );
        }
        match kind_of {
            "text" | "refusal" => {
                closed(p, path, &["type", kind_of])?;
                let t = string(required(p, path, kind_of)?, &join(path, kind_of))?;
                self.count(t);
            }
            "image_url" => {
                closed(p, path, &["type", "image_url"])?;
                let ip = join(path, "image_url");
                let image = object(required(p, path, "image_url")?, &ip)?;
                closed(image, &ip, &["url", "detail"])?;
                let url = string(required(image, &ip, "url")?, &join(&ip, "url"))?;
                let data = ["data:image/jpeg;", "data:image/png;", "data:image/webp;"];
                if !url.starts_with("https://") && !data.iter().any(|d| url.starts_with(d)) {
                    return fail(
                        join(&ip, "url"),
                        "an image must be an https:// URL or a data:image/jpeg, png or webp URL",
                    );
                }
                if let Some(d) = image.get("detail") {
                    if !matches!(d.as_str(), Some("auto" | "low" | "high")) {
                        return fail(join(&ip, "detail"), "detail must be auto, low or high");
                    }
                }
                self.images += 1;
                self.tokens += TOKENS_PER_IMAGE;
            }
            "input_audio" => {
                closed(p, path, &["type", "input_audio"])?;
                let ap = join(path, "input_audio");
                let audio = object(required(p, path, "input_audio")?, &ap)?;
                closed(audio, &ap, &["data", "format"])?;
                string(required(audio, &ap, "data")?, &join(&ap, "data"))?;
                let format = required(audio, &ap, "format")?;
                if !matches!(format.as_str(), Some("wav" | "mp3")) {
                    return fail(join(&ap, "format"), "format must be wav or mp3");
                }
            }
            _ => {
                closed(p, path, &["type", "file"])?;
                let fp = join(path, "file");
                let file = object(required(p, path, "file")?, &fp)?;
                closed(file, &fp, &["filename", "file_data", "file_id"])?;
                for (k, v) in file {
                    string(v, &join(&fp, k))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}"#;

    fn check(text: &str, method: Method) -> Result<Accepted, Rejected> {
        check_file(
            text.as_bytes(),
            method,
            tiktoken_rs::cl100k_base_singleton(),
            16_385,
        )
    }

    #[test]
    fn counts_messages_without_reply_priming_and_one_token_an_example() {
        // 3 messages x (3 + 1 role token + 1 content token) + 1.
        let ok = check(&format!("{LINE}\n"), Method::Supervised).unwrap();
        assert_eq!(
            ok,
            Accepted {
                examples: 1,
                tokens_per_epoch: 16
            }
        );
    }

    #[test]
    fn examples_count_at_most_the_training_context() {
        let ok = check_file(
            format!("{LINE}\n{LINE}").as_bytes(),
            Method::Supervised,
            tiktoken_rs::cl100k_base_singleton(),
            10,
        )
        .unwrap();
        assert_eq!(ok.tokens_per_epoch, 20);
    }

    #[test]
    fn rejections_name_the_line_and_path() {
        let bad = LINE.replace("\"system\"", "\"developer\"");
        let err = check(&format!("{LINE}\n{bad}\n"), Method::Supervised).unwrap_err();
        assert_eq!((err.line, err.path.as_str()), (2, "messages[0].role"));
        assert!(
            err.to_string()
                .starts_with("Invalid file format. Line 2, messages[0].role: ")
        );
    }

    #[test]
    fn auto_epochs_follow_the_published_rule() {
        let table = [
            (5, 20),
            (10, 10),
            (20, 5),
            (33, 3),
            (34, 3),
            (8333, 3),
            (10_000, 2),
            (30_000, 1),
        ];
        for (n, epochs) in table {
            assert_eq!(auto_epochs(n), epochs, "{n} examples");
        }
    }
}
