//! Parses one JSONL line into a `serde_json::Value`, noting what serde_json's own
//! `Value` parser drops silently: keys repeated within an object (it keeps the last).
//! Parser limits (nesting depth, number of values) come back as their own error kinds so
//! the report can say which limit a line hit instead of calling valid JSON invalid.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// The deepest nesting of arrays and objects serde_json accepts (its recursion limit of 128
/// stops at the 128th level), which keeps the parser's stack bounded.
pub(crate) const MAX_DEPTH: usize = 127;

/// Values (strings, numbers, arrays, objects, ...) one line may hold. A parsed value takes
/// 32 bytes and an object hundreds, so `[{},{},...]` would otherwise cost up to 100 times the
/// line's size in memory; a real example, even one with images inlined as data URLs or
/// thousands of messages, holds far fewer.
pub(crate) const MAX_VALUES: u64 = 1_000_000;

/// A key that occurs more than once in one object.
#[derive(Debug)]
pub(crate) struct DuplicateKey {
    /// JSON path of the key, e.g. `messages[1].content`.
    pub(crate) path: String,
    pub(crate) key: String,
    pub(crate) occurrences: u32,
    /// The value kept (the last one), for the message.
    pub(crate) kept: Value,
}

#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) value: Value,
    pub(crate) duplicates: Vec<DuplicateKey>,
}

#[derive(Debug)]
pub(crate) enum ParseError {
    /// Not JSON (or JSON that cannot be represented, such as a lone surrogate).
    Syntax(serde_json::Error),
    /// Nested deeper than [`MAX_DEPTH`]; the column where the limit was reached.
    TooDeep { column: usize },
    /// More than [`MAX_VALUES`] values; the column where the limit was reached.
    TooManyValues { column: usize },
}

/// Message of the error raised when a line holds more than [`MAX_VALUES`] values.
const TOO_MANY_VALUES: &str = "too many values in one line";

pub(crate) fn parse(text: &str) -> Result<Parsed, ParseError> {
    let duplicates = RefCell::new(Vec::new());
    let values = Cell::new(0u64);
    let mut de = serde_json::Deserializer::from_str(text);
    let seed = ValueSeed {
        path: &Path::Root,
        duplicates: &duplicates,
        values: &values,
    };
    let value = seed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(classify)?;
    Ok(Parsed {
        value,
        duplicates: duplicates.into_inner(),
    })
}

fn classify(e: serde_json::Error) -> ParseError {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        ParseError::TooDeep { column: e.column() }
    } else if text.starts_with(TOO_MANY_VALUES) {
        ParseError::TooManyValues { column: e.column() }
    } else {
        ParseError::Syntax(e)
    }
}

/// Where a value sits, as a chain of parents kept on the stack: a path string is only
/// built for the rare duplicate.
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self) -> String {
        let mut segments = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Key(parent, key) => {
                    segments.push(Segment::Key(key));
                    at = parent;
                }
                Path::Index(parent, i) => {
                    segments.push(Segment::Index(*i));
                    at = parent;
                }
            }
        }
        let mut out = String::new();
        for segment in segments.iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(&path_key(key));
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    path: &'a Path<'a>,
    duplicates: &'a RefCell<Vec<DuplicateKey>>,
    values: &'a Cell<u64>,
}

impl ValueSeed<'_> {
    fn count<E: de::Error>(&self) -> Result<(), E> {
        let n = self.values.get() + 1;
        self.values.set(n);
        if n > MAX_VALUES {
            return Err(E::custom(TOO_MANY_VALUES));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.count()?;
        // serde_json's parser never yields a non-finite number; its Value maps one to null.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.count()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.count()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut items = Vec::new();
        loop {
            let path = Path::Index(self.path, items.len());
            let seed = ValueSeed {
                path: &path,
                ..self
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => break,
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        self.count()?;
        let mut map = Map::new();
        // (key, occurrences) of the keys seen more than once, in order of first repeat.
        let mut repeated: Vec<(String, u32)> = Vec::new();
        while let Some(key) = access.next_key::<String>()? {
            let value = {
                let path = Path::Key(self.path, &key);
                access.next_value_seed(ValueSeed {
                    path: &path,
                    ..self
                })?
            };
            match map.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(mut slot) => {
                    // serde_json and Python's json keep the last value; so do we.
                    match repeated.iter_mut().find(|(k, _)| k == slot.key()) {
                        Some((_, n)) => *n += 1,
                        None => repeated.push((slot.key().clone(), 2)),
                    }
                    slot.insert(value);
                }
            }
        }
        if !repeated.is_empty() {
            let mut out = self.duplicates.borrow_mut();
            for (key, occurrences) in repeated {
                let kept = map.get(&key).cloned().unwrap_or(Value::Null);
                out.push(DuplicateKey {
                    path: Path::Key(self.path, &key).render(),
                    key,
                    occurrences,
                    kept,
                });
            }
        }
        Ok(Value::Object(map))
    }
}

/// A key as it appears in a problem's JSON path: long keys are shortened.
pub(crate) fn path_key(key: &str) -> std::borrow::Cow<'_, str> {
    match key.char_indices().nth(PATH_KEY_CHARS) {
        Some((i, _)) => format!("{}...", &key[..i]).into(),
        None => key.into(),
    }
}

/// Longest key quoted in a path or a message.
const PATH_KEY_CHARS: usize = 64;

#[cfg(test)]
mod tests {
    use super::{MAX_DEPTH, ParseError, parse};

    #[test]
    fn values_match_serde_json() {
        for text in [
            r#"{"a":[1,-2,3.5,1e300,true,null,"x\u00e9\ud83d\ude00"],"b":{"c":{}}}"#,
            "[]",
            "\"s\"",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678901234567890",
        ] {
            let ours = parse(text).unwrap().value;
            let theirs: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn duplicates_are_found_with_their_path_and_the_last_value_is_kept() {
        let p = parse(r#"{"m":[{"r":1},{"r":2,"c":"a","r":3,"r":4,"c":"b"}],"m2":0}"#).unwrap();
        assert_eq!(p.value["m"][1]["r"], 4);
        let found: Vec<(&str, u32)> = p
            .duplicates
            .iter()
            .map(|d| (d.path.as_str(), d.occurrences))
            .collect();
        assert_eq!(found, [("m[1].r", 3), ("m[1].c", 2)]);
    }

    #[test]
    fn limits_are_their_own_errors() {
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(
            matches!(parse(&deep), Err(ParseError::TooDeep { column }) if column == MAX_DEPTH + 1)
        );
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse(&ok).is_ok());
        assert!(matches!(parse("{\"a\":"), Err(ParseError::Syntax(_))));
        assert!(matches!(parse("1 2"), Err(ParseError::Syntax(_))));
    }
}
