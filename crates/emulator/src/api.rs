//! Pieces every endpoint shares: OpenAI's error envelope, ids, JSON bodies and pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// An error answered as `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<&'static str>,
    /// Adds the top-level `detail` the Files API sends with its 404s.
    pub(crate) detail: bool,
    /// Extra headers (e.g. `retry-after`).
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            detail: false,
            headers: Vec::new(),
        }
    }

    /// A 400 `invalid_request_error`.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    pub(crate) fn code(mut self, code: &'static str) -> ApiError {
        self.code = Some(code);
        self
    }

    pub(crate) fn kind(mut self, kind: &'static str) -> ApiError {
        self.kind = kind;
        self
    }

    /// OpenAI's answer to a body that is not JSON.
    pub(crate) fn bad_json() -> ApiError {
        ApiError::invalid(
            "We could not parse the JSON body of your request. (HINT: This likely means you \
             aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but \
             what was sent was not valid JSON. If you have trouble figuring out how to fix this, \
             please contact us through our help center at help.openai.com.)",
        )
    }

    pub(crate) fn missing(param: &str) -> ApiError {
        ApiError::invalid(format!("Missing required parameter: '{param}'."))
            .param(param)
            .code("missing_required_parameter")
    }

    pub(crate) fn wrong_type(param: &str, expected: &str, got: &Value) -> ApiError {
        ApiError::invalid(format!(
            "Invalid type for '{param}': expected {expected}, but got {} instead.",
            describe(got)
        ))
        .param(param)
        .code("invalid_type")
    }

    pub(crate) fn unknown_argument(name: &str) -> ApiError {
        ApiError::invalid(format!("Unrecognized request argument supplied: {name}"))
    }

    /// The Files API's 404, with its extra `detail` object.
    pub(crate) fn no_such(object: &str, id: &str) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::NOT_FOUND,
            format!("No such {object} object: {id}"),
        )
        .param("id");
        e.detail = true;
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Key order as OpenAI sends it: message, type, param, code.
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            message: &'a str,
            code: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
            #[serde(skip_serializing_if = "Option::is_none")]
            detail: Option<Detail<'a>>,
        }
        let body = Body {
            error: Inner {
                message: &self.message,
                kind: self.kind,
                param: self.param.as_deref(),
                code: self.code,
            },
            detail: self.detail.then_some(Detail {
                message: &self.message,
                code: self.code,
            }),
        };
        let mut response = json_with_status(self.status, &body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(name, v);
            }
        }
        response
    }
}

/// How OpenAI names a JSON value's type in its messages.
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a decimal",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// A 200 JSON response with the fields in declaration order.
pub(crate) fn json<T: Serialize>(value: &T) -> Response {
    json_with_status(StatusCode::OK, value)
}

fn json_with_status<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Parses a JSON object body the way the API does: not JSON is OpenAI's parse error.
pub(crate) fn parse_object(body: &[u8]) -> ApiResult<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::invalid(format!(
            "Invalid type for body: expected an object, but got {} instead.",
            describe(&other)
        ))
        .code("invalid_type")),
        Err(_) => Err(ApiError::bad_json()),
    }
}

/// Rejects keys outside `allowed`.
pub(crate) fn only_keys(map: &Map<String, Value>, allowed: &[&str]) -> ApiResult<()> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::unknown_argument(k)),
        None => Ok(()),
    }
}

/// A string field; null or absent is None.
pub(crate) fn opt_str(
    map: &Map<String, Value>,
    key: &str,
    param: &str,
) -> ApiResult<Option<String>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::wrong_type(param, "a string", other)),
    }
}

pub(crate) fn req_str(map: &Map<String, Value>, key: &str) -> ApiResult<String> {
    opt_str(map, key, key)?.ok_or_else(|| ApiError::missing(key))
}

/// An integer field within `min..=max`; null or absent is None.
pub(crate) fn opt_int(
    map: &Map<String, Value>,
    key: &str,
    param: &str,
    min: i64,
    max: i64,
) -> ApiResult<Option<i64>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Number(n)) => {
            let Some(i) = n.as_i64() else {
                return Err(ApiError::wrong_type(param, "an integer", v));
            };
            check_int(param, i, min, max).map(Some)
        }
        Some(other) => Err(ApiError::wrong_type(param, "an integer", other)),
    }
}

pub(crate) fn check_int(param: &str, i: i64, min: i64, max: i64) -> ApiResult<i64> {
    if i < min {
        return Err(ApiError::invalid(format!(
            "Invalid '{param}': integer below minimum value. Expected a value >= {min}, but got {i} instead."
        ))
        .param(param)
        .code("integer_below_min_value"));
    }
    if i > max {
        return Err(ApiError::invalid(format!(
            "Invalid '{param}': integer above maximum value. Expected a value <= {max}, but got {i} instead."
        ))
        .param(param)
        .code("integer_above_max_value"));
    }
    Ok(i)
}

/// Checks a string's length in characters.
pub(crate) fn check_len(param: &str, s: &str, min: usize, max: usize) -> ApiResult<()> {
    let n = s.chars().count();
    if n < min {
        return Err(ApiError::invalid(format!(
            "Invalid '{param}': string too short. Expected a string with minimum length {min}, but got a string with length {n} instead."
        ))
        .param(param)
        .code("string_below_min_length"));
    }
    if n > max {
        return Err(ApiError::invalid(format!(
            "Invalid '{param}': string too long. Expected a string with maximum length {max}, but got a string with length {n} instead."
        ))
        .param(param)
        .code("string_above_max_length"));
    }
    Ok(())
}

/// `n` random letters and digits.
pub(crate) fn random_id(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// 32 random hex digits (upload and part ids).
pub(crate) fn random_hex() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// `n` letters and digits derived from `seed` (stable ids for emulated objects).
pub(crate) fn derived_id(seed: &str, n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    let mut counter = 0u32;
    while out.len() < n {
        let digest = Sha256::new()
            .chain_update(seed.as_bytes())
            .chain_update(counter.to_le_bytes())
            .finalize();
        for b in digest {
            if out.len() == n {
                break;
            }
            // 248 = 4 * 62: keep the distribution uniform.
            if b < 248 {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
        counter += 1;
    }
    out
}

/// Fixed-width base-62 of `v` (ids that encode a position).
pub(crate) fn base62(mut v: u64, width: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    String::from_utf8(out).unwrap_or_default()
}

pub(crate) fn unbase62(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'Z' => b - b'A' + 10,
            b'a'..=b'z' => b - b'a' + 36,
            _ => return None,
        };
        acc.checked_mul(62)?.checked_add(u64::from(d))
    })
}

/// A page `{object: "list", data, has_more}` of items newest first, after the item whose
/// id is `after`. An unknown `after` gives an empty page.
pub(crate) fn page<T, F: Fn(&T) -> &str>(
    items: Vec<T>,
    after: Option<&str>,
    limit: usize,
    id_of: F,
) -> (Vec<T>, bool) {
    let start = match after {
        Some(a) => match items.iter().position(|i| id_of(i) == a) {
            Some(p) => p + 1,
            None => return (Vec::new(), false),
        },
        None => 0,
    };
    let total = items.len();
    let data: Vec<T> = items.into_iter().skip(start).take(limit).collect();
    let has_more = start + data.len() < total;
    (data, has_more)
}

/// Reads `limit` from query pairs: an integer in `1..=max`, `default` when absent.
pub(crate) fn query_limit(
    query: &[(String, String)],
    default: usize,
    max: usize,
) -> ApiResult<usize> {
    match query_get(query, "limit") {
        None => Ok(default),
        Some(raw) => {
            let Ok(v) = raw.parse::<i64>() else {
                return Err(ApiError::wrong_type(
                    "limit",
                    "an integer",
                    &Value::String(raw.to_owned()),
                ));
            };
            let v = check_int("limit", v, 1, max as i64)?;
            Ok(v as usize)
        }
    }
}

pub(crate) fn query_get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_round_trips() {
        for v in [0, 1, 61, 62, 12345, 999_999_999] {
            assert_eq!(unbase62(&base62(v, 8)), Some(v));
        }
        assert_eq!(base62(61, 2), "0z");
    }

    #[test]
    fn derived_ids_are_stable_and_alphanumeric() {
        let a = derived_id("x", 24);
        assert_eq!(a, derived_id("x", 24));
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(a, derived_id("y", 24));
    }

    #[test]
    fn pages_newest_first_after_an_id() {
        let items: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let (d, more) = page(items.clone(), None, 2, |s| s);
        assert_eq!((d, more), (vec!["0".to_owned(), "1".to_owned()], true));
        let (d, more) = page(items.clone(), Some("2"), 5, |s| s);
        assert_eq!((d, more), (vec!["3".to_owned(), "4".to_owned()], false));
        assert_eq!(page(items, Some("zz"), 5, |s| s).0.len(), 0);
    }
}
