//! The model catalog: encoding, training context and price per model, from a data file.

use serde::Deserialize;

use super::tokens::Encoding;
use crate::error::Error;

/// The catalog shipped with the service (`data/models.toml`).
pub(crate) const BUILTIN_CATALOG: &str = include_str!("../../../../data/models.toml");

/// Training context assumed for models the catalog does not list.
const FALLBACK_CONTEXT: u64 = 65_536;

/// One model's training facts.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelInfo {
    /// The model's name as OpenAI lists it, e.g. `gpt-4o-mini-2024-07-18`.
    pub name: String,
    /// Other names that resolve to it, e.g. `gpt-4o-mini`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The tokenizer its tokens are counted with.
    pub encoding: Encoding,
    /// The most tokens of one example that training uses; longer ones are truncated.
    pub training_context: u64,
    /// USD per 1M training tokens; 0 when unknown.
    #[serde(default)]
    pub training_usd_per_1m: f64,
    /// Where the figures come from, for a reader checking them.
    #[serde(default)]
    pub source: String,
}

/// Inference prices of a model, USD per 1M tokens.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InferencePrice {
    /// Matched as a prefix of the served model's name (the longest match wins).
    pub model: String,
    /// Applies to `ft:` models of this base rather than to the base itself.
    #[serde(default)]
    pub fine_tuned: bool,
    /// USD per 1M uncached prompt tokens.
    pub input: f64,
    /// Prompt tokens read from the cache; default: the input price.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the cache; default: the input price.
    #[serde(default)]
    pub cache_write: Option<f64>,
    /// USD per 1M output tokens.
    pub output: f64,
    /// Where the prices come from, for a reader checking them.
    #[serde(default)]
    pub source: String,
}

impl InferencePrice {
    /// The price of each kind of token, with the catalog's defaults applied: cache reads and
    /// writes cost the input price unless the catalog prices them apart.
    pub fn token_prices(&self) -> TokenPrices {
        TokenPrices {
            input: self.input,
            cached_input: self.cached_input.unwrap_or(self.input),
            cache_write: self.cache_write.unwrap_or(self.input),
            output: self.output,
        }
    }
}

/// USD per 1M tokens of each kind a request pays for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPrices {
    /// USD per 1M uncached prompt tokens.
    pub input: f64,
    /// USD per 1M prompt tokens read from the cache.
    pub cached_input: f64,
    /// USD per 1M prompt tokens written to the cache.
    pub cache_write: f64,
    /// USD per 1M output tokens.
    pub output: f64,
}

impl TokenPrices {
    /// What a request pays, in USD, for its uncached input, cache reads, cache writes and
    /// output, in that order. `input` counts every prompt token, the ones read from or
    /// written to the cache included, as the providers report them.
    pub fn cost_parts(
        &self,
        input: f64,
        cache_read: f64,
        cache_write: f64,
        output: f64,
    ) -> [f64; 4] {
        let uncached = (input - cache_read - cache_write).max(0.0);
        [
            uncached * self.input / 1e6,
            cache_read * self.cached_input / 1e6,
            cache_write * self.cache_write / 1e6,
            output * self.output / 1e6,
        ]
    }
}

/// The models the service knows, loaded from TOML.
#[derive(Debug, Clone, Deserialize)]
pub struct Catalog {
    /// The model used when a request names none.
    pub default_model: String,
    /// The trainable models (`[[model]]` tables).
    #[serde(rename = "model")]
    pub models: Vec<ModelInfo>,
    /// Inference prices, for the cost of served requests.
    #[serde(default)]
    pub inference: Vec<InferencePrice>,
}

/// What a model name resolved to.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The model as the caller named it.
    pub requested: String,
    /// The catalog's facts for it (defaults when unknown).
    pub info: ModelInfo,
    /// False when the catalog did not list the model and defaults were assumed.
    pub known: bool,
}

impl Catalog {
    /// The catalog shipped with the binary.
    pub fn builtin() -> Catalog {
        Catalog::parse(BUILTIN_CATALOG, "data/models.toml").expect("the shipped catalog is valid")
    }

    /// Parses a catalog file; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Catalog, Error> {
        let catalog: Catalog =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        if catalog.models.is_empty() {
            return Err(Error::Config(format!("{origin}: no [[model]] entries")));
        }
        for m in &catalog.models {
            if m.training_context == 0
                || !m.training_usd_per_1m.is_finite()
                || m.training_usd_per_1m < 0.0
            {
                return Err(Error::Config(format!(
                    "{origin}: model {}: training_context must be > 0 and training_usd_per_1m >= 0",
                    m.name
                )));
            }
        }
        Ok(catalog)
    }

    /// Loads a catalog from a file.
    pub fn load(path: &std::path::Path) -> Result<Catalog, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read catalog {}: {e}", path.display())))?;
        Catalog::parse(&text, &path.display().to_string())
    }

    /// Resolves a model name (empty = the default). A fine-tuned name such as
    /// `ft:gpt-4o-2024-08-06:org:suffix:id` resolves to its base model. Unknown
    /// names get the encoding their family uses, a conservative context and no price.
    pub fn resolve(&self, model: &str) -> Resolved {
        let requested = if model.is_empty() {
            self.default_model.clone()
        } else {
            model.to_owned()
        };
        let base = base_model(&requested);
        if let Some(info) = self
            .models
            .iter()
            .find(|m| m.name == base || m.aliases.iter().any(|a| a == base))
        {
            return Resolved {
                requested,
                info: info.clone(),
                known: true,
            };
        }
        let info = ModelInfo {
            name: base.to_owned(),
            aliases: Vec::new(),
            encoding: Encoding::for_model_family(base),
            training_context: FALLBACK_CONTEXT,
            training_usd_per_1m: 0.0,
            source: "not in the catalog: assumed".to_owned(),
        };
        Resolved {
            requested,
            info,
            known: false,
        }
    }
}

impl Catalog {
    /// The inference price of a served model: `ft:` models use their base's
    /// fine-tuned entry; others the longest matching prefix.
    pub fn inference_price(&self, model: &str) -> Option<&InferencePrice> {
        let fine_tuned = model.starts_with("ft:");
        let name = base_model(model);
        self.inference
            .iter()
            .filter(|p| p.fine_tuned == fine_tuned && name.starts_with(&p.model))
            .max_by_key(|p| p.model.len())
    }
}

/// `ft:gpt-4o-2024-08-06:org:suffix:id` -> `gpt-4o-2024-08-06`; other names unchanged.
fn base_model(model: &str) -> &str {
    match model.strip_prefix("ft:") {
        Some(rest) => rest.split(':').next().unwrap_or(rest),
        None => model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_aliases_fine_tuned_names_and_unknown_models() {
        let c = Catalog::builtin();
        assert_eq!(c.resolve("").info.name, "gpt-4o-2024-08-06");
        assert_eq!(c.resolve("gpt-4o-mini").info.name, "gpt-4o-mini-2024-07-18");
        let ft = c.resolve("ft:gpt-3.5-turbo-0125:acme:fe:abc123");
        assert_eq!(ft.info.name, "gpt-3.5-turbo-0125");
        assert_eq!(ft.info.encoding, Encoding::Cl100kBase);
        // ft:gpt-4.1 must not fall into the gpt-4 (cl100k) family.
        let unknown = c.resolve("ft:gpt-4.1-2099-01-01:acme::x");
        assert!(!unknown.known);
        assert_eq!(unknown.info.encoding, Encoding::O200kBase);
        assert_eq!(c.resolve("gpt-4-0314").info.encoding, Encoding::Cl100kBase);
    }

    #[test]
    fn inference_prices_by_prefix_and_fine_tuned_base() {
        let c = Catalog::builtin();
        assert_eq!(
            c.inference_price("ft:gpt-4o-2024-08-06:acme:fe:abc")
                .unwrap()
                .input,
            3.75
        );
        assert_eq!(c.inference_price("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(
            c.inference_price("gpt-4o-mini-2024-07-18").unwrap().input,
            0.15
        );
        assert_eq!(
            c.inference_price("claude-sonnet-5-5").unwrap().cached_input,
            Some(0.10)
        );
        assert_eq!(
            c.inference_price("claude-sonnet-5-20260630")
                .unwrap()
                .cached_input,
            Some(0.20)
        );
        assert!(c.inference_price("llama-3").is_none());
    }

    #[test]
    fn rejects_a_catalog_without_models() {
        let err = Catalog::parse("default_model = \"x\"\nmodel = []\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("no [[model]] entries"), "{err}");
    }
}
