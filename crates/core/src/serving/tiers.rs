//! Tier configuration: named routes, loaded from TOML and checked once at start.

use std::collections::HashSet;

use serde::Deserialize;

use crate::error::Error;

/// The tiers shipped with the service (`data/tiers.toml`).
const BUILTIN_TIERS: &str = include_str!("../../../../data/tiers.toml");

/// The chat provider a tier calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI's chat completions.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
}

impl ProviderKind {
    /// The lowercase name used in tiers files, metrics and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
        }
    }

    /// The provider of an explicitly named model.
    pub(crate) fn of_model(model: &str) -> ProviderKind {
        if model.starts_with("claude") {
            ProviderKind::Anthropic
        } else {
            ProviderKind::Openai
        }
    }
}

/// One arm of a split tier: a plain tier and its share of the users.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ArmSpec {
    /// The plain tier this arm routes to.
    pub tier: String,
    /// Relative share of users (at least 1).
    pub weight: u32,
}

/// One named route of the tiers file: a provider and model, or a split over other tiers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TierSpec {
    /// The tier's unique name, which callers give.
    pub name: String,
    /// The provider to call; None only for a split tier.
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    /// Empty: the promoted model.
    #[serde(default)]
    pub model: String,
    /// Whether the knowledge base is put in the system prompt.
    #[serde(default)]
    pub inject_knowledge: bool,
    /// A plain tier to try when this one fails.
    #[serde(default)]
    pub fallback: Option<String>,
    /// The arms of a split tier; empty for a plain tier.
    #[serde(default)]
    pub split: Vec<ArmSpec>,
    /// Output token limit for requests that set none (default 4096).
    #[serde(default = "default_max_output")]
    pub max_output_tokens: u32,
}

fn default_max_output() -> u32 {
    4096
}

impl TierSpec {
    /// Whether this tier splits its users over other tiers.
    pub(crate) fn is_split(&self) -> bool {
        !self.split.is_empty()
    }
}

/// The tiers file: every route and the auto-promotion target.
#[derive(Debug, Clone, Deserialize)]
pub struct Tiers {
    /// The tier a succeeded job's model is promoted to automatically; empty for none.
    #[serde(default)]
    pub auto_promote: String,
    /// The tiers (`[[tier]]` tables), in file order.
    #[serde(rename = "tier")]
    pub tiers: Vec<TierSpec>,
}

impl Tiers {
    /// The tiers shipped with the service (`data/tiers.toml`).
    pub fn builtin() -> Tiers {
        Tiers::parse(BUILTIN_TIERS, "data/tiers.toml").expect("the shipped tiers are valid")
    }

    /// Reads and checks the tiers file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Tiers, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read tiers {}: {e}", path.display())))?;
        Tiers::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a tiers file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tiers, Error> {
        let tiers: Tiers =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        let bad = |msg: String| Err(Error::Config(format!("{origin}: {msg}")));
        let mut names = HashSet::new();
        for t in &tiers.tiers {
            if t.name.is_empty() || !names.insert(t.name.as_str()) {
                return bad(format!(
                    "tier names must be unique and non-empty (\"{}\")",
                    t.name
                ));
            }
        }
        for t in &tiers.tiers {
            if t.is_split() {
                if t.provider.is_some() || !t.model.is_empty() || t.fallback.is_some() {
                    return bad(format!(
                        "split tier {} takes only `split` (its arms have providers)",
                        t.name
                    ));
                }
                for arm in &t.split {
                    match tiers.get(&arm.tier) {
                        Some(target) if !target.is_split() => {}
                        _ => {
                            return bad(format!(
                                "split tier {}: arm {} must name a plain tier",
                                t.name, arm.tier
                            ));
                        }
                    }
                    if arm.weight == 0 {
                        return bad(format!(
                            "split tier {}: arm {} has weight 0",
                            t.name, arm.tier
                        ));
                    }
                }
            } else if t.provider.is_none() {
                return bad(format!(
                    "tier {} needs a provider (openai or anthropic) or a split",
                    t.name
                ));
            }
            if let Some(f) = &t.fallback {
                match tiers.get(f) {
                    Some(target) if !target.is_split() && target.name != t.name => {}
                    _ => {
                        return bad(format!(
                            "tier {}: fallback {f} must be another plain tier",
                            t.name
                        ));
                    }
                }
            }
            if t.max_output_tokens == 0 {
                return bad(format!(
                    "tier {}: max_output_tokens must be at least 1",
                    t.name
                ));
            }
        }
        if !tiers.auto_promote.is_empty()
            && tiers
                .get(&tiers.auto_promote)
                .is_none_or(TierSpec::is_split)
        {
            return bad(format!(
                "auto_promote names {}, which is not a plain tier",
                tiers.auto_promote
            ));
        }
        Ok(tiers)
    }

    /// The tier named `name`, if configured.
    pub fn get(&self, name: &str) -> Option<&TierSpec> {
        self.tiers.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_tiers_are_fast_pro_and_an_even_split() {
        let t = Tiers::builtin();
        assert_eq!(t.get("fast").unwrap().provider, Some(ProviderKind::Openai));
        assert!(t.get("pro").unwrap().inject_knowledge);
        assert_eq!(t.get("auto").unwrap().split.len(), 2);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = Tiers::parse("[[tier]]\nname = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs a provider"), "{err}");
        let err = Tiers::parse(
            "[[tier]]\nname = \"a\"\nsplit = [{ tier = \"nope\", weight = 1 }]\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("arm nope"), "{err}");
        let err = Tiers::parse(
            "[[tier]]\nname = \"a\"\nprovider = \"openai\"\nfallback = \"a\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("fallback"), "{err}");
    }
}
