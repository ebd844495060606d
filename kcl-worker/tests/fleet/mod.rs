//! A fleet of `kcl-worker` processes on the emulators, for the chaos run and the gap run: start,
//! signal and restart workers by slot, produce keyed records (some as KPL aggregates), read the
//! workers' ledgers.

// Each test binary that includes this module uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kcl_core::aggregation::Aggregator;

pub(crate) struct Slot {
    pub(crate) child: Option<Child>,
    pub(crate) incarnation: u32,
}

pub(crate) struct Run {
    pub(crate) app: String,
    pub(crate) stream: String,
    pub(crate) dir: PathBuf,
    pub(crate) kinesis: String,
    pub(crate) dynamo: String,
    pub(crate) slots: Vec<Slot>,
    /// Ledger files of killed incarnations.
    pub(crate) killed: BTreeSet<PathBuf>,
    pub(crate) ports: Vec<u16>,
    /// `KCL_WORKER_*` settings every worker gets besides the fixed ones.
    pub(crate) settings: Vec<(&'static str, String)>,
}

impl Drop for Run {
    /// A failed run must not leave worker processes behind.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Run {
    /// `workers` slots, none started, each with its own free HTTP port; `settings` are
    /// `KCL_WORKER_*` values (without the prefix) every worker gets.
    pub(crate) fn new(
        app: String,
        stream: &str,
        dir: &Path,
        (kinesis, dynamo): (&str, &str),
        workers: usize,
        settings: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            app,
            stream: stream.to_string(),
            dir: dir.to_path_buf(),
            kinesis: kinesis.to_string(),
            dynamo: dynamo.to_string(),
            slots: (0..workers)
                .map(|_| Slot {
                    child: None,
                    incarnation: 0,
                })
                .collect(),
            killed: BTreeSet::new(),
            settings,
            ports: (0..workers)
                .map(|_| {
                    std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .map(|a| a.port())
                        .expect("a free port")
                })
                .collect(),
        }
    }

    /// A fixed port per slot, so the test can probe the worker's HTTP endpoints.
    pub(crate) fn http_port(&self, slot: usize) -> u16 {
        self.ports[slot]
    }

    pub(crate) fn worker_id(slot: usize) -> String {
        format!("worker-{slot}")
    }

    pub(crate) fn ledger(&self, slot: usize, incarnation: u32) -> PathBuf {
        self.dir.join(format!("ledger-{slot}-{incarnation}.log"))
    }

    pub(crate) fn start(&mut self, slot: usize) {
        let incarnation = self.slots[slot].incarnation + 1;
        let log =
            std::fs::File::create(self.dir.join(format!("worker-{slot}-{incarnation}.jsonl")))
                .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kcl-worker"))
            .env("KCL_WORKER_APPLICATION", &self.app)
            .env("KCL_WORKER_STREAMS", &self.stream)
            .env("KCL_WORKER_WORKER_ID", Self::worker_id(slot))
            .env("KCL_WORKER_INITIAL_POSITION", "trim_horizon")
            .env("KCL_WORKER_KINESIS_ENDPOINT", &self.kinesis)
            .env("KCL_WORKER_DYNAMODB_ENDPOINT", &self.dynamo)
            .env("KCL_WORKER_METRICS_LEVEL", "NONE")
            .env(
                "KCL_WORKER_HTTP_ADDR",
                format!("127.0.0.1:{}", self.http_port(slot)),
            )
            .env("KCL_WORKER_SHARD_SYNC_SECS", "2")
            .env("KCL_WORKER_SHUTDOWN_DEADLINE_SECS", "15")
            .env("KCL_WORKER_LEDGER_FILE", self.ledger(slot, incarnation))
            .envs(
                self.settings
                    .iter()
                    .map(|(k, v)| (format!("KCL_WORKER_{k}"), v.clone())),
            )
            .stderr(Stdio::from(log.try_clone().expect("log handle")))
            .stdout(Stdio::from(log))
            .spawn()
            .expect("kcl-worker starts");
        self.slots[slot] = Slot {
            child: Some(child),
            incarnation,
        };
    }

    /// Waits until the worker in `slot` handles SIGTERM (its first act; before that, a SIGTERM
    /// kills it like any process without a handler). A SIGTERM during the start-up checks after
    /// that is tested in `startup.rs`.
    pub(crate) async fn wait_for_handlers(&self, slot: usize) {
        let log = self.dir.join(format!(
            "worker-{slot}-{}.jsonl",
            self.slots[slot].incarnation
        ));
        let by = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("signal handlers installed")
        {
            assert!(
                Instant::now() < by,
                "worker-{slot} never started: {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(crate) fn signal(child: &Child, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {}", child.id());
    }
}

/// Puts keyed records; every fourth key per round goes out as a KPL aggregate of three.
pub(crate) struct Producer {
    pub(crate) client: aws_sdk_kinesis::Client,
    pub(crate) stream: String,
    pub(crate) next: BTreeMap<String, u64>,
    pub(crate) round: usize,
}

impl Producer {
    pub(crate) async fn round(&mut self) {
        let mut entries = Vec::new();
        for k in 0..24 {
            let key = format!("key{k}");
            let count = if (k + self.round).is_multiple_of(4) {
                3
            } else {
                1
            };
            let mut agg = Aggregator::new();
            let mut single = None;
            for _ in 0..count {
                let next = self.next.entry(key.clone()).or_insert(0);
                let payload = format!("{key}#{next}");
                *next += 1;
                if count == 1 {
                    single = Some(payload.into_bytes());
                } else {
                    agg.add(&key, None, payload.into()).expect("fits");
                }
            }
            let data = single.unwrap_or_else(|| agg.flush().expect("aggregate").data.to_vec());
            entries.push(
                PutRecordsRequestEntry::builder()
                    .partition_key(&key)
                    .data(Blob::new(data))
                    .build()
                    .expect("entry"),
            );
        }
        self.round += 1;
        // Retry what failed (throttled) until Kinesis has every record, as a producer must.
        while !entries.is_empty() {
            let out = self
                .client
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries.clone()))
                .send()
                .await
                .expect("PutRecords");
            entries = out
                .records()
                .iter()
                .zip(entries)
                .filter(|(r, _)| r.error_code().is_some())
                .map(|(_, e)| e)
                .collect();
        }
    }

    pub(crate) fn sent(&self) -> u64 {
        self.next.values().sum()
    }
}

/// One ledger line: key, value, and the shard it came from.
pub(crate) type Line = (String, u64, String);

pub(crate) fn read_ledger(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            // worker stream shard sequence sub-sequence key data unix-ms
            let f: Vec<&str> = l.split(' ').collect();
            let (key, value) = f.get(6)?.split_once('#')?;
            Some((key.to_string(), value.parse().ok()?, f[2].to_string()))
        })
        .collect()
}

/// When each ledger line's batch was processed: (worker, shard, unix ms).
pub(crate) fn read_timed(path: &Path) -> Vec<(String, String, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f[0].to_string(),
                f.get(2)?.to_string(),
                f.get(7)?.parse().ok()?,
            ))
        })
        .collect()
}

/// The ledger files in `dir`, sorted.
pub(crate) fn ledger_paths(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ledger-"))
        })
        .collect();
    out.sort();
    out
}
