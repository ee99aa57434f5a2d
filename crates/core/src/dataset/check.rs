//! Checks of one JSONL line against OpenAI's training-file formats, and its token count.
//!
//! Formats: `FineTuneChatRequestInput` (supervised chat, with tools, legacy functions and
//! assistant `weight`) and `FineTunePreferenceRequestInput` (DPO), as described in
//! reference/openai-api.md sections 4 and 5. Codes shared with OpenAI's data-prep
//! cookbook keep its names; unlike the cookbook, tool messages and assistant messages that carry
//! only tool calls are valid.

use serde_json::{Map, Value};
use xxhash_rust::xxh3::Xxh3;

use super::json::{self, MAX_DEPTH, MAX_VALUES, ParseError, path_key};
use super::problem::{Code, LineProblems};
use super::render::thousands;
use super::secrets;
use super::tokens::Counter;

/// Tokens the cookbook adds per message, per `name`, and per example to prime the reply.
const TOKENS_PER_MESSAGE: u64 = 3;
const TOKENS_PER_NAME: u64 = 1;
const TOKENS_REPLY_PRIMING: u64 = 3;
/// An image at `detail: low` costs 85 tokens (OpenAI's guide); we count every image so.
const TOKENS_PER_IMAGE: u64 = 85;
/// Images one example may hold (OpenAI's guide, vision fine-tuning).
const MAX_IMAGES: usize = 10;

/// The format a line is written in, judged by its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineFormat {
    Chat,
    Preference,
    Completion,
    /// An object with none of the formats' keys.
    Unknown,
}

/// What a line that is a JSON object contributes to the dataset's statistics.
#[derive(Debug)]
pub(crate) struct Example {
    pub(crate) format: LineFormat,
    pub(crate) tokens: u64,
    pub(crate) assistant_tokens: u64,
    pub(crate) messages: u64,
    /// Hash of the example as sent to OpenAI (without `metadata`), key order ignored.
    pub(crate) hash: u128,
    pub(crate) intent: Option<String>,
}

/// Checks one line (without its newline). Returns the example when the line is a JSON object.
pub(crate) fn check_line(
    bytes: &[u8],
    counter: &mut Counter,
    p: &mut LineProblems,
) -> Option<Example> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            p.push(
                "",
                Code::InvalidUtf8,
                format!(
                    "invalid UTF-8 at byte {} of the line; save the file as UTF-8",
                    e.valid_up_to() + 1
                ),
            );
            return None;
        }
    };
    if text.trim().is_empty() {
        p.push(
            "",
            Code::BlankLine,
            "blank line; JSONL needs exactly one JSON object per line: delete it",
        );
        return None;
    }
    let value = match json::parse(text) {
        Ok(parsed) => {
            for dup in &parsed.duplicates {
                p.push(
                    dup.path.as_str(),
                    Code::DuplicateKey,
                    format!(
                        "`{}` appears {} times in this object; JSON parsers keep only the last value ({}), so the others are silently lost",
                        truncate(&dup.key, 40),
                        dup.occurrences,
                        short_json(&dup.kept)
                    ),
                );
            }
            parsed.value
        }
        Err(ParseError::Syntax(e)) => {
            p.push("", Code::InvalidJson, line_json_error(&e, text));
            return None;
        }
        Err(e) => {
            let code = match e {
                ParseError::TooManyValues { .. } => Code::TooManyValues,
                _ => Code::NestingTooDeep,
            };
            p.push(
                "",
                code,
                format!(
                    "{}: the parser stops there, and no training example needs that much",
                    parse_error_message(&e)
                ),
            );
            return None;
        }
    };
    let Value::Object(obj) = value else {
        let hint = match &value {
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                ": a JSON array of examples is not JSONL, put each example on a line of its own"
            }
            _ => "",
        };
        p.push(
            "",
            Code::DataType,
            format!(
                "each line must be a JSON object, found {}{hint}",
                type_name(&value)
            ),
        );
        return None;
    };
    let mut w = Walker {
        p,
        counter,
        images: 0,
    };
    let intent = w.intent(&obj);
    let format = detect(&obj);
    let counts = match format {
        LineFormat::Chat => w.chat(&obj),
        LineFormat::Preference => w.preference(&obj),
        LineFormat::Completion => w.completion(&obj),
        LineFormat::Unknown => {
            w.p.push(
                "messages",
                Code::MissingMessagesList,
                "no `messages` list: a chat example needs {\"messages\": [...]} (or a preference example input/preferred_output/non_preferred_output)",
            );
            Counts::default()
        }
    };
    Some(Example {
        format,
        tokens: counts.tokens,
        assistant_tokens: counts.assistant_tokens,
        messages: counts.messages,
        hash: hash_example(&obj),
        intent,
    })
}

/// What stopped the parser, with the column.
fn parse_error_message(e: &ParseError) -> String {
    match e {
        ParseError::Syntax(e) => json_error_message(e),
        ParseError::TooDeep { column } => {
            format!("arrays and objects nest more than {MAX_DEPTH} levels deep at column {column}")
        }
        ParseError::TooManyValues { column } => format!(
            "more than {} JSON values at column {column}",
            thousands(MAX_VALUES)
        ),
    }
}

/// A line's JSON error, with a hint at the usual cause when one is recognisable.
fn line_json_error(e: &serde_json::Error, text: &str) -> String {
    let mut message = json_error_message(e);
    let json_message = message.as_str();
    let hint = if text.contains('\0') {
        "; the line holds NUL bytes: is the file UTF-16 or binary? Save it as UTF-8 text"
    } else if text.trim_end_matches(['\r', ' ', '\t']).contains('\r') {
        "; the line holds a carriage return: lines ending in CR alone (classic Mac) are not split, use LF or CRLF"
    } else if json_message.contains("hex escape") && has_high_surrogate_escape(text) {
        "; a \\uD800-\\uDBFF escape must be followed by a \\uDC00-\\uDFFF one: a lone surrogate is not a character and cannot be stored as UTF-8"
    } else if e.classify() == serde_json::error::Category::Eof {
        "; the line ends inside a JSON value: each example must be on one line (pretty-printed JSON is not JSONL), or the file was cut off"
    } else {
        ""
    };
    message.push_str(hint);
    message
}

/// Whether `text` holds a `\uD800`-`\uDBFF` escape (the first half of a surrogate pair).
fn has_high_surrogate_escape(text: &str) -> bool {
    text.as_bytes().windows(4).any(|w| {
        w[0] == b'\\'
            && w[1] == b'u'
            && w[2].eq_ignore_ascii_case(&b'd')
            && matches!(w[3].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
    })
}

/// serde_json's message without its "at line 1 column N" suffix, with the column up front.
fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let reason = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => &full,
    };
    format!("invalid JSON at column {}: {reason}", e.column())
}

fn detect(obj: &Map<String, Value>) -> LineFormat {
    const PREFERENCE: &[&str] = &[
        "input",
        "preferred_output",
        "non_preferred_output",
        "preferred_completion",
        "non_preferred_completion",
    ];
    if obj.contains_key("messages") {
        LineFormat::Chat
    } else if PREFERENCE.iter().any(|k| obj.contains_key(*k)) {
        LineFormat::Preference
    } else if obj.contains_key("prompt") || obj.contains_key("completion") {
        LineFormat::Completion
    } else {
        LineFormat::Unknown
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn hash_example(obj: &Map<String, Value>) -> u128 {
    let mut h = Xxh3::new();
    for (k, v) in obj {
        if k != "metadata" {
            h.update(k.as_bytes());
            h.update(&[0xff]);
            hash_value(v, &mut h);
        }
    }
    h.digest128()
}

fn hash_value(v: &Value, h: &mut Xxh3) {
    match v {
        Value::Null => h.update(b"n"),
        Value::Bool(b) => h.update(if *b { b"t" } else { b"f" }),
        Value::Number(n) => {
            h.update(b"#");
            h.update(n.to_string().as_bytes());
        }
        Value::String(s) => {
            h.update(b"s");
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        Value::Array(items) => {
            h.update(b"[");
            for item in items {
                hash_value(item, h);
            }
            h.update(b"]");
        }
        Value::Object(map) => {
            h.update(b"{");
            // serde_json's Map is ordered by key, so equal objects hash equally.
            for (k, item) in map {
                h.update(&(k.len() as u64).to_le_bytes());
                h.update(k.as_bytes());
                hash_value(item, h);
            }
            h.update(b"}");
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    tokens: u64,
    assistant_tokens: u64,
    messages: u64,
}

/// Which message schemas a message list may use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Roles {
    /// Supervised chat `messages` or a preference `input.messages`: system, user, assistant
    /// (with `weight`), tool and the legacy function role, as `FineTuneChatRequestInput` and
    /// `FineTunePreferenceRequestInput` list them. Not `developer`: neither lists it.
    Conversation,
    /// An item of a preference output: `ChatCompletionRequestAssistantMessage`, no `weight`.
    PreferenceOutput,
}

struct Walker<'a> {
    p: &'a mut LineProblems,
    counter: &'a mut Counter,
    /// Image parts seen in the example so far.
    images: usize,
}

impl Walker<'_> {
    /// Counts a string's tokens and flags it when it looks like a credential.
    fn text(&mut self, path: &str, s: &str) -> u64 {
        if let Some(kind) = secrets::find(s) {
            self.p.push(
                path,
                Code::PossibleSecret,
                format!("this text contains what looks like {kind}; a fine-tuned model can repeat it: remove or redact it"),
            );
        }
        self.counter.count(s)
    }

    fn intent(&mut self, obj: &Map<String, Value>) -> Option<String> {
        match obj.get("metadata")? {
            Value::Object(meta) => match meta.get("intent")? {
                Value::String(s) => Some(s.clone()),
                other => {
                    let found = type_name(other);
                    self.p.push(
                        "metadata.intent",
                        Code::InvalidMetadata,
                        format!("intent must be a string, found {found}"),
                    );
                    None
                }
            },
            other => {
                let found = type_name(other);
                self.p.push(
                    "metadata",
                    Code::InvalidMetadata,
                    format!("metadata must be an object such as {{\"intent\": \"fix_code\"}}, found {found}"),
                );
                None
            }
        }
    }

    fn unrecognized_top_keys(&mut self, obj: &Map<String, Value>, allowed: &[&str], format: &str) {
        for key in obj.keys().filter(|k| !allowed.contains(&k.as_str())) {
            let key = path_key(key);
            self.p.push(
                key.as_ref(),
                Code::UnrecognizedKey,
                format!(
                    "`{key}` is not a key of a {format} example (allowed: {})",
                    allowed.join(", ")
                ),
            );
        }
    }

    fn chat(&mut self, obj: &Map<String, Value>) -> Counts {
        self.unrecognized_top_keys(
            obj,
            &[
                "messages",
                "tools",
                "parallel_tool_calls",
                "functions",
                "metadata",
            ],
            "chat",
        );
        let mut counts = Counts::default();
        counts.tokens += self.tools_block(obj, "");
        if let Some(functions) = obj.get("functions") {
            counts.tokens += self.functions(functions);
        }
        let Some(messages) = self.message_list(obj.get("messages"), "messages") else {
            return counts;
        };
        let mut seen = RolesSeen::default();
        for (i, m) in messages.iter().enumerate() {
            let c = self.message(m, &format!("messages[{i}]"), Roles::Conversation, &mut seen);
            counts.tokens += c.tokens;
            counts.assistant_tokens += c.assistant_tokens;
        }
        counts.messages = messages.len() as u64;
        if self.images > MAX_IMAGES {
            self.p.push(
                "messages",
                Code::TooManyImages,
                format!(
                    "the example has {} images; OpenAI accepts at most {MAX_IMAGES} per example",
                    self.images
                ),
            );
        }
        counts.tokens += TOKENS_REPLY_PRIMING;
        if !seen.assistant {
            self.p.push(
                "messages",
                Code::ExampleMissingAssistantMessage,
                "no assistant message: the model learns only from assistant messages",
            );
        }
        seen.warn_missing(self.p, "messages");
        counts
    }

    /// `tools` and `parallel_tool_calls` of a chat example or a preference input.
    fn tools_block(&mut self, obj: &Map<String, Value>, prefix: &str) -> u64 {
        let mut tokens = 0;
        if let Some(flag) = obj.get("parallel_tool_calls") {
            if !flag.is_boolean() {
                self.p.push(
                    format!("{prefix}parallel_tool_calls"),
                    Code::InvalidTools,
                    format!(
                        "parallel_tool_calls must be true or false, found {}",
                        type_name(flag)
                    ),
                );
            }
        }
        if let Some(tools) = obj.get("tools") {
            let path = format!("{prefix}tools");
            let Value::Array(items) = tools else {
                self.p.push(
                    &path,
                    Code::InvalidTools,
                    format!("tools must be a list, found {}", type_name(tools)),
                );
                return 0;
            };
            for (i, tool) in items.iter().enumerate() {
                let tp = format!("{path}[{i}]");
                match tool.get("type").and_then(Value::as_str) {
                    Some("function") => {}
                    _ => self.p.push(
                        format!("{tp}.type"),
                        Code::InvalidTools,
                        "a tool's type must be \"function\"",
                    ),
                }
                match tool.get("function") {
                    Some(Value::Object(f)) => {
                        self.function_definition(f, &format!("{tp}.function"), Code::InvalidTools)
                    }
                    _ => self.p.push(
                        format!("{tp}.function"),
                        Code::InvalidTools,
                        "a tool needs a `function` object",
                    ),
                }
            }
            // How OpenAI counts tool definitions is unpublished; the JSON text is our estimate.
            tokens += self.counter.count(&tools.to_string());
        }
        tokens
    }

    fn function_definition(&mut self, f: &Map<String, Value>, path: &str, code: Code) {
        match f.get("name").and_then(Value::as_str) {
            Some(name) if valid_function_name(name) => {}
            Some(_) => self.p.push(
                format!("{path}.name"),
                code,
                "a function name must be 1-64 characters of a-z, A-Z, 0-9, _ or -",
            ),
            None => self.p.push(
                format!("{path}.name"),
                code,
                "a function needs a string `name`",
            ),
        }
        if let Some(d) = f.get("description") {
            if !d.is_string() {
                self.p.push(
                    format!("{path}.description"),
                    code,
                    "description must be a string",
                );
            }
        }
        if let Some(params) = f.get("parameters") {
            if !params.is_object() {
                self.p.push(
                    format!("{path}.parameters"),
                    code,
                    "parameters must be a JSON Schema object",
                );
            }
        }
    }

    fn functions(&mut self, functions: &Value) -> u64 {
        self.p.push(
            "functions",
            Code::DeprecatedFunctions,
            "`functions` is deprecated: use `tools`",
        );
        let Value::Array(items) = functions else {
            self.p.push(
                "functions",
                Code::InvalidFunctions,
                format!("functions must be a list, found {}", type_name(functions)),
            );
            return 0;
        };
        if items.is_empty() || items.len() > 128 {
            self.p.push(
                "functions",
                Code::InvalidFunctions,
                format!("functions must hold 1 to 128 items, found {}", items.len()),
            );
        }
        for (i, f) in items.iter().enumerate() {
            match f {
                Value::Object(f) => {
                    self.function_definition(f, &format!("functions[{i}]"), Code::InvalidFunctions)
                }
                other => self.p.push(
                    format!("functions[{i}]"),
                    Code::InvalidFunctions,
                    format!("a function must be an object, found {}", type_name(other)),
                ),
            }
        }
        self.counter.count(&functions.to_string())
    }

    fn message_list<'v>(&mut self, v: Option<&'v Value>, path: &str) -> Option<&'v Vec<Value>> {
        match v {
            Some(Value::Array(items)) if !items.is_empty() => Some(items),
            Some(Value::Array(_)) => {
                self.p.push(
                    path,
                    Code::MissingMessagesList,
                    "the messages list is empty",
                );
                None
            }
            Some(other) => {
                let found = type_name(other);
                self.p.push(
                    path,
                    Code::MissingMessagesList,
                    format!("messages must be a list of messages, found {found}"),
                );
                None
            }
            None => {
                self.p
                    .push(path, Code::MissingMessagesList, "`messages` is missing");
                None
            }
        }
    }

    fn message(&mut self, m: &Value, path: &str, roles: Roles, seen: &mut RolesSeen) -> Counts {
        let mut counts = Counts {
            tokens: TOKENS_PER_MESSAGE,
            ..Counts::default()
        };
        let Value::Object(m) = m else {
            self.p.push(
                path,
                Code::DataType,
                format!("a message must be an object, found {}", type_name(m)),
            );
            return counts;
        };
        let known = self.role(m, path, roles, &mut counts);
        seen.note(known);

        if let Some(role) = known {
            self.keys(m, path, role, roles);
        }

        if let Some(name) = m.get("name") {
            match name {
                Value::String(s) => counts.tokens += self.counter.count(s) + TOKENS_PER_NAME,
                other => {
                    let found = type_name(other);
                    self.p.push(
                        format!("{path}.name"),
                        Code::MessageUnrecognizedKey,
                        format!("name must be a string, found {found}"),
                    );
                }
            }
        }

        let trained = self.weight(m, path, known, roles);

        let has_calls = known == Some("assistant")
            && (m.contains_key("tool_calls") || m.contains_key("function_call"));
        let call_tokens = self.calls(m, path, known);
        counts.tokens += call_tokens;
        counts.tokens += self.answers(m, path, known);

        let content_tokens = self.content(m.get("content"), path, known, has_calls);
        counts.tokens += content_tokens;
        if let Some(Value::String(r)) = m.get("refusal") {
            counts.tokens += self.text(&format!("{path}.refusal"), r);
        }
        if known == Some("assistant") && trained {
            counts.assistant_tokens += content_tokens + call_tokens;
        }
        counts
    }

    /// The message's role, counted, when it is one `roles` allows (problems for the rest).
    fn role<'m>(
        &mut self,
        m: &'m Map<String, Value>,
        path: &str,
        roles: Roles,
        counts: &mut Counts,
    ) -> Option<&'m str> {
        let role = match m.get("role") {
            Some(Value::String(r)) => {
                counts.tokens += self.counter.count(r);
                Some(r.as_str())
            }
            Some(other) => {
                let found = type_name(other);
                self.p.push(
                    format!("{path}.role"),
                    Code::UnrecognizedRole,
                    format!("role must be a string, found {found}"),
                );
                None
            }
            None => {
                self.p.push(
                    format!("{path}.role"),
                    Code::MessageMissingKey,
                    "the message has no `role`",
                );
                None
            }
        };
        match (role, roles) {
            (Some("system" | "user" | "assistant" | "tool"), Roles::Conversation) => role,
            (Some("assistant"), Roles::PreferenceOutput) => role,
            (Some("function"), Roles::Conversation) => {
                self.p.push(
                    format!("{path}.role"),
                    Code::DeprecatedFunctions,
                    "the `function` role is deprecated: use `tool`",
                );
                role
            }
            (Some("developer"), Roles::Conversation) => {
                self.p.push(
                    format!("{path}.role"),
                    Code::UnrecognizedRole,
                    "the developer role is not in OpenAI's training-file formats (they list system, user, assistant, tool and function): use system",
                );
                None
            }
            (Some(other), Roles::Conversation) => {
                self.p.push(
                    format!("{path}.role"),
                    Code::UnrecognizedRole,
                    format!(
                        "unrecognized role \"{}\": use system, user, assistant, tool or function",
                        truncate(other, 40)
                    ),
                );
                None
            }
            (Some(_), Roles::PreferenceOutput) => {
                self.p.push(
                    format!("{path}.role"),
                    Code::InvalidPreference,
                    "a preference output's role must be \"assistant\"",
                );
                None
            }
            (None, _) => None,
        }
    }

    /// Keys a `role` message may not carry.
    fn keys(&mut self, m: &Map<String, Value>, path: &str, role: &str, roles: Roles) {
        let allowed: &[&str] = match role {
            "assistant" if roles == Roles::PreferenceOutput => &[
                "role",
                "content",
                "name",
                "tool_calls",
                "function_call",
                "refusal",
            ],
            "assistant" => &[
                "role",
                "content",
                "name",
                "weight",
                "tool_calls",
                "function_call",
                "refusal",
            ],
            "tool" => &["role", "content", "tool_call_id"],
            _ => &["role", "content", "name"],
        };
        for key in m.keys().filter(|k| !allowed.contains(&k.as_str())) {
            if key == "weight" && roles == Roles::PreferenceOutput {
                self.p.push(
                    format!("{path}.weight"),
                    Code::InvalidWeight,
                    "weight is not allowed in a preference output: both outputs are always trained on",
                );
            } else if key == "weight" {
                self.p.push(
                    format!("{path}.weight"),
                    Code::InvalidWeight,
                    format!("weight is only allowed on assistant messages, not {role}"),
                );
            } else {
                let key = path_key(key);
                self.p.push(
                    format!("{path}.{key}"),
                    Code::MessageUnrecognizedKey,
                    format!(
                        "`{key}` is not allowed in a {role} message (allowed: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    /// Whether an assistant message is trained on (its `weight`, checked).
    fn weight(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        known: Option<&str>,
        roles: Roles,
    ) -> bool {
        // The spec's `weight` is an integer 0 or 1; as in JSON Schema, an integer-valued number
        // (`1.0`) is that integer, and a string (`"1"`) is not.
        match m.get("weight") {
            None => true,
            Some(w) if known == Some("assistant") && roles == Roles::Conversation => {
                match w.as_f64() {
                    Some(0.0) => false,
                    Some(1.0) => true,
                    _ => {
                        self.p.push(
                            format!("{path}.weight"),
                            Code::InvalidWeight,
                            format!("weight must be the number 0 or 1, found {}", short_json(w)),
                        );
                        true
                    }
                }
            }
            Some(_) => true,
        }
    }

    /// The tokens of an assistant message's tool and function calls, checked.
    fn calls(&mut self, m: &Map<String, Value>, path: &str, known: Option<&str>) -> u64 {
        // A trained assistant message teaches its tool calls as much as its text.
        let mut call_tokens = 0;
        if let Some(calls) = m.get("tool_calls").filter(|_| known == Some("assistant")) {
            call_tokens += self.tool_calls(calls, &format!("{path}.tool_calls"));
        }
        if let Some(call) = m
            .get("function_call")
            .filter(|_| known == Some("assistant"))
        {
            self.p.push(
                format!("{path}.function_call"),
                Code::DeprecatedFunctions,
                "`function_call` is deprecated: use `tool_calls`",
            );
            call_tokens += self.function_call(
                call,
                &format!("{path}.function_call"),
                Code::InvalidToolCall,
            );
        }
        call_tokens
    }

    /// What a tool or function message must name of the call it answers; the tokens of the
    /// tool call id.
    fn answers(&mut self, m: &Map<String, Value>, path: &str, known: Option<&str>) -> u64 {
        let mut tokens = 0;
        if known == Some("tool") {
            match m.get("tool_call_id") {
                Some(Value::String(id)) if !id.is_empty() => tokens += self.counter.count(id),
                Some(_) => self.p.push(
                    format!("{path}.tool_call_id"),
                    Code::MessageMissingKey,
                    "tool_call_id must be a non-empty string",
                ),
                None => self.p.push(
                    format!("{path}.tool_call_id"),
                    Code::MessageMissingKey,
                    "a tool message needs the `tool_call_id` it answers",
                ),
            }
        }
        if known == Some("function") && !matches!(m.get("name"), Some(Value::String(_))) {
            self.p.push(
                format!("{path}.name"),
                Code::MessageMissingKey,
                "a function message needs the `name` of the function",
            );
        }
        tokens
    }

    /// Checks `content` and returns its tokens.
    fn content(
        &mut self,
        content: Option<&Value>,
        path: &str,
        role: Option<&str>,
        has_calls: bool,
    ) -> u64 {
        let cpath = format!("{path}.content");
        match content {
            None if has_calls => 0,
            None => {
                if role.is_some() {
                    self.p.push(
                        &cpath,
                        Code::MessageMissingKey,
                        "the message has no `content`",
                    );
                }
                0
            }
            Some(Value::Null) if has_calls => 0,
            Some(Value::String(s)) if s.is_empty() && !has_calls => {
                self.p
                    .push(&cpath, Code::MissingContent, "content is empty");
                0
            }
            Some(Value::String(s)) => self.text(&cpath, s),
            Some(Value::Array(parts)) if parts.is_empty() => {
                self.p.push(
                    &cpath,
                    Code::MissingContent,
                    "content is an empty list of parts",
                );
                0
            }
            Some(Value::Array(parts)) => {
                let mut tokens = 0;
                for (i, part) in parts.iter().enumerate() {
                    tokens += self.content_part(part, &format!("{cpath}[{i}]"), role);
                }
                tokens
            }
            Some(other) => {
                let found = type_name(other);
                self.p.push(
                    &cpath,
                    Code::MissingContent,
                    format!("content must be a string or a list of parts, found {found}"),
                );
                0
            }
        }
    }

    fn content_part(&mut self, part: &Value, path: &str, role: Option<&str>) -> u64 {
        let Value::Object(part) = part else {
            self.p.push(
                path,
                Code::InvalidContentPart,
                format!(
                    "a content part must be an object, found {}",
                    type_name(part)
                ),
            );
            return 0;
        };
        match part.get("type").and_then(Value::as_str) {
            Some("text") => match part.get("text") {
                Some(Value::String(t)) => self.text(&format!("{path}.text"), t),
                _ => {
                    self.p.push(
                        format!("{path}.text"),
                        Code::InvalidContentPart,
                        "a text part needs a string `text`",
                    );
                    0
                }
            },
            Some("refusal") if role == Some("assistant") => match part.get("refusal") {
                Some(Value::String(t)) => self.text(&format!("{path}.refusal"), t),
                _ => {
                    self.p.push(
                        format!("{path}.refusal"),
                        Code::InvalidContentPart,
                        "a refusal part needs a string `refusal`",
                    );
                    0
                }
            },
            Some("image_url") if role == Some("user") => {
                let url = part
                    .get("image_url")
                    .and_then(|i| i.get("url"))
                    .and_then(Value::as_str);
                // OpenAI's guide: an https URL or a base64 data URL of a JPEG, PNG or WEBP.
                const DATA: [&str; 3] = ["data:image/jpeg;", "data:image/png;", "data:image/webp;"];
                match url {
                    Some(u)
                        if u.starts_with("https://") || DATA.iter().any(|d| u.starts_with(d)) => {}
                    Some(u) if u.starts_with("http://") => self.p.push(
                        format!("{path}.image_url.url"),
                        Code::InvalidContentPart,
                        "an image URL must be https:// (OpenAI's fine-tuning guide), not http://",
                    ),
                    Some(_) => self.p.push(
                        format!("{path}.image_url.url"),
                        Code::InvalidContentPart,
                        "an image URL must be https:// or a data:image/jpeg, png or webp URL",
                    ),
                    None => self.p.push(
                        format!("{path}.image_url.url"),
                        Code::InvalidContentPart,
                        "an image part needs {\"image_url\": {\"url\": ...}}",
                    ),
                }
                if let Some(detail) = part.get("image_url").and_then(|i| i.get("detail")) {
                    if !matches!(detail.as_str(), Some("low" | "high" | "auto")) {
                        self.p.push(
                            format!("{path}.image_url.detail"),
                            Code::InvalidContentPart,
                            "detail must be low, high or auto",
                        );
                    }
                }
                self.images += 1;
                TOKENS_PER_IMAGE
            }
            Some("image_url") => {
                let role = role.unwrap_or("this");
                self.p.push(
                    format!("{path}.type"),
                    Code::InvalidContentPart,
                    format!("images are only allowed in user messages, not in {role} messages"),
                );
                0
            }
            Some(other) => {
                self.p.push(
                    format!("{path}.type"),
                    Code::InvalidContentPart,
                    format!("unknown content part type \"{}\"", truncate(other, 40)),
                );
                0
            }
            None => {
                self.p.push(
                    format!("{path}.type"),
                    Code::InvalidContentPart,
                    "a content part needs a string `type`",
                );
                0
            }
        }
    }

    fn tool_calls(&mut self, calls: &Value, path: &str) -> u64 {
        let Value::Array(items) = calls else {
            self.p.push(
                path,
                Code::InvalidToolCall,
                format!("tool_calls must be a list, found {}", type_name(calls)),
            );
            return 0;
        };
        if items.is_empty() {
            self.p
                .push(path, Code::InvalidToolCall, "tool_calls is an empty list");
        }
        let mut tokens = 0;
        for (i, call) in items.iter().enumerate() {
            let cp = format!("{path}[{i}]");
            let Value::Object(call) = call else {
                self.p.push(
                    &cp,
                    Code::InvalidToolCall,
                    format!("a tool call must be an object, found {}", type_name(call)),
                );
                continue;
            };
            match call.get("id") {
                Some(Value::String(id)) if !id.is_empty() => tokens += self.counter.count(id),
                _ => self.p.push(
                    format!("{cp}.id"),
                    Code::InvalidToolCall,
                    "a tool call needs a non-empty string `id`",
                ),
            }
            if call.get("type").and_then(Value::as_str) != Some("function") {
                self.p.push(
                    format!("{cp}.type"),
                    Code::InvalidToolCall,
                    "a tool call's type must be \"function\"",
                );
            }
            match call.get("function") {
                Some(f) => {
                    tokens +=
                        self.function_call(f, &format!("{cp}.function"), Code::InvalidToolCall)
                }
                None => self.p.push(
                    format!("{cp}.function"),
                    Code::InvalidToolCall,
                    "a tool call needs a `function` object",
                ),
            }
        }
        tokens
    }

    /// A called function: `{name, arguments}` where arguments is a JSON string.
    fn function_call(&mut self, f: &Value, path: &str, code: Code) -> u64 {
        let Value::Object(f) = f else {
            self.p.push(
                path,
                code,
                format!("the function must be an object, found {}", type_name(f)),
            );
            return 0;
        };
        let mut tokens = 0;
        match f.get("name") {
            Some(Value::String(n)) if !n.is_empty() => tokens += self.counter.count(n),
            _ => self.p.push(
                format!("{path}.name"),
                code,
                "the called function needs a non-empty string `name`",
            ),
        }
        match f.get("arguments") {
            Some(Value::String(args)) => {
                if let Err(e) = json::parse(args) {
                    self.p.push(
                        format!("{path}.arguments"),
                        code,
                        format!(
                            "arguments must be a string holding JSON; it does not parse: {}",
                            parse_error_message(&e)
                        ),
                    );
                }
                tokens += self.text(&format!("{path}.arguments"), args);
            }
            Some(other) => self.p.push(
                format!("{path}.arguments"),
                code,
                format!("arguments must be a JSON-encoded string, found {} (encode it with JSON.stringify)", type_name(other)),
            ),
            None => self.p.push(format!("{path}.arguments"), code, "the called function needs `arguments` (a JSON string)"),
        }
        tokens
    }

    fn preference(&mut self, obj: &Map<String, Value>) -> Counts {
        self.unrecognized_top_keys(
            obj,
            &[
                "input",
                "preferred_output",
                "non_preferred_output",
                "preferred_completion",
                "non_preferred_completion",
                "metadata",
            ],
            "preference",
        );
        let mut counts = Counts::default();
        match obj.get("input") {
            Some(Value::Object(input)) => {
                for key in input
                    .keys()
                    .filter(|k| !["messages", "tools", "parallel_tool_calls"].contains(&k.as_str()))
                {
                    // An error, unlike an extra key at the top of a line: `input` is a schema
                    // object whose keys OpenAI defines, like a message's.
                    let key = path_key(key);
                    self.p.push(
                        format!("input.{key}"),
                        Code::InvalidPreference,
                        format!("`{key}` is not a key of a preference input (allowed: messages, tools, parallel_tool_calls)"),
                    );
                }
                counts.tokens += self.tools_block(input, "input.");
                if let Some(messages) = self.message_list(input.get("messages"), "input.messages") {
                    let mut seen = RolesSeen::default();
                    for (i, m) in messages.iter().enumerate() {
                        counts.tokens += self
                            .message(
                                m,
                                &format!("input.messages[{i}]"),
                                Roles::Conversation,
                                &mut seen,
                            )
                            .tokens;
                    }
                    counts.messages += messages.len() as u64;
                    seen.warn_missing(self.p, "input.messages");
                    if self.images > 0 {
                        self.p.push(
                            "input.messages",
                            Code::InvalidPreference,
                            "DPO training is text-only (OpenAI's guide): remove the images",
                        );
                    }
                }
            }
            Some(other) => {
                let found = type_name(other);
                self.p.push(
                    "input",
                    Code::InvalidPreference,
                    format!("input must be an object with `messages`, found {found}"),
                );
            }
            None => self.p.push(
                "input",
                Code::InvalidPreference,
                "a preference example needs `input` ({\"messages\": [...]})",
            ),
        }
        for (key, legacy) in [
            ("preferred_output", "preferred_completion"),
            ("non_preferred_output", "non_preferred_completion"),
        ] {
            let value = match (obj.get(key), obj.get(legacy)) {
                (Some(v), _) => Some((key, v)),
                (None, Some(v)) => {
                    self.p.push(
                        legacy,
                        Code::LegacyFieldName,
                        format!("`{legacy}` is an older name: OpenAI documents `{key}`"),
                    );
                    Some((legacy, v))
                }
                (None, None) => None,
            };
            let Some((name, v)) = value else {
                self.p.push(
                    key,
                    Code::InvalidPreference,
                    format!(
                        "a preference example needs `{key}`: a list with one assistant message"
                    ),
                );
                continue;
            };
            let c = self.preference_output(v, name);
            counts.tokens += c.tokens;
            counts.messages += c.messages;
            if key == "preferred_output" {
                counts.assistant_tokens += c.assistant_tokens;
            }
        }
        counts.tokens += TOKENS_REPLY_PRIMING;
        counts
    }

    fn preference_output(&mut self, v: &Value, path: &str) -> Counts {
        let mut counts = Counts::default();
        let Value::Array(items) = v else {
            self.p.push(
                path,
                Code::InvalidPreference,
                format!(
                    "{path} must be a list with one assistant message, found {}",
                    type_name(v)
                ),
            );
            return counts;
        };
        if items.len() != 1 {
            self.p.push(
                path,
                Code::InvalidPreference,
                format!(
                    "{path} must hold exactly 1 assistant message, found {}",
                    items.len()
                ),
            );
        }
        let mut seen = RolesSeen::default();
        for (i, m) in items.iter().enumerate() {
            let c = self.message(
                m,
                &format!("{path}[{i}]"),
                Roles::PreferenceOutput,
                &mut seen,
            );
            counts.messages += 1;
            counts.tokens += c.tokens;
            counts.assistant_tokens += c.assistant_tokens;
        }
        counts
    }

    fn completion(&mut self, obj: &Map<String, Value>) -> Counts {
        self.p.push(
            "",
            Code::UnsupportedFormat,
            "prompt/completion lines are the legacy format for babbage-002/davinci-002; chat models need {\"messages\": [...]}",
        );
        let mut counts = Counts::default();
        for key in ["prompt", "completion"] {
            if let Some(Value::String(s)) = obj.get(key) {
                counts.tokens += self.text(key, s);
            }
        }
        counts
    }
}

#[derive(Default)]
struct RolesSeen {
    system: bool,
    user: bool,
    assistant: bool,
}

impl RolesSeen {
    fn note(&mut self, role: Option<&str>) {
        match role {
            Some("system") => self.system = true,
            Some("user") => self.user = true,
            Some("assistant") => self.assistant = true,
            _ => {}
        }
    }

    fn warn_missing(&self, p: &mut LineProblems, path: &str) {
        if !self.system {
            p.push(path, Code::MissingSystemMessage, "no system message: the model sees your instructions only if every example carries them");
        }
        if !self.user {
            p.push(path, Code::MissingUserMessage, "no user message");
        }
    }
}

fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// At most `max` characters of `s`, for quoting user values in messages.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}

fn short_json(v: &Value) -> String {
    truncate(&v.to_string(), 40)
}
