//! Token counts with OpenAI's own encodings, through tiktoken-rs (the BPE files are bundled,
//! so it works offline). Which model uses which encoding is in [`crate::models`].

use tiktoken_rs::CoreBPE;

/// A tiktoken encoding, as OpenAI's `tiktoken/model.py` maps models to them
/// (`reference/openai-api.md`, section 5, [TIKTOKEN]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// `o200k_base`: gpt-4o, gpt-4.1, o-series, gpt-5.
    O200kBase,
    /// `cl100k_base`: gpt-4, gpt-3.5-turbo.
    Cl100kBase,
}

impl Encoding {
    /// The loaded BPE; the first call per encoding loads it (~0.2 s), later calls are free.
    pub(crate) fn bpe(self) -> &'static CoreBPE {
        match self {
            Encoding::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Encoding::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Tokens of `text` as ordinary text (special-token strings count as text).
    pub(crate) fn count(self, text: &str) -> u64 {
        let bpe = self.bpe();
        let mut total = 0;
        let mut rest = text;
        while rest.len() > MAX_PIECE {
            let cut = cut_point(rest);
            total += bpe.count_ordinary(&rest[..cut]);
            rest = &rest[cut..];
        }
        (total + bpe.count_ordinary(rest)) as u64
    }

    /// `text` as an answer streams it: one piece per token, at most `max` tokens, and
    /// whether `max` cut it short. Byte pieces are joined until they are whole UTF-8, so
    /// no character is split across pieces.
    pub(crate) fn pieces(self, text: &str, max: Option<u64>) -> (Vec<String>, bool) {
        let bpe = self.bpe();
        let mut tokens = bpe.encode_ordinary(text);
        let cut = max.is_some_and(|max| tokens.len() as u64 > max);
        if let (true, Some(max)) = (cut, max) {
            tokens.truncate(max as usize);
        }
        let mut pieces = Vec::with_capacity(tokens.len());
        let mut pending: Vec<u8> = Vec::new();
        for t in tokens {
            if let Ok(bytes) = bpe.decode_bytes(&[t]) {
                pending.extend_from_slice(&bytes);
            }
            if let Ok(s) = std::str::from_utf8(&pending) {
                pieces.push(s.to_owned());
                pending.clear();
            }
        }
        if !pending.is_empty() {
            pieces.push(String::from_utf8_lossy(&pending).into_owned());
        }
        (pieces, cut)
    }
}

/// Longest text tokenized in one call: tiktoken's pre-tokenizing regex overflows its stack
/// on about 1 MB without a word break.
const MAX_PIECE: usize = 16 * 1024;

/// Where to cut text longer than [`MAX_PIECE`]: before the last space within the first
/// `MAX_PIECE` bytes that stands between two non-space characters (tiktoken always splits
/// there, so ordinary text counts exactly), else at a character boundary.
fn cut_point(text: &str) -> usize {
    let head = &text[..floor_boundary(text, MAX_PIECE)];
    let word_break = head.char_indices().rev().find(|&(i, c)| {
        c == ' '
            && head[..i]
                .chars()
                .next_back()
                .is_some_and(|b| !b.is_whitespace())
            && text[i + 1..]
                .chars()
                .next()
                .is_some_and(|a| !a.is_whitespace())
    });
    match word_break {
        Some((i, _)) if i > 0 => i,
        _ => head.len(),
    }
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_counts_as_one_call_would() {
        let text = "It's a test, isn't it? émigré 漢字 12345 /path/to/file.rs ".repeat(2000);
        for encoding in [Encoding::O200kBase, Encoding::Cl100kBase] {
            let whole = encoding.bpe().count_ordinary(&text) as u64;
            assert_eq!(encoding.count(&text), whole, "{encoding:?}");
        }
    }

    #[test]
    fn runs_without_a_break_are_counted_without_a_panic() {
        for filler in [" ", "\n", "x", "\u{3000}"] {
            assert!(
                Encoding::O200kBase.count(&filler.repeat(2 << 20)) > 0,
                "{filler:?}"
            );
        }
    }
}
