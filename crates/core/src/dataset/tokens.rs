//! Exact token counting with tiktoken's encodings (bundled, so it works offline).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

/// A tiktoken encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// GPT-4o's and later models' encoding.
    O200kBase,
    /// GPT-3.5's and GPT-4's encoding.
    Cl100kBase,
}

impl Encoding {
    /// The encoding's tiktoken name, e.g. `o200k_base`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding of a model family, after tiktoken's prefix table. `gpt-4.1`
    /// and `gpt-4o` are checked before the `gpt-4` prefix they share.
    pub(crate) fn for_model_family(model: &str) -> Encoding {
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

/// Longest text tokenized in one call. tiktoken's pre-tokenizing regex overflows its
/// backtracking stack (a panic) on about 1 MB of whitespace, and its cost grows faster than
/// the length of a run with no word break (10 MB of newlines: 13 s). Longer text is counted
/// in pieces cut just before a space that stands between two non-space characters: tokens
/// always split there, so the count of ordinary text is exact. Only a run with no such space
/// for this long is cut inside the run, where the count may differ by a token per cut.
const MAX_PIECE: usize = 16 * 1024;

/// Where to cut `text` (longer than [`MAX_PIECE`]): the last space within the first
/// `MAX_PIECE` bytes between two non-whitespace characters, else a character boundary.
fn cut_point(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut end = MAX_PIECE;
    while let Some(i) = memchr::memrchr(b' ', &bytes[..end]) {
        let before = text[..i].chars().next_back();
        let after = text[i + 1..].chars().next();
        if before.is_some_and(|c| !c.is_whitespace()) && after.is_some_and(|c| !c.is_whitespace()) {
            return i;
        }
        end = i;
    }
    let mut cut = MAX_PIECE;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

/// Counts tokens of strings with one encoding. One per worker thread.
pub struct Counter {
    bpe: &'static CoreBPE,
    cache: HashMap<u128, u32>,
}

impl Counter {
    /// A counter with an empty cache; loading the encoding's tables happens once per process.
    pub fn new(encoding: Encoding) -> Counter {
        Counter {
            bpe: encoding.bpe(),
            cache: HashMap::new(),
        }
    }

    /// Counts `text` at most [`MAX_PIECE`] bytes at a time (see there).
    fn count_in_pieces(&self, text: &str) -> usize {
        let mut total = 0;
        let mut rest = text;
        while rest.len() > MAX_PIECE {
            let cut = cut_point(rest);
            total += self.bpe.count_ordinary(&rest[..cut]);
            rest = &rest[cut..];
        }
        total + self.bpe.count_ordinary(rest)
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
        let n = self.count_in_pieces(text);
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(key, u32::try_from(n).unwrap_or(u32::MAX));
        n as u64
    }
}

#[cfg(test)]
mod tests {
    use super::{Counter, Encoding, MAX_PIECE};

    /// Text of every kind, far longer than one piece.
    fn mixed_text() -> String {
        let mut text = String::new();
        let mut i = 0;
        while text.len() < 20 * MAX_PIECE {
            text.push_str(&format!(
                "Paragraph {i}: it's a test, isn't it?  Code: `fn main() {{ println!(\"{i}\"); }}`\n\
                 \t- 漢字とかな {i}, émigré naïve   spaces\r\n12345678 /path/to/file.rs ... "
            ));
            i += 1;
        }
        text
    }

    #[test]
    fn counting_in_pieces_is_exact_for_text() {
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let text = mixed_text();
            let whole = encoding.bpe().count_ordinary(&text) as u64;
            assert_eq!(Counter::new(encoding).count(&text), whole, "{encoding:?}");
        }
    }

    #[test]
    fn runs_without_a_break_are_counted_without_a_panic() {
        let mut counter = Counter::new(Encoding::O200kBase);
        for filler in [" ", "\n", "x", "^", "\u{3000}"] {
            let text = filler.repeat(2 << 20);
            assert!(counter.count(&text) > 0, "{filler:?}");
        }
    }
}
