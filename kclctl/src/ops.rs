//! Writing the table: `kclctl rewind`, `kclctl release`, `kclctl delete-app`.
//!
//! Every change is a conditional write on the lease counter as read, so it is safe while
//! workers run: a rewind takes the lease (the owner's next renewal fails, so it stops and its
//! later checkpoints fail), writes the new checkpoint, and releases the lease; the worker that
//! takes it next starts from the new position.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::{CheckpointUpdate, Lease, LeaseError, LeaseStore};
use kcl_core::model::{ExtendedSequenceNumber, SequenceNumber, StartingPosition, StreamIdentity};
use serde::Serialize;

use crate::Conn;
use crate::view::Output;

/// `kclctl rewind`.
#[derive(Debug, Args)]
pub(crate) struct RewindArgs {
    /// Application name.
    app: String,
    /// Shards to rewind (repeatable).
    #[arg(
        long = "shard",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    shards: Vec<String>,
    /// Every lease of the table.
    #[arg(long)]
    all: bool,
    /// `trim-horizon`, `latest`, `timestamp <RFC 3339 | epoch seconds>` or
    /// `sequence <N>[/<sub>]` (the checkpoint itself: processing resumes after it).
    #[arg(long, num_args = 1..=2, required = true, value_names = ["POSITION", "VALUE"])]
    to: Vec<String>,
    /// The stream of a single-stream application (needed by `--to timestamp`).
    #[arg(long)]
    stream: Option<String>,
    /// Write the changes (default: only show them).
    #[arg(long)]
    apply: bool,
    /// Also rewind leases at SHARD_END (their children may have started already).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Clone)]
enum Target {
    TrimHorizon,
    Latest,
    Timestamp(std::time::SystemTime),
    Sequence(ExtendedSequenceNumber),
}

fn target(to: &[String]) -> Result<Target> {
    let value = to.get(1).map(String::as_str);
    Ok(match (to[0].as_str(), value) {
        ("trim-horizon", None) => Target::TrimHorizon,
        ("latest", None) => Target::Latest,
        ("timestamp", Some(t)) => Target::Timestamp(timestamp(t)?),
        ("sequence", Some(s)) => {
            let (seq, sub) = s.split_once('/').unwrap_or((s, "0"));
            let sequence = SequenceNumber::new(seq).with_context(|| format!("sequence {seq:?}"))?;
            let sub_sequence = sub
                .parse()
                .with_context(|| format!("sub-sequence {sub:?}"))?;
            Target::Sequence(ExtendedSequenceNumber::Sequence {
                sequence,
                sub_sequence,
            })
        }
        _ => bail!(
            "--to takes trim-horizon, latest, timestamp <time> or sequence <N>[/<sub>], not {:?}",
            to.join(" ")
        ),
    })
}

/// RFC 3339 (`2026-12-02T09:00:00Z`) or seconds since the epoch (fractions allowed).
pub(crate) fn timestamp(t: &str) -> Result<std::time::SystemTime> {
    if let Ok(secs) = t.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(secs));
    }
    humantime::parse_rfc3339_weak(t)
        .with_context(|| format!("{t:?} is neither an RFC 3339 time nor seconds since the epoch"))
}

/// One lease's change.
#[derive(Debug, Serialize)]
struct Change {
    lease_key: String,
    owner: Option<String>,
    from: String,
    to: String,
    applied: bool,
    /// Why it was not applied, if it was not.
    skipped: Option<String>,
}

/// How far back the search for the last record before a rewind time may go: Kinesis keeps
/// records at most 365 days.
const MAX_LOOK_BACK: Duration = Duration::from_secs(366 * 24 * 3600);

/// The checkpoint that makes processing start at the first record at or after `t`.
///
/// Processing resumes after the checkpoint and a checkpoint must name a record that exists
/// (Kinesis refuses an iterator at a sequence number it does not hold), so this is the last
/// record that arrived before `t` — covering every sub-record of a KPL aggregate — or
/// TRIM_HORIZON when no record before `t` is left. Kinesis cannot read backwards: the search
/// reads forward from `t − 1 s`, then `t − 10 s`, ... (each step ten times further back) until
/// it sees a record before `t`, so it reads about ten times the records of the gap before the
/// last one.
async fn checkpoint_at(
    kinesis: &kcl_core::kinesis::DeadlineKinesis,
    stream: &StreamIdentity,
    lease: &Lease,
    t: SystemTime,
) -> Result<ExtendedSequenceNumber> {
    let shard = lease.shard_id();
    let mut back = Duration::from_secs(1);
    loop {
        let start = match t.checked_sub(back) {
            Some(from) if back < MAX_LOOK_BACK => StartingPosition::AtTimestamp(from),
            _ => StartingPosition::TrimHorizon,
        };
        if let Some(last) = last_before(kinesis, stream, &shard, &start, t).await? {
            return Ok(last);
        }
        if matches!(start, StartingPosition::TrimHorizon) {
            return Ok(ExtendedSequenceNumber::TrimHorizon);
        }
        back *= 10;
    }
}

/// Reads from `start` until a record at or after `t` (or the tip) and returns the position of
/// the last record before `t`, if any.
async fn last_before(
    kinesis: &kcl_core::kinesis::DeadlineKinesis,
    stream: &StreamIdentity,
    shard: &kcl_core::model::ShardId,
    start: &StartingPosition,
    t: SystemTime,
) -> Result<Option<ExtendedSequenceNumber>> {
    let mut iterator = kinesis
        .get_shard_iterator(stream, shard, start)
        .await
        .with_context(|| format!("GetShardIterator {start:?} for {shard}"))?;
    // The last record before `t` seen so far (its data is shared, not copied).
    let mut last: Option<kcl_core::model::Record> = None;
    // An aggregate arrived whole: its checkpoint covers its last sub-record.
    let position = |r: Option<kcl_core::model::Record>| {
        r.map(|r| ExtendedSequenceNumber::Sequence {
            sub_sequence: kcl_core::aggregation::unpack(&r)
                .map_or(0, |users| users.len().saturating_sub(1) as u64),
            sequence: r.sequence_number,
        })
    };
    // Empty responses are normal with data ahead: follow the iterator until the tip.
    for _ in 0..10_000 {
        let out = kinesis
            .get_records(&iterator, 1000)
            .await
            .with_context(|| format!("GetRecords for {shard}"))?;
        let empty = out.records.is_empty();
        for r in out.records {
            if r.approximate_arrival_timestamp >= t {
                return Ok(position(last));
            }
            last = Some(r);
        }
        match out.next_iterator {
            Some(next) if !(empty && out.millis_behind_latest == Some(0)) => iterator = next,
            _ => return Ok(position(last)),
        }
    }
    bail!("{shard}: no end of the shard after 10,000 GetRecords calls")
}

fn stream_for(lease: &Lease, given: Option<&String>) -> Result<StreamIdentity> {
    if let Some(m) = &lease.multi_stream {
        let name = m.stream_identifier.split(':').nth(1).unwrap_or_default();
        return Ok(StreamIdentity::from_name(name));
    }
    match given {
        Some(s) => StreamIdentity::parse(s).map_err(|e| anyhow::anyhow!("{e}")),
        None => bail!("--to timestamp needs --stream for a single-stream application"),
    }
}

/// The operator's owner id while it holds a lease for a moment.
fn operator() -> String {
    format!("kclctl-{}", std::process::id())
}

/// Fenced rewind of one lease: take it (the owner's renewals and checkpoints now fail), write
/// the checkpoint, release it. Retried when a worker's write lands between the read and ours.
async fn rewind_one(
    store: &dyn LeaseStore,
    key: &str,
    to: &ExtendedSequenceNumber,
) -> Result<(), LeaseError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let Some(lease) = store.get(key).await? else {
            return Err(LeaseError::NotFound {
                key: key.to_string(),
            });
        };
        let taken = match store.take(&lease, &operator()).await {
            Ok(t) => t,
            Err(e) if e.is_lost() && attempts < 10 => continue,
            Err(e) => return Err(e),
        };
        // From here the lease is ours: nothing else writes it until we release it (or, if this
        // process dies now, until it expires after the failover time).
        let written = store
            .checkpoint(&taken, CheckpointUpdate::Commit(to.clone()))
            .await?;
        store.evict(&written).await?;
        return Ok(());
    }
}

/// `kclctl rewind`.
pub(crate) async fn rewind(conn: &Conn, args: &RewindArgs, out: Output) -> Result<()> {
    let target = target(&args.to)?;
    let listing = crate::view::list(conn, &args.app).await?;
    let chosen: Vec<&Lease> = if args.all {
        listing.leases.iter().collect()
    } else {
        let mut v = Vec::new();
        for s in &args.shards {
            let lease = listing
                .leases
                .iter()
                .find(|l| &l.key == s || l.shard_id().as_str() == s)
                .with_context(|| format!("no lease for shard {s} in {}", conn.table(&args.app)))?;
            v.push(lease);
        }
        v
    };
    let kinesis = match target {
        Target::Timestamp(_) => Some(conn.kinesis().await),
        _ => None,
    };
    let store = conn.store(&args.app).await;
    let mut changes = Vec::new();
    for lease in chosen {
        let to = match &target {
            Target::TrimHorizon => ExtendedSequenceNumber::TrimHorizon,
            Target::Latest => ExtendedSequenceNumber::Latest,
            Target::Sequence(s) => s.clone(),
            Target::Timestamp(t) => {
                let stream = stream_for(lease, args.stream.as_ref())?;
                checkpoint_at(kinesis.as_ref().expect("made above"), &stream, lease, *t).await?
            }
        };
        let mut change = Change {
            lease_key: lease.key.clone(),
            owner: lease.owner.clone(),
            from: lease.checkpoint.to_string(),
            to: to.to_string(),
            applied: false,
            skipped: None,
        };
        if lease.is_shard_end() && !args.force {
            change.skipped = Some("at SHARD_END (use --force)".into());
        } else if args.apply {
            rewind_one(store.as_ref(), &lease.key, &to)
                .await
                .with_context(|| format!("rewinding {}", lease.key))?;
            change.applied = true;
        }
        changes.push(change);
    }
    if out.json {
        out.json(&changes);
    } else {
        for c in &changes {
            let what = match (&c.skipped, c.applied) {
                (Some(why), _) => format!("skipped: {why}"),
                (None, true) => "done".into(),
                (None, false) => "dry run".into(),
            };
            println!(
                "{}: {} -> {} (owner {}) [{what}]",
                c.lease_key,
                c.from,
                c.to,
                c.owner.as_deref().unwrap_or("-")
            );
        }
        if !args.apply {
            println!("dry run: nothing written; add --apply to rewind");
        }
    }
    Ok(())
}

/// Asks on the terminal; refuses when nobody can answer.
fn confirm(question: &str, yes: bool) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("{question} — refusing without --yes (stdin is not a terminal)");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        bail!("not confirmed")
    }
}

/// `kclctl release`.
#[derive(Debug, Args)]
pub(crate) struct ReleaseArgs {
    /// Application name.
    app: String,
    /// Shards to release (repeatable).
    #[arg(long = "shard")]
    shards: Vec<String>,
    /// Every lease this worker owns.
    #[arg(long)]
    worker: Option<String>,
    /// Every owned lease.
    #[arg(long)]
    all: bool,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

/// `kclctl release`.
pub(crate) async fn release(conn: &Conn, args: &ReleaseArgs, out: Output) -> Result<()> {
    if args.shards.is_empty() && args.worker.is_none() && !args.all {
        bail!("name leases to release: --shard, --worker or --all");
    }
    let listing = crate::view::list(conn, &args.app).await?;
    let chosen: Vec<&Lease> = listing
        .leases
        .iter()
        .filter(|l| l.owner.is_some())
        .filter(|l| {
            args.all
                || args
                    .shards
                    .iter()
                    .any(|s| &l.key == s || l.shard_id().as_str() == s)
                || args.worker.as_deref().is_some_and(|w| l.is_owned_by(w))
        })
        .collect();
    confirm(
        &format!(
            "release {} lease(s) of {}?",
            chosen.len(),
            conn.table(&args.app)
        ),
        args.yes,
    )?;
    let store = conn.store(&args.app).await;
    let mut released = Vec::new();
    for lease in chosen {
        // Conditional on the counter as read: a renewal in between makes us read again.
        let mut current = lease.clone();
        for _ in 0..10 {
            match store.evict(&current).await {
                Ok(_) => {
                    released
                        .push(serde_json::json!({"lease_key": lease.key, "owner": current.owner}));
                    break;
                }
                Err(e) if e.is_lost() => match store.get(&lease.key).await? {
                    Some(l) if l.owner.is_some() => current = l,
                    _ => break,
                },
                Err(e) => return Err(e).with_context(|| format!("releasing {}", lease.key)),
            }
        }
    }
    if out.json {
        out.json(&released);
    } else {
        for r in &released {
            println!(
                "released {} (was {})",
                r["lease_key"].as_str().unwrap_or_default(),
                r["owner"].as_str().unwrap_or("-")
            );
        }
    }
    Ok(())
}

/// `kclctl delete-app`: deletes the lease table.
pub(crate) async fn delete_app(conn: &Conn, app: &str, yes: bool, out: Output) -> Result<()> {
    let table = conn.table(app);
    confirm(
        &format!("delete lease table {table} and every checkpoint in it?"),
        yes,
    )?;
    let described = conn
        .table_admin(app)
        .await
        .describe_table()
        .await
        .with_context(|| format!("describing table {table}"))?
        .with_context(|| format!("lease table {table} does not exist"))?;
    if described.deletion_protection {
        bail!(
            "lease table {table} has deletion protection on; turn it off first \
             (aws dynamodb update-table --table-name {table} --no-deletion-protection-enabled)"
        );
    }
    let client = conn.dynamodb().await;
    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_dynamodb::error::ProvideErrorMetadata;
            anyhow::anyhow!(
                "deleting table {table}: {}: {}",
                e.code().unwrap_or("error"),
                e.message().unwrap_or(&e.to_string())
            )
        })?;
    if out.json {
        out.json(&serde_json::json!({"deleted_table": table}));
    } else {
        println!("deleted lease table {table}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        let t = |s: &str| target(&s.split(' ').map(String::from).collect::<Vec<_>>());
        assert!(matches!(t("trim-horizon").unwrap(), Target::TrimHorizon));
        assert!(matches!(t("latest").unwrap(), Target::Latest));
        assert!(matches!(
            t("timestamp 2026-12-02T09:00:00Z").unwrap(),
            Target::Timestamp(_)
        ));
        assert!(matches!(
            t("timestamp 1764666000.5").unwrap(),
            Target::Timestamp(_)
        ));
        match t("sequence 123/4").unwrap() {
            Target::Sequence(s) => assert_eq!(s.sub_sequence(), 4),
            other => panic!("{other:?}"),
        }
        assert!(t("sequence x").is_err());
        assert!(t("yesterday").is_err());
        assert!(t("latest 5").is_err());
    }
}
