//! Exact token counting with tiktoken's encodings (bundled, so it works offline).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

/// A tiktoken encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    O200kBase,
    Cl100kBase,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding of a model family, after tiktoken's prefix table. `gpt-4.1`
    /// and `gpt-4o` are checked before the `gpt-4` prefix they share.
    pub fn for_model_family(model: &str) -> Encoding {
        const O200K: &[&str] = &["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4"];
        if O200K.iter().any(|p| model.starts_with(p)) {
            Encoding::O200kBase
        } else if model.starts_with("gpt-4") || model.starts_with("gpt-3.5") {
            Encoding::Cl100kBase
        } else {
            Encoding::O200kBase
        }
    }

    /// The loaded BPE; the first call per encoding takes ~0.2 s, later calls are free.
    pub fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }
}

/// Strings at least this long are remembered, so a system prompt shared by
/// every example is tokenized once.
const CACHE_MIN_LEN: usize = 256;
/// Entries kept before the cache is emptied (bounded memory).
const CACHE_CAPACITY: usize = 4096;

/// Counts tokens of strings with one encoding. One per worker thread.
pub struct Counter {
    bpe: &'static CoreBPE,
    cache: HashMap<u128, u32>,
}

impl Counter {
    pub fn new(encoding: Encoding) -> Counter {
        Counter {
            bpe: encoding.bpe(),
            cache: HashMap::new(),
        }
    }

    /// Tokens of `text` as ordinary text (special-token strings count as text).
    pub fn count(&mut self, text: &str) -> u64 {
        if text.len() < CACHE_MIN_LEN {
            return self.bpe.count_ordinary(text) as u64;
        }
        let key = xxhash_rust::xxh3::xxh3_128(text.as_bytes());
        if let Some(&n) = self.cache.get(&key) {
            return u64::from(n);
        }
        let n = self.bpe.count_ordinary(text);
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        n as u64
    }
}
