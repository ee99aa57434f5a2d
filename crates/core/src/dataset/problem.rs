//! Problems found in a dataset: a stable code, a severity, where, and why.

use serde::Serialize;

/// Whether a problem blocks training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Training would be refused (unless the caller accepts it, where allowed).
    Error,
    /// Worth a look; never blocks training.
    Warning,
}

/// Which file of a validation request a problem belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The training file.
    Training,
    /// The validation file.
    Validation,
}

macro_rules! codes {
    ($($variant:ident => $name:literal, $severity:ident, $doc:literal;)*) => {
        /// Every problem code, with its stable name and severity.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code {
            $(#[doc = $doc] $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The stable lower_snake_case name used in reports and the API.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// Whether problems with this code block training.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }

            /// The code named by its stable name.
            pub(crate) fn from_name(name: &str) -> Option<Code> {
                match name { $($name => Some(Code::$variant),)* _ => None }
            }

            /// One line on what the code means, for documentation.
            pub fn description(self) -> &'static str {
                match self { $(Code::$variant => $doc,)* }
            }
        }
    };
}

codes! {
    InvalidUtf8 => "invalid_utf8", Error, "The line is not valid UTF-8.";
    Utf8Bom => "utf8_bom", Error, "The file (or a later line: files joined with `cat`?) starts with a byte-order mark, which is not JSON.";
    BlankLine => "blank_line", Error, "An empty or whitespace-only line between examples.";
    InvalidJson => "invalid_json", Error, "The line is not valid JSON (the column is given).";
    NestingTooDeep => "nesting_too_deep", Error, "Arrays and objects nest more than 127 levels deep: the parser's limit.";
    TooManyValues => "too_many_values", Error, "The line holds more than 1,000,000 JSON values: the parser's limit, which bounds memory.";
    DataType => "data_type", Error, "The line, or a message, is not a JSON object.";
    MissingMessagesList => "missing_messages_list", Error, "`messages` is missing, empty or not a list.";
    MessageMissingKey => "message_missing_key", Error, "A message lacks a required key (`role`, `content`, `tool_call_id`, `name`).";
    MessageUnrecognizedKey => "message_unrecognized_key", Error, "A message has a key its role does not allow.";
    UnrecognizedRole => "unrecognized_role", Error, "The role is not system, user, assistant, tool or function (`developer` is not in the training formats).";
    MissingContent => "missing_content", Error, "The content is empty, null or of the wrong type.";
    InvalidContentPart => "invalid_content_part", Error, "A content part is malformed or not allowed for the role, or an image URL is not https:// or a JPEG, PNG or WEBP data URL.";
    TooManyImages => "too_many_images", Error, "An example holds more than 10 images, the most OpenAI accepts.";
    ExampleMissingAssistantMessage => "example_missing_assistant_message", Error, "The example has no assistant message to learn from.";
    InvalidWeight => "invalid_weight", Error, "`weight` is not 0 or 1, or is on a message that is not the assistant's.";
    InvalidToolCall => "invalid_tool_call", Error, "An assistant tool call is malformed, or its arguments are not a JSON string.";
    InvalidTools => "invalid_tools", Error, "The example's `tools` or `parallel_tool_calls` are malformed.";
    InvalidFunctions => "invalid_functions", Error, "The legacy `functions` list is malformed.";
    InvalidPreference => "invalid_preference", Error, "A preference (DPO) example is malformed.";
    MixedFormat => "mixed_format", Error, "The line's format differs from the dataset's (chat vs preference).";
    UnsupportedFormat => "unsupported_format", Error, "Legacy prompt/completion lines cannot train chat models.";
    PossibleSecret => "possible_secret", Error, "A string looks like an API key or private key; a trained model can repeat it.";
    TooFewExamples => "too_few_examples", Error, "Fewer than 10 training examples: OpenAI rejects the job.";
    InvalidMetadata => "invalid_metadata", Warning, "The example's `metadata` is not an object or its `intent` is not a string.";
    DuplicateKey => "duplicate_key", Warning, "A key repeats within one object; parsers keep only the last value.";
    UnrecognizedKey => "unrecognized_key", Warning, "A top-level key the format does not define.";
    DeprecatedFunctions => "deprecated_functions", Warning, "Legacy `functions`/`function_call`/`function` role: prefer tools.";
    LegacyFieldName => "legacy_field_name", Warning, "`preferred_completion`-style names: OpenAI documents `*_output`.";
    FewExamples => "few_examples", Warning, "Fewer than 50 training examples; 50-100+ are advised.";
    ExampleTooLong => "example_too_long", Warning, "The example exceeds the model's training context and will be truncated.";
    MissingSystemMessage => "missing_system_message", Warning, "The example has no system message.";
    MissingUserMessage => "missing_user_message", Warning, "The example has no user message.";
    DuplicateExample => "duplicate_example", Warning, "The example repeats an earlier one exactly.";
    ValidationOverlap => "validation_overlap", Warning, "A validation example also appears in the training data.";
    IntentBelowMinimum => "intent_below_minimum", Warning, "An intent has fewer examples than the configured minimum.";
    UnknownModel => "unknown_model", Warning, "The model is not in the catalog; defaults were assumed.";
}

impl Code {
    /// Whether a caller may accept problems with this code, so that they stop blocking
    /// training. Only the service's own judgement qualifies: a string that looks like a
    /// key may be a published sample. Every other error is a rule OpenAI enforces, and an
    /// accepted one would only fail the job upstream.
    pub(crate) fn acceptable(self) -> bool {
        matches!(self, Code::PossibleSecret)
    }
}

/// A problem the caller has reviewed and accepts: `code` at `line` of the `dataset` file.
/// Written `CODE:LINE` (the training file) or `CODE:training:LINE` / `CODE:validation:LINE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Acceptance {
    /// Which file the line is in.
    pub dataset: Role,
    /// 1-based.
    pub line: u32,
    /// The problem accepted there.
    pub code: Code,
}

impl Acceptance {
    /// An acceptance, refused when the code may not be accepted or the line is 0.
    pub fn new(dataset: Role, line: u32, code: &str) -> Result<Acceptance, String> {
        if line == 0 {
            return Err("the line must be 1 or more".to_owned());
        }
        let code =
            Code::from_name(code).ok_or_else(|| format!("unknown problem code \"{code}\""))?;
        if !code.acceptable() {
            return Err(format!(
                "{} cannot be accepted: only {} can (every other error is a rule OpenAI enforces)",
                code.as_str(),
                acceptable_names()
            ));
        }
        Ok(Acceptance {
            dataset,
            line,
            code,
        })
    }

    /// Whether this acceptance is for the problem `code` at `line` of `dataset`.
    pub(crate) fn covers(&self, dataset: Role, line: u64, code: Code) -> bool {
        self.dataset == dataset && u64::from(self.line) == line && self.code == code
    }
}

/// The codes that may be accepted, comma-separated, for messages.
fn acceptable_names() -> String {
    Code::ALL
        .iter()
        .filter(|c| c.acceptable())
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = match self.dataset {
            Role::Training => "training",
            Role::Validation => "validation",
        };
        write!(f, "{}:{file}:{}", self.code.as_str(), self.line)
    }
}

impl std::str::FromStr for Acceptance {
    type Err = String;

    fn from_str(s: &str) -> Result<Acceptance, String> {
        let usage = || {
            format!(
                "\"{s}\": expected CODE:LINE or CODE:training|validation:LINE, for example possible_secret:12"
            )
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (code, dataset, line) = match parts.as_slice() {
            [code, line] => (*code, Role::Training, *line),
            [code, "training", line] => (*code, Role::Training, *line),
            [code, "validation", line] => (*code, Role::Validation, *line),
            _ => return Err(usage()),
        };
        let line = line.parse::<u32>().map_err(|_| usage())?;
        Acceptance::new(dataset, line, code).map_err(|e| format!("\"{s}\": {e}"))
    }
}

impl Serialize for Acceptance {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Acceptance {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Acceptance, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One finding about a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// Which file it is in.
    pub dataset: Role,
    /// 1-based line number; 0 for a finding about the whole dataset.
    pub line: u32,
    /// JSON path inside the line, e.g. `messages[2].role`; empty for the whole line.
    pub path: String,
    /// The stable problem code (its snake_case name on the wire).
    #[serde(serialize_with = "code_name")]
    pub code: Code,
    /// Whether it blocks training.
    pub severity: Severity,
    /// What is wrong and how to fix it, in words.
    pub message: String,
    /// The caller accepted it ([`Acceptance`]): listed, but not counted as an error.
    pub accepted: bool,
}

fn code_name<S: serde::Serializer>(code: &Code, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(code.as_str())
}

/// Problems found in one line, before the file and line are known. Keeps at
/// most `cap` of them (a single huge line can hold millions) and counts the rest.
#[derive(Debug)]
pub(crate) struct LineProblems {
    pub(crate) items: Vec<(String, Code, String)>,
    /// Problems found beyond the cap, by code.
    pub(crate) dropped: Vec<Code>,
    cap: usize,
}

impl LineProblems {
    pub(crate) fn new(cap: usize) -> LineProblems {
        LineProblems {
            items: Vec::new(),
            dropped: Vec::new(),
            cap,
        }
    }

    pub(crate) fn push(&mut self, path: impl Into<String>, code: Code, message: impl Into<String>) {
        if self.items.len() < self.cap {
            self.items.push((path.into(), code, message.into()));
        } else {
            self.dropped.push(code);
        }
    }
}
