//! `kclctl replay`: a bounded run into a separate application, printing every record as a JSON
//! line — a backfill or an incident replay that never touches the live application's leases.
//!
//! Each batch is written and flushed to stdout before it is checkpointed, so an interrupted
//! replay resumed with `--resume` repeats at most the batch in flight (at least once), and a
//! closed pipe (`kclctl replay ... | head`) stops the replay with only what was written
//! checkpointed.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use base64::Engine;
use clap::Args;
use kcl_core::model::{InitialPosition, StreamIdentity};
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::{RunEnd, SchedulerBuilder, StopAt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Conn;

/// `kclctl replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The application name of the replay (its own lease table; never the live application's).
    #[arg(long = "as")]
    app: String,
    /// The stream to read.
    #[arg(long)]
    stream: String,
    /// Where to start: `trim-horizon` or a time (RFC 3339 or epoch seconds).
    #[arg(long)]
    from: String,
    /// Where to stop: `tip` (what the stream held when the replay started; the default) or a
    /// time (records that arrived before it).
    #[arg(long, default_value = "tip")]
    until: String,
    /// Continue a replay whose table has leases already (otherwise refused, so a live
    /// application's table is never used by mistake).
    #[arg(long)]
    resume: bool,
    /// Print `data` as UTF-8 text (lossy) instead of base64.
    #[arg(long)]
    text: bool,
    /// Failover time of the replay's leases (more processes may share a replay).
    #[arg(long, default_value = "10s", value_parser = crate::duration)]
    failover: Duration,
}

/// One record as printed.
#[derive(Debug, Serialize)]
struct Line<'a> {
    stream: &'a str,
    shard_id: &'a str,
    sequence_number: String,
    sub_sequence_number: u64,
    partition_key: &'a str,
    /// Milliseconds since the epoch.
    approximate_arrival_timestamp: u128,
    data: String,
}

/// Shared by the replay's processors.
struct Sink {
    text: bool,
    records: AtomicU64,
    /// Cancelled when stdout is closed.
    stop: CancellationToken,
}

struct Printer {
    info: ShardInfo,
    sink: Arc<Sink>,
}

#[async_trait]
impl ShardRecordProcessor for Printer {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let mut lines = Vec::new();
        for r in input.records {
            let data = if self.sink.text {
                String::from_utf8_lossy(&r.data).into_owned()
            } else {
                base64::engine::general_purpose::STANDARD.encode(&r.data)
            };
            let line = Line {
                stream: &self.info.stream.name,
                shard_id: self.info.shard_id.as_str(),
                sequence_number: r.sequence_number.to_string(),
                sub_sequence_number: r.sub_sequence_number,
                partition_key: &r.partition_key,
                approximate_arrival_timestamp: r
                    .approximate_arrival_timestamp
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
                data,
            };
            serde_json::to_writer(&mut lines, &line).map_err(std::io::Error::other)?;
            lines.push(b'\n');
        }
        if !lines.is_empty() {
            // One locked write per batch: lines of different shards never interleave.
            let written = {
                let mut out = std::io::stdout().lock();
                out.write_all(&lines).and_then(|()| out.flush())
            };
            if let Err(e) = written {
                self.sink.stop.cancel();
                return Err(e.into());
            }
            self.sink
                .records
                .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    /// Every printed batch is checkpointed already; a batch that failed to print must not be.
    async fn shutdown_requested(
        &mut self,
        _checkpointer: &mut kcl_core::checkpoint::Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
}

fn bound(until: &str) -> Result<StopAt> {
    Ok(match until {
        "tip" => StopAt::TipAtStart,
        t => StopAt::Timestamp(crate::ops::timestamp(t).context("--until")?),
    })
}

fn start(from: &str) -> Result<InitialPosition> {
    Ok(match from {
        "trim-horizon" => InitialPosition::TrimHorizon,
        t => InitialPosition::AtTimestamp(crate::ops::timestamp(t).context("--from")?),
    })
}

/// Runs `kclctl replay`.
pub(crate) async fn replay(conn: &Conn, args: &ReplayArgs) -> Result<()> {
    let stream = StreamIdentity::parse(&args.stream)?;
    let position = start(&args.from)?;
    let stop_at = bound(&args.until)?;
    if let (InitialPosition::AtTimestamp(from), StopAt::Timestamp(until)) = (&position, &stop_at)
        && from >= until
    {
        bail!("--from must be before --until");
    }
    let admin = conn.table_admin(&args.app).await;
    let table = admin.name().to_string();
    admin
        .create_table_if_missing(
            &kcl_dynamo_leases::TableOptions::default().with_lease_owner_index(true),
        )
        .await
        .with_context(|| format!("creating table {table}"))?;
    let store = conn.store(&args.app).await;
    let existing = store
        .list()
        .await
        .with_context(|| format!("listing table {table}"))?;
    if !existing.leases.is_empty() && !args.resume {
        bail!(
            "table {table} has {} leases already: pass --resume to continue that replay, \
             or another --as name (a live application's table is never a replay's)",
            existing.leases.len()
        );
    }
    let sink = Arc::new(Sink {
        text: args.text,
        records: AtomicU64::new(0),
        stop: CancellationToken::new(),
    });
    let shared = sink.clone();
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let scheduler = SchedulerBuilder::new(stream, &args.app)
        .worker_id(format!("kcl-replay-{host}-{}", std::process::id()))
        .lease_store(store)
        .kinesis(Arc::new(conn.kinesis().await))
        .initial_position(position)
        .failover_time(args.failover)
        .stop_at(stop_at)
        .processor_factory(move |info: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
            Box::new(Printer {
                info: info.clone(),
                sink: shared.clone(),
            })
        })
        .build()?;
    let shutdown = sink.stop.clone();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let started = SystemTime::now();
    let report = scheduler.run(shutdown).await?;
    let records = sink.records.load(Ordering::Relaxed);
    let secs = started.elapsed().unwrap_or_default().as_secs_f64();
    match report.end {
        RunEnd::BoundReached => {
            eprintln!(
                "kclctl: replayed {records} records in {secs:.1} s; every shard reached the bound"
            );
            Ok(())
        }
        RunEnd::StreamDeleted => bail!("stream deleted after {records} records"),
        _ if sink.stop.is_cancelled() => {
            // Ctrl-C or a closed pipe: what was printed is checkpointed.
            eprintln!("kclctl: stopped after {records} records (resume with --resume)");
            Ok(())
        }
        other => bail!("replay ended early ({other:?}) after {records} records"),
    }
}
