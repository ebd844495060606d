//! Deaggregation throughput next to its physical limit (MD5 over the same bytes) and the Python
//! `aws-kinesis-agg` library, on the same vectors, in one run.
//!
//! `cargo bench -p kcl-core --bench deaggregation` (see the README). Python is taken from
//! `$KCL_PYTHON`, else `.tools/venv/bin/python` (installed by `scripts/tools.sh python-agg`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kcl_core::aggregation::{Deaggregator, HashRangePolicy};
use kcl_core::model::{HashKeyRange, Record, SequenceNumber};
use md5::{Digest, Md5};

const VECTORS: [&str; 2] = ["bench_100x1KiB", "bench_1000x100B"];
const SECONDS: f64 = 2.0;

struct Rate {
    mb_per_s: f64,
    records_per_s: f64,
}

const BATCH: usize = 16;

/// Calls `batch` (which runs `BATCH` operations on `users` user records of `bytes` bytes and
/// returns the time they took) for `SECONDS`, keeping the best of 5 slices to damp noise from
/// the other core.
fn measure(bytes: usize, users: usize, mut batch: impl FnMut() -> Duration) -> Rate {
    for _ in 0..4 {
        batch();
    }
    let slice = Duration::from_secs_f64(SECONDS / 5.0);
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (start, mut busy, mut n) = (Instant::now(), Duration::ZERO, 0u64);
        while start.elapsed() < slice {
            busy += batch();
            n += BATCH as u64;
        }
        best = best.min(busy.as_secs_f64() / n as f64);
    }
    Rate {
        mb_per_s: bytes as f64 / best / 1e6,
        records_per_s: users as f64 / best,
    }
}

/// Times `BATCH` runs of `f`.
fn timed(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..BATCH {
        f();
    }
    start.elapsed()
}

/// Times `BATCH` deaggregations; with `keep`, the records outlive the timing (their drop is the
/// processor's cost, as with criterion's `iter_with_large_drop`), else they are dropped inside it.
fn deaggregate_batch(
    d: &Deaggregator,
    record: &Record,
    outs: &mut [Vec<Record>],
    keep: bool,
) -> Duration {
    let start = Instant::now();
    for out in outs.iter_mut() {
        if !keep {
            out.clear();
        }
        black_box(d.deaggregate_into([record.clone()], out));
    }
    let t = start.elapsed();
    outs.iter_mut().for_each(Vec::clear);
    t
}

fn python() -> Option<PathBuf> {
    let candidate = std::env::var_os("KCL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/python"));
    candidate.exists().then_some(candidate)
}

fn python_rates(paths: &[PathBuf]) -> Option<Vec<Rate>> {
    let py = python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench_deagg.py");
    let out = Command::new(py)
        .arg(script)
        .arg(SECONDS.to_string())
        .args(paths)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            let s = v["seconds"].as_f64()?;
            Some(Rate {
                mb_per_s: v["bytes"].as_f64()? / s / 1e6,
                records_per_s: v["user_records"].as_f64()? / s,
            })
        })
        .collect()
}

/// The vector's aggregate as a Kinesis record, and its number of user records.
fn load(path: &Path) -> (Record, usize) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let record = Record {
        data: STANDARD
            .decode(v["aggregate"].as_str().unwrap())
            .unwrap()
            .into(),
        partition_key: "outer".into(),
        sequence_number: SequenceNumber::new(v["sequence_number"].as_str().unwrap()).unwrap(),
        sub_sequence_number: 0,
        explicit_hash_key: None,
        approximate_arrival_timestamp: SystemTime::UNIX_EPOCH,
        aggregated: false,
    };
    (record, v["expected"].as_array().unwrap().len())
}

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    // `DEAGG_PROFILE=<vector>`: only deaggregate that vector for 5 s, for `perf record`.
    if let Ok(name) = std::env::var("DEAGG_PROFILE") {
        let (record, users) = load(&dir.join(format!("{name}.json")));
        let d = Deaggregator::new();
        let mut out = Vec::with_capacity(users);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            out.clear();
            black_box(d.deaggregate_into([record.clone()], &mut out));
        }
        return;
    }
    let paths: Vec<PathBuf> = VECTORS
        .iter()
        .map(|n| dir.join(format!("{n}.json")))
        .collect();
    let py = python_rates(&paths);
    if py.is_none() {
        eprintln!(
            "(no Python with aws-kinesis-agg found: run scripts/tools.sh python-agg or set KCL_PYTHON)"
        );
    }
    println!(
        "{:<16} {:>10} {:>12} {:>11} {:>11} {:>9} {:>12} {:>7} {:>10} {:>9}",
        "vector",
        "deagg MB/s",
        "deagg rec/s",
        "+drop MB/s",
        "+range MB/s",
        "MD5 MB/s",
        "python rec/s",
        "vs MD5",
        "+drop/MD5",
        "vs python"
    );
    for (i, path) in paths.iter().enumerate() {
        let (record, users) = load(path);
        let data = record.data.clone();
        let plain = Deaggregator::new();
        let checked = Deaggregator::new()
            .with_hash_range_check(HashKeyRange::FULL, HashRangePolicy::DeliverAndWarn);
        let mut outs: Vec<Vec<Record>> = (0..BATCH).map(|_| Vec::with_capacity(users)).collect();
        let deagg = measure(data.len(), users, || {
            deaggregate_batch(&plain, &record, &mut outs, true)
        });
        let with_drop = measure(data.len(), users, || {
            deaggregate_batch(&plain, &record, &mut outs, false)
        });
        let ranged = measure(data.len(), users, || {
            deaggregate_batch(&checked, &record, &mut outs, true)
        });
        let md5 = measure(data.len(), users, || {
            timed(|| {
                black_box(Md5::digest(black_box(&data[..])));
            })
        });
        let py = py.as_ref().map(|p| &p[i]);
        println!(
            "{:<16} {:>10.0} {:>12.0} {:>11.0} {:>11.0} {:>9.0} {:>12} {:>6.0}% {:>9.0}% {:>9}",
            VECTORS[i],
            deagg.mb_per_s,
            deagg.records_per_s,
            with_drop.mb_per_s,
            ranged.mb_per_s,
            md5.mb_per_s,
            py.map_or("-".into(), |p| format!("{:.0}", p.records_per_s)),
            100.0 * deagg.mb_per_s / md5.mb_per_s,
            100.0 * with_drop.mb_per_s / md5.mb_per_s,
            py.map_or("-".into(), |p| format!(
                "{:.0}x",
                deagg.records_per_s / p.records_per_s
            )),
        );
    }
}
