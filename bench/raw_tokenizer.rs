//! The raw tokenizer alone: the ceiling the validator is measured against.
//!
//! `cargo run --release --example raw_tokenizer -- FILE`
//!
//! Reads FILE (chat JSONL), extracts every string value of every message with serde_json
//! (not timed), then times ONLY `o200k_base_singleton().count_ordinary(s)` over all of
//! them, with no caching, on 2 threads (`std::thread::scope`, the strings split in two
//! halves of equal bytes). Prints one JSON object shaped like `bench/cookbook.py`'s; MB/s
//! is the FILE's size over the timed seconds (1 MB = 1,000,000 bytes), so it compares with
//! the other methods. `total_tokens` adds the cookbook's overheads (3 per message, 1 per
//! `name`, 3 per example), so it must equal theirs.

use std::io::BufRead;
use std::time::Instant;

use serde_json::Value;

const THREADS: usize = 2;
const MB: f64 = 1_000_000.0;

fn main() {
    let path = match std::env::args().nth(1) {
        Some(p) => p,
        None => {
            eprintln!("usage: raw_tokenizer FILE");
            std::process::exit(2);
        }
    };
    let file_bytes = std::fs::metadata(&path)
        .unwrap_or_else(|e| die(&format!("cannot stat {path}: {e}")))
        .len();
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| die(&format!("cannot open {path}: {e}")));

    // Untimed: parse every line and keep the strings the cookbook encodes.
    let mut strings: Vec<String> = Vec::new();
    let mut examples = 0u64;
    let mut overhead = 0u64;
    for (i, line) in std::io::BufReader::with_capacity(1 << 20, file)
        .lines()
        .enumerate()
    {
        let line = line.unwrap_or_else(|e| die(&format!("reading {path}: {e}")));
        if line.trim().is_empty() {
            continue;
        }
        let mut value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| die(&format!("line {}: invalid JSON: {e}", i + 1)));
        let Some(Value::Array(messages)) = value.get_mut("messages").map(Value::take) else {
            die(&format!("line {}: no messages list", i + 1));
        };
        examples += 1;
        overhead += 3; // every reply is primed with <|start|>assistant<|message|>
        for message in messages {
            let Value::Object(message) = message else {
                continue;
            };
            overhead += 3; // tokens_per_message
            for (key, v) in message {
                if let Value::String(s) = v {
                    if key == "name" {
                        overhead += 1; // tokens_per_name
                    }
                    strings.push(s);
                }
            }
        }
    }
    let string_bytes: usize = strings.iter().map(String::len).sum();
    // Split at the string where the first half reaches half the bytes.
    let mut acc = 0usize;
    let split = strings
        .iter()
        .position(|s| {
            acc += s.len();
            acc * 2 >= string_bytes
        })
        .map_or(strings.len(), |i| i + 1);
    let (first, second) = strings.split_at(split);

    // Load the BPE before the clock starts (~0.2 s, paid once).
    let bpe = tiktoken_rs::o200k_base_singleton();

    // Timed: tokenizing only.
    let cpu_start = cpu_seconds();
    let machine_start = machine_ticks();
    let start = Instant::now();
    let counted: u64 = std::thread::scope(|s| {
        let halves: [&[String]; THREADS] = [first, second];
        let handles: Vec<_> = halves
            .into_iter()
            .map(|half| {
                s.spawn(move || {
                    half.iter()
                        .map(|text| bpe.count_ordinary(text) as u64)
                        .sum::<u64>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a tokenizer thread panicked"))
            .sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let others = others_load_pct(machine_start, machine_ticks(), cpu);

    let total_tokens = counted + overhead;
    let report = serde_json::json!({
        "method": "raw_tokenizer",
        "examples": examples,
        "total_tokens": total_tokens,
        "seconds": round3(seconds),
        "mb_per_s": round3(file_bytes as f64 / MB / seconds),
        "examples_per_s": round3(examples as f64 / seconds),
        "peak_rss_mb": round3(peak_rss_bytes() as f64 / MB),
        "cpu_seconds": round3(cpu),
        "others_load_pct": round3(others),
        "file_bytes": file_bytes,
        "strings": strings.len(),
        "string_bytes": string_bytes,
        "threads": THREADS,
    });
    println!("{report}");
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Peak resident set size (VmHWM) of this process, in bytes; 0 if unknown.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU time of this process so far (threads that have exited included).
fn cpu_seconds() -> f64 {
    const CLK_TCK: f64 = 100.0; // USER_HZ on Linux
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesised command name; utime and stime are fields 14, 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / CLK_TCK)
        })
        .unwrap_or(0.0)
}

/// (busy, total) jiffies of all CPUs from /proc/stat's `cpu` line.
fn machine_ticks() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0.0, 0.0);
    }
    let idle = v[3] + v[4];
    let total: f64 = v.iter().sum();
    (total - idle, total)
}

/// Share of all CPUs busy with other processes while we ran, in percent.
fn others_load_pct(start: (f64, f64), end: (f64, f64), own_cpu_seconds: f64) -> f64 {
    const CLK_TCK: f64 = 100.0;
    let total = end.1 - start.1;
    if total <= 0.0 {
        return 0.0;
    }
    let others = (end.0 - start.0) - own_cpu_seconds * CLK_TCK;
    (100.0 * others / total).clamp(0.0, 100.0)
}

fn die(message: &str) -> ! {
    eprintln!("raw_tokenizer: {message}");
    std::process::exit(1);
}
