//! Credentials that must not be trained into a model.
//!
//! A string is reported when it holds a key in a provider's documented format, with word
//! boundaries on the left (so `task-management-dashboard` or `.desk-nav` never start an
//! `sk-` match) and a floor on the random part. Formats, as the providers and the
//! secret scanners that track them describe them:
//!
//! - OpenAI: `sk-`, `sk-proj-`, `sk-svcacct-`, `sk-admin-` keys carry `T3BlbkFJ` (base64 of
//!   "OpenAI") between two random base64url runs (gitleaks, rules/openai.go:
//!   `sk-(?:proj|svcacct|admin)-(?:[A-Za-z0-9_-]{74}|{58})T3BlbkFJ(...)` and the legacy
//!   `sk-[a-zA-Z0-9]{20}T3BlbkFJ[a-zA-Z0-9]{20}`). Any other `sk-` string of 20+ key
//!   characters is caught by the generic rule only when it looks random (see [`random`]).
//! - Anthropic: `sk-ant-api03-` and `sk-ant-admin01-` + 93 base64url characters + `AA`
//!   (gitleaks, rules/anthropic.go).
//! - AWS access key ids: `AKIA` (long-term) or `ASIA` (temporary) + 16 upper-case letters and
//!   digits (AWS IAM User Guide, "Understanding unique ID prefixes").
//! - GitHub: `ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_` + 36 base62 characters (GitHub changelog
//!   2021-03-31, "Authentication token format updates"); fine-grained `github_pat_` + 82
//!   word characters (gitleaks, rules/github.go).
//! - Slack: `xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-` + numeric team/user ids + a random
//!   tail (api.slack.com/authentication/token-types; gitleaks, rules/slack.go).
//! - Google API keys: `AIza` + 35 base64url characters (gitleaks, rules/gcp.go).
//! - Stripe secret and restricted keys, live and test: `sk_live_`, `rk_live_`, `sk_test_`,
//!   `rk_test_` (docs.stripe.com/keys). Test keys count: they grant full API access to the
//!   account's test mode (its customers, webhooks and settings), and a user who knows a
//!   test key is a published sample can accept the line.
//! - PEM private keys: a `-----BEGIN ... PRIVATE KEY-----` header followed by base64 (RFC 7468).
//!
//! Placeholders (`sk-your-key-here`, `ghp_xxxx...`, `sk_test_XXXX...`) are not keys: every
//! rule requires a varied body, and the generic `sk-` rule a random-looking one.

use std::sync::OnceLock;

use regex::{Regex, RegexSet};

/// What the captured `body` of a match must look like for the match to count.
#[derive(Clone, Copy)]
enum Floor {
    /// At least [`MIN_DISTINCT`] different characters: rules out `xxxx`, `0000`, `XXXX`.
    Varied,
    /// Looks randomly generated: see [`random`].
    Random,
    /// The pattern says enough.
    Any,
}

const MIN_DISTINCT: usize = 6;

/// (pattern with a `body` group, floor, what it looks like). The report names the kind,
/// never the match.
const RULES: &[(&str, Floor, &str)] = &[
    (
        r"\bsk-(?:(?:proj|svcacct|admin)-)?(?P<body>[A-Za-z0-9_-]{20,}T3BlbkFJ[A-Za-z0-9_-]{20,})",
        Floor::Varied,
        "an OpenAI API key (sk-...)",
    ),
    (
        r"\bsk-ant-(?:api|admin)\d\d-(?P<body>[A-Za-z0-9_-]{80,})",
        Floor::Varied,
        "an Anthropic API key (sk-ant-...)",
    ),
    (
        r"\bsk-(?P<body>[A-Za-z0-9_-]{20,})",
        Floor::Random,
        "an API key (sk-...)",
    ),
    (
        r"\b(?:AKIA|ASIA)(?P<body>[0-9A-Z]{16})\b",
        Floor::Varied,
        "an AWS access key id (AKIA...)",
    ),
    (
        r"\bgh[pousr]_(?P<body>[A-Za-z0-9]{36,})\b",
        Floor::Varied,
        "a GitHub token (ghp_...)",
    ),
    (
        r"\bgithub_pat_(?P<body>[A-Za-z0-9_]{60,})",
        Floor::Varied,
        "a GitHub fine-grained token",
    ),
    (
        r"\bxox[abprs]-(?P<body>(?:\d-)?\d{8,14}-[A-Za-z0-9-]{10,})",
        Floor::Varied,
        "a Slack token (xox...)",
    ),
    (
        r"\bAIza(?P<body>[0-9A-Za-z_-]{35,})",
        Floor::Varied,
        "a Google API key (AIza...)",
    ),
    (
        r"\b[rs]k_(?:live|test)_(?P<body>[0-9A-Za-z]{20,})",
        Floor::Varied,
        "a Stripe secret key",
    ),
    (
        // The body starts right after the header (and RFC 1421's Proc-Type/DEK-Info
        // lines), raw or JSON-escaped, and its first line ends with the line or the text:
        // even a truncated key counts, prose after a quoted header does not.
        r#"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<body>(?:\s|\\[rn])*(?:Proc-Type:[^\n\\]*(?:\n|\\n)(?:DEK-Info:[^\n\\]*(?:\n|\\n))?(?:\s|\\[rn])*)?[A-Za-z0-9+/=]{4,})(?:\s*$|\r|\n|\\[rn]|["'`])"#,
        Floor::Any,
        "a private key",
    ),
];

struct Rules {
    /// One pass over the text says which rules can match at all.
    set: RegexSet,
    each: Vec<Regex>,
}

fn rules() -> &'static Rules {
    static RULES_COMPILED: OnceLock<Rules> = OnceLock::new();
    RULES_COMPILED.get_or_init(|| Rules {
        set: RegexSet::new(RULES.iter().map(|r| r.0)).expect("secret patterns compile"),
        each: RULES
            .iter()
            .map(|r| Regex::new(r.0).expect("secret patterns compile"))
            .collect(),
    })
}

/// What `text` appears to contain, if it holds a credential.
pub fn find(text: &str) -> Option<&'static str> {
    let rules = rules();
    rules.set.matches(text).iter().find_map(|i| {
        let (_, floor, kind) = RULES[i];
        rules.each[i]
            .captures_iter(text)
            .any(|c| passes(floor, &c["body"]))
            .then_some(kind)
    })
}

fn passes(floor: Floor, body: &str) -> bool {
    match floor {
        Floor::Varied => distinct(body) >= MIN_DISTINCT,
        Floor::Random => random(body),
        Floor::Any => true,
    }
}

fn distinct(s: &str) -> usize {
    let mut seen = [false; 128];
    s.bytes()
        .filter(|b| b.is_ascii() && !std::mem::replace(&mut seen[usize::from(*b)], true))
        .count()
}

/// Whether a key body looks randomly generated rather than written by a person.
///
/// A generated key draws every character independently from 62 or 64 symbols, so it mixes
/// upper case, lower case and digits, spreads over many symbols, and rarely spells runs of
/// lower-case letters. Names people write do not: kebab-case has no upper case, camelCase
/// is mostly words. All four must hold:
/// - at least 20 letters and digits;
/// - upper case, lower case and digits all present;
/// - Shannon entropy of at least 3.5 bits per character;
/// - at most 85% of the letters and digits inside word-like runs: a lower-case run of 2+
///   (with the capital that starts it) or an all-capitals run of 2+ (an acronym).
///
/// Measured in tests/secret_corpus.rs on 20,000 seeded random bodies each: every
/// 156-character base64url body passes; about 0.05-0.1% of 48-character base62 bodies fail
/// (those lacking a digit, or spelling words by chance), which is why OpenAI's own formats
/// are matched by their `T3BlbkFJ` marker and not by this floor. None of the 7,720
/// key-shaped runs of the code corpus passes, even put right after `sk-`.
fn random(body: &str) -> bool {
    let alnum: Vec<u8> = body.bytes().filter(u8::is_ascii_alphanumeric).collect();
    let n = alnum.len();
    let upper = alnum.iter().any(u8::is_ascii_uppercase);
    let lower = alnum.iter().any(u8::is_ascii_lowercase);
    let digit = alnum.iter().any(u8::is_ascii_digit);
    n >= 20 && upper && lower && digit && entropy(body) >= 3.5 && wordy(body) * 100 <= n * 85
}

/// Shannon entropy of the characters of `s`, in bits per character.
fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// How many letters of `s` sit in word-like runs: `[A-Z]?[a-z]{2,}` or an acronym
/// `[A-Z]{2,}` not followed by a lower-case letter (whose last capital starts the next word).
fn wordy(s: &str) -> usize {
    let b = s.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < b.len() {
        let run = |from: usize, f: fn(&u8) -> bool| b[from..].iter().take_while(|c| f(c)).count();
        let upper = run(i, u8::is_ascii_uppercase);
        if upper > 0 {
            let lower = run(i + upper, u8::is_ascii_lowercase);
            if lower >= 2 {
                // The last capital starts the word; any before it form an acronym.
                count += lower + 1 + if upper > 2 { upper - 1 } else { 0 };
            } else if lower == 0 && upper >= 2 {
                count += upper;
            } else if upper > 2 {
                count += upper - 1;
            }
            i += upper + lower;
            continue;
        }
        let lower = run(i, u8::is_ascii_lowercase);
        if lower > 0 {
            if lower >= 2 {
                count += lower;
            }
            i += lower;
            continue;
        }
        i += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::{find, random, wordy};

    #[test]
    fn kebab_case_names_are_not_keys() {
        for name in [
            "task-management-dashboard",
            ".desk-navigation-container-wrapper",
            "risk-assessment-summary-table",
            "<div class=\"task-management-dashboard risk-assessment-summary-table\">",
            "ask-me-anything about risk-free tasks",
        ] {
            assert_eq!(find(name), None, "{name}");
        }
    }

    #[test]
    fn the_left_boundary_is_a_word_boundary() {
        let key = "sk-proj-Rz4mQ8vL2xN7pK1wT9yB3cF6hJ0gD5sA";
        assert!(find(key).is_some());
        assert!(find(&format!("OPENAI_API_KEY={key}")).is_some());
        assert!(find(&format!("\"{key}\"")).is_some());
        assert!(find(&format!("key:{key}\n")).is_some());
        // Glued to a word on the left it is part of that word, not a key.
        assert_eq!(find(&format!("task{key}")), None);
        assert_eq!(find(&format!("de{key}")), None, "desk-proj-...");
    }

    #[test]
    fn placeholders_are_not_keys() {
        for text in [
            "set OPENAI_API_KEY=sk-your-key-here",
            "sk-your-openai-api-key-goes-here",
            "sk-proj-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "sk_test_XXXXXXXXXXXXXXXXXXXXXXXX",
            "sk_live_your_key_here",
            "xoxb-your-bot-token",
            "AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "a PEM file starts with -----BEGIN PRIVATE KEY----- and ends with its END line",
        ] {
            assert_eq!(find(text), None, "{text}");
        }
    }

    #[test]
    fn documented_formats_are_keys() {
        for (text, kind) in [
            (
                "sk-Ab3dE5fG7hJ9kL1mN2pQT3BlbkFJr4sT6uV8wX0yZ1aB2cD3eF",
                "OpenAI",
            ),
            ("AKIAIOSFODNN7EXAMPLE", "AWS"),
            ("ASIAY34FZKBOKMUTVV7A", "AWS"),
            ("ghp_R2xkN8vQ4mT1pL7wZ3yB9cF6hJ0gD5sA2eK8", "GitHub"),
            (
                "xoxb-2653942065-2364535789652-GkwFDQoHqzXDVsC6GzqYUypD",
                "Slack",
            ),
            ("AIzaSyD3x9Qm2L7vK8pN1wT4yB6cF0hJ5gR2sA8", "Google"),
            ("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "Stripe"),
            (
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7Zq3mK9vL2xN8pT4wB6yF1cH0jD5gR3sA",
                "private key",
            ),
            (
                "\"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n\"",
                "private key",
            ),
        ] {
            let found = find(text).unwrap_or_else(|| panic!("{text} is a key"));
            assert!(found.contains(kind), "{text}: {found}");
        }
    }

    #[test]
    fn the_random_floor_separates_generated_from_written() {
        assert!(random("Rz4mQ8vL2xN7pK1wT9yB3cF6hJ0gD5sA"));
        assert!(!random("management-dashboard-container"));
        assert!(!random("completeBoundaryWithStylesScript1Partial"));
        assert!(!random("Xw9Xw9Xw9Xw9Xw9Xw9Xw9Xw9"), "low entropy");
        // "To" is too short a word; "HTML" is an acronym, its "O" starts "Or", too short.
        assert_eq!(wordy("renderToHTMLOrFlight"), 6 + 4 + 6);
        assert_eq!(wordy("aB3"), 0);
    }
}
