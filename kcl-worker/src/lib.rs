//! `kcl-worker`: a container-ready kcl-rs worker — as a binary (the built-in ledger processor,
//! used by the chaos run) and as a library that runs *your* processor with everything else the
//! same: settings, health and metrics endpoints, CloudWatch, the SIGTERM drain, exit codes.
//!
//! ```no_run
//! use kcl_worker::kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
//!
//! struct Printer;
//!
//! #[kcl_worker::kcl_core::async_trait]
//! impl ShardRecordProcessor for Printer {
//!     async fn process_records(&mut self, input: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
//!         for r in input.records {
//!             println!("{}", String::from_utf8_lossy(&r.data));
//!         }
//!         input.checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     kcl_worker::main(|_: &ShardInfo| Printer)
//! }
//! ```
//!
//! Configuration comes from an optional TOML file (`KCL_WORKER_CONFIG_FILE`) overridden by
//! `KCL_WORKER_*` environment variables (see `config.rs`; e.g. `KCL_WORKER_APPLICATION`,
//! `KCL_WORKER_STREAMS=a,b`, `KCL_WORKER_KINESIS_ENDPOINT`, `KCL_WORKER_RETRIEVAL=fanout`).
//! Logs are JSON lines on stdout. `/healthz`, `/readyz` and `/metrics` (Prometheus) are served on
//! `http_addr`; CloudWatch gets the same metrics at `metrics_level`. SIGTERM or SIGINT drains: no
//! new leases, processors checkpoint, leases are released for others to take at once, metrics are
//! flushed — within `shutdown_deadline_secs`. Signal handlers come first, so a signal during the
//! start-up checks exits 0 (no lease was held yet).
//!
//! Exit codes (sysexits): 0 drained cleanly (or stopped during start-up); 64 invalid configuration; 66 a stream does not
//! exist (at start, or deleted while running); 69 an endpoint unreachable at start-up; 70 an
//! internal error; 73 the ledger file cannot be opened; 75 the drain missed its deadline (leases
//! left to expire); 77 credentials missing or rejected.

// docs.rs (nightly, `--cfg docsrs`) marks items behind a feature with a badge.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod http;
mod ledger;
pub mod multilang;
mod runtime;

use std::process::ExitCode;
use std::sync::Arc;

pub use config::{ConfigError, Settings};
/// Re-exported, so a worker binary needs one dependency.
pub use kcl_core;
use kcl_core::processor::ShardRecordProcessorFactory;
pub use runtime::Exit;
use runtime::Processors;

/// The whole `main` of a worker binary running `factory`'s processors: loads the settings (the
/// file named by `KCL_WORKER_CONFIG_FILE`, then `KCL_WORKER_*`; exit 64 when they are invalid),
/// starts logging and a multi-threaded runtime, runs until SIGTERM/SIGINT (then drains) or until
/// the scheduler ends, and returns the exit code.
pub fn main(factory: impl ShardRecordProcessorFactory) -> ExitCode {
    main_with(Processors::Factory(Arc::new(factory)))
}

/// The built-in worker: the ledger processor (see the binary).
#[doc(hidden)]
pub fn ledger_main() -> ExitCode {
    main_with(Processors::Ledger)
}

/// MultiLang mode, the Java MultiLangDaemon's replacement: runs each shard's processor as a
/// child process speaking the KCL MultiLang protocol, configured by the daemon's properties
/// file (`KCL_WORKER_*` variables override it). Returns the exit code.
pub fn multilang_main(properties: &std::path::Path) -> ExitCode {
    let program = program_name();
    let from = match multilang::properties::load(properties) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{program}: {}: {e}", properties.display());
            return Exit::Usage.into();
        }
    };
    let settings = match config::load_over(Some(&from.toml)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{program}: {e}");
            return Exit::Usage.into();
        }
    };
    runtime::init_logs(settings.json_logs);
    for note in &from.notes {
        tracing::info!("{note}");
    }
    if !from.ignored.is_empty() {
        tracing::warn!(keys = ?from.ignored, "properties with no effect in kcl-rs (its defaults apply)");
    }
    block_on(runtime::run(
        settings,
        Processors::MultiLang(Arc::new(from.multilang)),
    ))
}

/// Loads the settings from the file and the environment, as [`main`] does.
pub fn load_settings() -> Result<Settings, ConfigError> {
    config::load()
}

/// Runs a worker with `settings` and `factory`'s processors on the current runtime, for
/// binaries that build their own runtime or logging: the same checks, endpoints, drain and
/// exit codes as [`main`].
pub async fn run(settings: Settings, factory: impl ShardRecordProcessorFactory) -> Exit {
    runtime::run(settings, Processors::Factory(Arc::new(factory))).await
}

fn program_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "kcl-worker".into())
}

fn main_with(processors: Processors) -> ExitCode {
    let settings = match config::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", program_name());
            return Exit::Usage.into();
        }
    };
    runtime::init_logs(settings.json_logs);
    block_on(runtime::run(settings, processors))
}

fn block_on(run: impl std::future::Future<Output = Exit>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run).into(),
        Err(e) => {
            eprintln!("{}: cannot start the runtime: {e}", program_name());
            Exit::Software.into()
        }
    }
}
