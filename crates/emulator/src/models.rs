//! The OpenAI models the emulator answers as: their names, encodings, context windows and,
//! for the fine-tunable ones, their training context. Written from the published facts in
//! `reference/` (each row says which), independent of the product's `data/models.toml`.
//!
//! Sources, as `reference/openai-api.md` names them:
//! - [GUIDE] the fine-tuning guide (Dec 2024), `openai-api.md` section 6: the fine-tunable
//!   models, and "Per-model training context" (inference context, training example context).
//! - [SPEC] `reference/openai-openapi-finetuning.yaml`, `CreateFineTuningJobRequest.model`:
//!   `gpt-3.5-turbo` and `gpt-4o-mini` are accepted names (aliases of a snapshot).
//! - [REC] `reference/recorded/openai-dotnet/FineTuningClientTests/MinimalRequiredParams.json`:
//!   a job created with `gpt-3.5-turbo` reports the snapshot `gpt-3.5-turbo-0125`.
//! - [DPO-NB] the DPO cookbook (`openai-api.md` section 6) fine-tunes gpt-4.1-mini.
//! - [TIKTOKEN] `openai-api.md` section 5: `gpt-4o-`, `gpt-4.1-` use o200k_base; `gpt-4-`,
//!   `gpt-3.5-turbo-` use cl100k_base.

use crate::tokens::Encoding;

/// One model.
#[derive(Debug)]
pub(crate) struct Model {
    /// The snapshot name responses carry.
    pub(crate) name: &'static str,
    /// Other names requests may use; they resolve to `name`.
    pub(crate) aliases: &'static [&'static str],
    pub(crate) encoding: Encoding,
    /// Tokens of the inference context window.
    pub(crate) context_window: u64,
    /// Longest training example in tokens (OpenAI truncates longer ones); None when the
    /// model cannot be fine-tuned.
    pub(crate) training_context: Option<u64>,
}

/// Every model the emulator knows, in the order `GET /v1/models` lists them.
pub(crate) const MODELS: &[Model] = &[
    // [GUIDE] fine-tunable, 128,000 / 65,536; alias gpt-4o; [TIKTOKEN] o200k.
    Model {
        name: "gpt-4o-2024-08-06",
        aliases: &["gpt-4o"],
        encoding: Encoding::O200kBase,
        context_window: 128_000,
        training_context: Some(65_536),
    },
    // [GUIDE] fine-tunable, 128,000 / 65,536; [SPEC] alias gpt-4o-mini; [TIKTOKEN] o200k.
    Model {
        name: "gpt-4o-mini-2024-07-18",
        aliases: &["gpt-4o-mini"],
        encoding: Encoding::O200kBase,
        context_window: 128_000,
        training_context: Some(65_536),
    },
    // Not in the Dec 2024 guide: fine-tunable and its training context are not confirmed by
    // any stored OpenAI page (section 6: "Make it configurable; 65,536 is a conservative
    // assumption"). The window, 1,047,576, is from third-party catalogues (section 6).
    Model {
        name: "gpt-4.1-2025-04-14",
        aliases: &["gpt-4.1"],
        encoding: Encoding::O200kBase,
        context_window: 1_047_576,
        training_context: Some(65_536),
    },
    // [DPO-NB] fine-tunable; context as gpt-4.1 above (unconfirmed).
    Model {
        name: "gpt-4.1-mini-2025-04-14",
        aliases: &["gpt-4.1-mini"],
        encoding: Encoding::O200kBase,
        context_window: 1_047_576,
        training_context: Some(65_536),
    },
    // As gpt-4.1 above: unconfirmed.
    Model {
        name: "gpt-4.1-nano-2025-04-14",
        aliases: &["gpt-4.1-nano"],
        encoding: Encoding::O200kBase,
        context_window: 1_047_576,
        training_context: Some(65_536),
    },
    // [GUIDE] lists it as fine-tunable but gives no context for it; 8,192 is gpt-4's window,
    // which no file in reference/ states.
    Model {
        name: "gpt-4-0613",
        aliases: &[],
        encoding: Encoding::Cl100kBase,
        context_window: 8_192,
        training_context: Some(8_192),
    },
    // [GUIDE] fine-tunable, 16,385 / 16,385; [SPEC] and [REC] alias gpt-3.5-turbo.
    Model {
        name: "gpt-3.5-turbo-0125",
        aliases: &["gpt-3.5-turbo"],
        encoding: Encoding::Cl100kBase,
        context_window: 16_385,
        training_context: Some(16_385),
    },
    // [GUIDE] fine-tunable, 16,385 / 16,385.
    Model {
        name: "gpt-3.5-turbo-1106",
        aliases: &[],
        encoding: Encoding::Cl100kBase,
        context_window: 16_385,
        training_context: Some(16_385),
    },
    // [GUIDE] fine-tunable, 16,385 / 4,096.
    Model {
        name: "gpt-3.5-turbo-0613",
        aliases: &[],
        encoding: Encoding::Cl100kBase,
        context_window: 16_385,
        training_context: Some(4_096),
    },
];

/// The model a name (snapshot or alias) stands for.
pub(crate) fn find(name: &str) -> Option<&'static Model> {
    MODELS
        .iter()
        .find(|m| m.name == name || m.aliases.contains(&name))
}

/// Training context assumed for a base no row names (a job's base is always a known
/// snapshot, so this is a guard, not a rule): the conservative 65,536 of section 6.
pub(crate) const FALLBACK_TRAINING_CONTEXT: u64 = 65_536;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_resolve_to_their_snapshot_and_names_are_unique() {
        assert_eq!(
            find("gpt-3.5-turbo").map(|m| m.name),
            Some("gpt-3.5-turbo-0125")
        );
        assert_eq!(
            find("gpt-4o-mini").map(|m| m.name),
            Some("gpt-4o-mini-2024-07-18")
        );
        assert!(find("gpt-nonexistent").is_none());
        let mut names: Vec<&str> = MODELS
            .iter()
            .flat_map(|m| std::iter::once(m.name).chain(m.aliases.iter().copied()))
            .collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all, "a name or alias is listed twice");
    }

    #[test]
    fn encodings_follow_tiktoken() {
        for m in MODELS {
            let theirs = tiktoken_rs::bpe_for_model(m.name).expect("tiktoken knows the model");
            let ours = m.encoding.bpe();
            assert_eq!(
                theirs.encode_ordinary("fine-tuning émigré 漢字"),
                ours.encode_ordinary("fine-tuning émigré 漢字"),
                "{}",
                m.name
            );
        }
    }
}
