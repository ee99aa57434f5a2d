//! Reads a JSONL file once, in bounded batches, checks its lines on worker threads and
//! folds the results in file order. Memory is bounded by the batch queue, not the file.

use std::collections::HashMap;
use std::io::Read;

use sha2::{Digest, Sha256};

use super::check::{Example, LineFormat, check_line};
use super::problem::{Acceptance, Code, LineProblems, Problem, Role, Severity};
use super::tokens::{Counter, Encoding};
use crate::error::Error;

/// The target size of a batch of lines.
const BATCH_BYTES: usize = 1 << 20;
/// Bytes asked for per read call: a small file costs a small buffer.
const READ_BYTES: usize = 64 << 10;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A run of whole lines.
struct Batch {
    index: u64,
    first_line: u64,
    data: Vec<u8>,
    /// True when the file's last line had no newline and is the tail of this batch.
    ends_without_newline: bool,
}

struct LineOutcome {
    line: u64,
    example: Option<Example>,
    problems: LineProblems,
}

struct BatchResult {
    index: u64,
    lines: Vec<LineOutcome>,
}

/// Collects problems for the report: keeps the first `cap` and counts every one.
pub(crate) struct Sink {
    pub(crate) listed: Vec<Problem>,
    pub(crate) cap: usize,
    pub(crate) truncated: bool,
    pub(crate) counts: HashMap<Code, u64>,
    /// Problems the caller accepted: still listed and counted by code, not as errors.
    pub(crate) accept: Vec<Acceptance>,
    pub(crate) accepted: u64,
}

impl Sink {
    pub(crate) fn new(cap: usize) -> Sink {
        Sink {
            listed: Vec::new(),
            cap,
            truncated: false,
            counts: HashMap::new(),
            accept: Vec::new(),
            accepted: 0,
        }
    }

    fn is_accepted(&mut self, dataset: Role, line: u64, code: Code) -> bool {
        let accepted = self.accept.iter().any(|a| a.covers(dataset, line, code));
        self.accepted += u64::from(accepted);
        accepted
    }

    pub(crate) fn add(
        &mut self,
        dataset: Role,
        line: u64,
        path: String,
        code: Code,
        message: String,
    ) {
        *self.counts.entry(code).or_default() += 1;
        let accepted = self.is_accepted(dataset, line, code);
        if self.listed.len() < self.cap {
            let line = u32::try_from(line).unwrap_or(u32::MAX);
            self.listed.push(Problem {
                dataset,
                line,
                path,
                code,
                severity: code.severity(),
                message,
                accepted,
            });
        } else {
            self.truncated = true;
        }
    }

    fn count_dropped(&mut self, dataset: Role, line: u64, code: Code) {
        *self.counts.entry(code).or_default() += 1;
        self.is_accepted(dataset, line, code);
        self.truncated = true;
    }

    /// Problems of this severity, accepted ones aside (only errors can be accepted).
    pub(crate) fn count(&self, severity: Severity) -> u64 {
        let all: u64 = self
            .counts
            .iter()
            .filter(|(c, _)| c.severity() == severity)
            .map(|(_, n)| n)
            .sum();
        match severity {
            Severity::Error => all - self.accepted,
            Severity::Warning => all,
        }
    }
}

/// Per-example figures of one file, in file order.
#[derive(Debug, Default)]
pub(crate) struct FileScan {
    pub(crate) sha256: String,
    pub(crate) size_bytes: u64,
    pub(crate) lines: u64,
    pub(crate) format: Option<LineFormat>,
    pub(crate) tokens: Vec<u64>,
    pub(crate) assistant_tokens: Vec<u64>,
    pub(crate) messages: Vec<u64>,
    pub(crate) over_context: u64,
    pub(crate) intents: HashMap<String, u64>,
    /// Example hash -> first line, for duplicate and overlap checks.
    pub(crate) hashes: HashMap<u128, u64>,
}

/// What a scan needs besides the bytes.
pub(crate) struct ScanContext<'a> {
    pub(crate) role: Role,
    pub(crate) encoding: Encoding,
    pub(crate) context_tokens: u64,
    pub(crate) threads: usize,
    /// The training file's hashes, when scanning the validation file.
    pub(crate) training_hashes: Option<&'a HashMap<u128, u64>>,
}

/// Scans one file. I/O errors abort; everything about the content becomes a problem.
pub(crate) fn scan(
    reader: &mut dyn Read,
    ctx: &ScanContext<'_>,
    sink: &mut Sink,
) -> Result<FileScan, Error> {
    let threads = ctx.threads.max(1);
    let line_cap = sink.cap.max(1);
    std::thread::scope(|s| {
        let (batch_tx, batch_rx) = crossbeam_channel::bounded::<Batch>(threads * 2);
        let (result_tx, result_rx) = crossbeam_channel::bounded::<BatchResult>(threads * 2);
        for _ in 0..threads {
            let batch_rx = batch_rx.clone();
            let result_tx = result_tx.clone();
            let encoding = ctx.encoding;
            s.spawn(move || {
                let mut counter = Counter::new(encoding);
                for batch in batch_rx {
                    let result = check_batch(batch, &mut counter, line_cap);
                    if result_tx.send(result).is_err() {
                        return;
                    }
                }
            });
        }
        drop(result_tx);
        drop(batch_rx);
        let folder = s.spawn(move || fold(result_rx, ctx, sink));
        let read = read_batches(reader, &batch_tx);
        drop(batch_tx);
        let mut scan = folder.join().expect("the fold thread does not panic");
        let (sha256, size_bytes, lines) = read?;
        scan.sha256 = sha256;
        scan.size_bytes = size_bytes;
        scan.lines = lines;
        Ok(scan)
    })
}

/// Reads `reader` into batches of whole lines; returns (sha256, size, lines).
fn read_batches(
    reader: &mut dyn Read,
    tx: &crossbeam_channel::Sender<Batch>,
) -> Result<(String, u64, u64), Error> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut lines = 0u64;
    let mut index = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH_BYTES * 2);
    let mut scanned = 0usize; // bytes of `buf` known to hold no newline
    loop {
        let start = buf.len();
        buf.resize(start + READ_BYTES, 0);
        let n = loop {
            match reader.read(&mut buf[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io(format!("reading the dataset failed: {e}"))),
            }
        };
        buf.truncate(start + n);
        hasher.update(&buf[start..]);
        size += n as u64;
        if n == 0 {
            if !buf.is_empty() {
                let first_line = lines + 1;
                let ends_without_newline = buf.last() != Some(&b'\n');
                lines += memchr::memchr_iter(b'\n', &buf).count() as u64
                    + u64::from(ends_without_newline);
                let batch = Batch {
                    index,
                    first_line,
                    data: buf,
                    ends_without_newline,
                };
                if tx.send(batch).is_err() {
                    break;
                }
            }
            break;
        }
        if buf.len() < BATCH_BYTES {
            continue;
        }
        let Some(last_nl) = memchr::memrchr(b'\n', &buf[scanned..]).map(|i| i + scanned) else {
            scanned = buf.len();
            continue;
        };
        let rest = buf.split_off(last_nl + 1);
        let first_line = lines + 1;
        lines += memchr::memchr_iter(b'\n', &buf).count() as u64;
        let batch = Batch {
            index,
            first_line,
            data: std::mem::replace(&mut buf, rest),
            ends_without_newline: false,
        };
        buf.reserve(BATCH_BYTES * 2);
        scanned = 0;
        index += 1;
        if tx.send(batch).is_err() {
            break;
        }
    }
    Ok((hex::encode(hasher.finalize()), size, lines))
}

fn check_batch(batch: Batch, counter: &mut Counter, line_cap: usize) -> BatchResult {
    let mut lines = Vec::new();
    let mut line = batch.first_line;
    let mut rest: &[u8] = &batch.data;
    while !rest.is_empty() {
        let (mut bytes, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let mut problems = LineProblems::new(line_cap);
        if bytes.starts_with(UTF8_BOM) {
            problems.push(
                "",
                Code::Utf8Bom,
                if line == 1 {
                    "the file starts with a UTF-8 byte-order mark (EF BB BF); save it as UTF-8 without BOM"
                } else {
                    "this line starts with a UTF-8 byte-order mark (EF BB BF), as when files are joined with `cat`; remove it"
                },
            );
            bytes = &bytes[UTF8_BOM.len()..];
        }
        let example = match utf16_bom(bytes) {
            Some(order) if line == 1 => {
                problems.push(
                    "",
                    Code::InvalidUtf8,
                    format!(
                        "the file is UTF-16 ({order} byte-order mark), not UTF-8; save it as UTF-8"
                    ),
                );
                None
            }
            _ => check_line(bytes, counter, &mut problems),
        };
        lines.push(LineOutcome {
            line,
            example,
            problems,
        });
        line += 1;
    }
    debug_assert!(batch.ends_without_newline || batch.data.last() == Some(&b'\n'));
    BatchResult {
        index: batch.index,
        lines,
    }
}

/// The byte order a UTF-16 byte-order mark at the start of `bytes` names.
fn utf16_bom(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xFE, ..] => Some("little-endian"),
        [0xFE, 0xFF, ..] => Some("big-endian"),
        _ => None,
    }
}

/// Folds batch results in file order into the file's figures and the problem sink.
fn fold(
    rx: crossbeam_channel::Receiver<BatchResult>,
    ctx: &ScanContext<'_>,
    sink: &mut Sink,
) -> FileScan {
    let mut scan = FileScan::default();
    let mut pending: HashMap<u64, BatchResult> = HashMap::new();
    let mut next = 0u64;
    for result in rx {
        pending.insert(result.index, result);
        while let Some(ready) = pending.remove(&next) {
            for outcome in ready.lines {
                fold_line(outcome, ctx, sink, &mut scan);
            }
            next += 1;
        }
    }
    scan
}

fn fold_line(outcome: LineOutcome, ctx: &ScanContext<'_>, sink: &mut Sink, scan: &mut FileScan) {
    let LineOutcome {
        line,
        example,
        problems,
    } = outcome;
    let role = ctx.role;
    for (path, code, message) in problems.items {
        sink.add(role, line, path, code, message);
    }
    for code in problems.dropped {
        sink.count_dropped(role, line, code);
    }
    let Some(ex) = example else { return };
    if ex.format != LineFormat::Unknown {
        match scan.format {
            None => scan.format = Some(ex.format),
            Some(f) if f != ex.format => sink.add(
                role,
                line,
                String::new(),
                Code::MixedFormat,
                format!(
                    "this line is {} but the file's first example is {}; one file holds one format",
                    name(ex.format),
                    name(f)
                ),
            ),
            Some(_) => {}
        }
    }
    if ex.tokens > ctx.context_tokens {
        scan.over_context += 1;
        sink.add(
            role,
            line,
            String::new(),
            Code::ExampleTooLong,
            format!(
                "{} tokens exceed the model's training context of {}; OpenAI truncates the end of the example",
                ex.tokens, ctx.context_tokens
            ),
        );
    }
    match scan.hashes.get(&ex.hash) {
        Some(first) => sink.add(
            role,
            line,
            String::new(),
            Code::DuplicateExample,
            format!("this example repeats line {first} exactly; duplicates weigh it twice"),
        ),
        None => {
            scan.hashes.insert(ex.hash, line);
        }
    }
    if let Some(training_line) = ctx.training_hashes.and_then(|h| h.get(&ex.hash)) {
        sink.add(
            role,
            line,
            String::new(),
            Code::ValidationOverlap,
            format!("this validation example is also training line {training_line}; validation loss on it means little"),
        );
    }
    if role == Role::Training {
        *scan
            .intents
            .entry(ex.intent.unwrap_or_default())
            .or_default() += 1;
    }
    scan.tokens.push(ex.tokens);
    scan.assistant_tokens.push(ex.assistant_tokens);
    scan.messages.push(ex.messages);
}

fn name(format: LineFormat) -> &'static str {
    match format {
        LineFormat::Chat => "a chat example",
        LineFormat::Preference => "a preference (DPO) example",
        LineFormat::Completion => "a prompt/completion example",
        LineFormat::Unknown => "an unknown format",
    }
}
