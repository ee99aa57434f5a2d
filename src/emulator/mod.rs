//! The OpenAI-compatible emulator used by tests and `--emulator`. Being written in this session.
