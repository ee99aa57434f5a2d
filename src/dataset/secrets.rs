//! Patterns of credentials that must not be trained into a model.

use std::sync::OnceLock;

use regex::RegexSet;

/// (pattern, what it looks like). The report names the kind, never the match.
const PATTERNS: &[(&str, &str)] = &[
    (
        r"sk-(?:proj-|svcacct-|admin-|ant-(?:api|admin)\d\d-)?[A-Za-z0-9_\-]{20,}",
        "an OpenAI or Anthropic API key (sk-...)",
    ),
    (r"\bAKIA[0-9A-Z]{16}\b", "an AWS access key id (AKIA...)"),
    (r"\bgh[pousr]_[A-Za-z0-9]{36,}", "a GitHub token (ghp_...)"),
    (
        r"\bgithub_pat_[A-Za-z0-9_]{22,}",
        "a GitHub fine-grained token",
    ),
    (r"\bxox[abprs]-[A-Za-z0-9\-]{10,}", "a Slack token (xox...)"),
    (r"\bAIza[0-9A-Za-z_\-]{35}", "a Google API key (AIza...)"),
    (r"\b[rs]k_live_[0-9A-Za-z]{20,}", "a Stripe live key"),
    (r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----", "a private key"),
];

fn set() -> &'static RegexSet {
    static SET: OnceLock<RegexSet> = OnceLock::new();
    SET.get_or_init(|| {
        RegexSet::new(PATTERNS.iter().map(|(p, _)| p)).expect("secret patterns compile")
    })
}

/// What `text` appears to contain, if it looks like a credential.
pub(crate) fn find(text: &str) -> Option<&'static str> {
    set().matches(text).iter().next().map(|i| PATTERNS[i].1)
}

#[cfg(test)]
mod tests {
    use super::find;

    #[test]
    fn finds_keys_but_not_prose() {
        assert!(find("use key sk-proj-abcdefghijklmnopqrstuvwxyz0123").is_some());
        assert!(find("AKIAIOSFODNN7EXAMPLE").is_some());
        assert!(find("-----BEGIN RSA PRIVATE KEY-----\nMII").is_some());
        assert!(find("ask-me-anything about risk-free tasks").is_none());
        assert!(find("set OPENAI_API_KEY=sk-your-key-here").is_none());
    }
}
