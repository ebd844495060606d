//! Reading the table: `kclctl leases`, `kclctl lineage`, `kclctl watch`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use comfy_table::{Cell, Color, Table, presets};
use kcl_core::kinesis::KinesisDataPlane;
use kcl_core::lease::{Lease, LeaseListing};
use kcl_core::model::{ExtendedSequenceNumber, StartingPosition, StreamIdentity};
use serde::Serialize;
use tokio::time::Instant;

use crate::Conn;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    pub(crate) json: bool,
}

impl Output {
    pub(crate) fn json(&self, value: &impl Serialize) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("plain data serializes")
        );
    }
}

/// `kclctl leases`.
#[derive(Debug, Args)]
pub(crate) struct LeasesArgs {
    /// Application name.
    pub(crate) app: String,
    /// Watch the counters this long to tell how long ago each last changed ("0s": one read).
    #[arg(long, default_value = "4s", value_parser = crate::duration)]
    pub(crate) observe: Duration,
    /// Also read MillisBehindLatest at each checkpoint (one GetRecords per lease).
    #[arg(long)]
    pub(crate) lag: bool,
    /// The stream of a single-stream application, a Kinesis stream name or ARN or a DynamoDB
    /// stream ARN (needed by --lag; multi-stream leases name their streams, the Java DynamoDB
    /// Streams adapter's included).
    #[arg(long)]
    pub(crate) stream: Option<String>,
}

/// `kclctl watch`.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) leases: LeasesArgs,
    /// Time between refreshes.
    #[arg(long, default_value = "2s", value_parser = crate::duration)]
    pub(crate) every: Duration,
    /// Stop after this many refreshes (default: until Ctrl-C).
    #[arg(long)]
    pub(crate) count: Option<u64>,
}

/// What a lease is doing, as the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum State {
    /// Processed to SHARD_END.
    Ended,
    /// A graceful hand-off: the previous owner (`checkpointOwner`) is finishing.
    HandingOff,
    /// A parent lease has not reached SHARD_END.
    WaitingOnParents,
    /// Nobody owns it.
    Unowned,
    /// Owned and processing.
    Processing,
}

impl State {
    fn label(self) -> &'static str {
        match self {
            Self::Ended => "ended",
            Self::HandingOff => "handing off",
            Self::WaitingOnParents => "waiting on parents",
            Self::Unowned => "unowned",
            Self::Processing => "processing",
        }
    }

    fn color(self) -> Color {
        match self {
            Self::Ended => Color::DarkGrey,
            Self::HandingOff => Color::Yellow,
            Self::WaitingOnParents => Color::Cyan,
            Self::Unowned => Color::Red,
            Self::Processing => Color::Green,
        }
    }
}

/// One lease as printed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub(crate) lease_key: String,
    /// `account:stream:creationEpoch` in multi-stream tables.
    pub(crate) stream: Option<String>,
    pub(crate) shard_id: String,
    pub(crate) owner: Option<String>,
    pub(crate) checkpoint: String,
    pub(crate) checkpoint_sub_sequence: u64,
    pub(crate) pending_checkpoint: Option<String>,
    pub(crate) counter: u64,
    pub(crate) parents: Vec<String>,
    pub(crate) children: Vec<String>,
    pub(crate) checkpoint_owner: Option<String>,
    pub(crate) state: State,
    /// Seconds since the counter was seen to change while observing; `None` without observing.
    pub(crate) counter_unchanged_secs: Option<f64>,
    /// Whether the counter did not change during the whole observation (then the figure is a
    /// lower bound).
    pub(crate) counter_unchanged_whole_observation: Option<bool>,
    /// MillisBehindLatest read at the checkpoint (`--lag`).
    pub(crate) millis_behind_latest: Option<u64>,
}

pub(crate) fn state(lease: &Lease, by_key: &BTreeMap<&str, &Lease>) -> State {
    if lease.is_shard_end() {
        State::Ended
    } else if lease.checkpoint_owner.is_some() {
        State::HandingOff
    } else if lease.parent_shard_ids.iter().any(|p| {
        by_key
            .get(lease.key_in_stream(p).as_str())
            .is_some_and(|parent| !parent.is_shard_end())
    }) {
        State::WaitingOnParents
    } else if lease.owner.is_none() {
        State::Unowned
    } else {
        State::Processing
    }
}

pub(crate) fn rows(leases: &[Lease]) -> Vec<Row> {
    let by_key: BTreeMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    leases
        .iter()
        .map(|l| Row {
            lease_key: l.key.clone(),
            stream: l.stream_identifier(),
            shard_id: l.shard_id().to_string(),
            owner: l.owner.clone(),
            checkpoint: match &l.checkpoint {
                ExtendedSequenceNumber::Sequence { sequence, .. } => sequence.to_string(),
                other => other.to_string(),
            },
            checkpoint_sub_sequence: l.checkpoint.sub_sequence(),
            pending_checkpoint: l.pending_checkpoint.as_ref().map(|p| p.to_string()),
            counter: l.counter,
            parents: l.parent_shard_ids.iter().map(|p| p.to_string()).collect(),
            children: l.child_shard_ids.iter().map(|c| c.to_string()).collect(),
            checkpoint_owner: l.checkpoint_owner.clone(),
            state: state(l, &by_key),
            counter_unchanged_secs: None,
            counter_unchanged_whole_observation: None,
            millis_behind_latest: None,
        })
        .collect()
}

/// Lists the table, failing with the table's name when it is not there.
pub(crate) async fn list(conn: &Conn, app: &str) -> Result<LeaseListing> {
    conn.store(app)
        .await
        .list()
        .await
        .with_context(|| format!("reading lease table {}", conn.table(app)))
}

/// Lists the table, watching the counters for `observe`: the last listing, with how long ago
/// each counter was seen to change.
async fn observed(conn: &Conn, app: &str, observe: Duration) -> Result<(LeaseListing, Vec<Row>)> {
    let start = Instant::now();
    let mut listing = list(conn, app).await?;
    if observe.is_zero() {
        let rows = rows(&listing.leases);
        return Ok((listing, rows));
    }
    let mut seen: BTreeMap<String, (u64, Option<Instant>)> = listing
        .leases
        .iter()
        .map(|l| (l.key.clone(), (l.counter, None)))
        .collect();
    while start.elapsed() < observe {
        tokio::time::sleep(Duration::from_millis(500).min(observe)).await;
        listing = list(conn, app).await?;
        let now = Instant::now();
        for l in &listing.leases {
            let e = seen.entry(l.key.clone()).or_insert((l.counter, Some(now)));
            if e.0 != l.counter {
                *e = (l.counter, Some(now));
            }
        }
    }
    let now = Instant::now();
    let mut rows = rows(&listing.leases);
    for r in &mut rows {
        let changed = seen.get(&r.lease_key).and_then(|(_, at)| *at);
        r.counter_unchanged_secs = Some(now.duration_since(changed.unwrap_or(start)).as_secs_f64());
        r.counter_unchanged_whole_observation = Some(changed.is_none());
    }
    Ok((listing, rows))
}

/// MillisBehindLatest at each lease's checkpoint.
async fn add_lag(conn: &Conn, args: &LeasesArgs, rows: &mut [Row], leases: &[Lease]) -> Result<()> {
    let kinesis = conn.kinesis().await;
    let dynamodb_streams = conn.dynamodb_streams().await;
    for (row, lease) in rows.iter_mut().zip(leases) {
        if lease.is_shard_end() {
            continue;
        }
        // A DynamoDB stream by its ARN (single-stream) or the Java adapter's stream name
        // (multi-stream leases); any other stream is a Kinesis stream.
        let stream = match (&row.stream, &args.stream) {
            (Some(id), _) => {
                let name = id.split(':').nth(1).unwrap_or(id);
                kcl_dynamodb_streams::stream_from_name(name)
                    .unwrap_or_else(|| StreamIdentity::from_name(name))
            }
            (None, Some(s)) if kcl_dynamodb_streams::is_stream_arn(s) => {
                kcl_dynamodb_streams::stream(s).map_err(|e| anyhow::anyhow!("{e}"))?
            }
            (None, Some(s)) => StreamIdentity::parse(s).map_err(|e| anyhow::anyhow!("{e}"))?,
            (None, None) => bail!("--lag needs --stream for a single-stream application"),
        };
        let plane = match stream.arn.as_deref() {
            Some(arn) if kcl_dynamodb_streams::is_stream_arn(arn) => &dynamodb_streams,
            _ => &kinesis,
        };
        let position = match &lease.checkpoint {
            ExtendedSequenceNumber::Sequence { sequence, .. } => {
                StartingPosition::AtSequenceNumber(sequence.clone())
            }
            ExtendedSequenceNumber::Latest => StartingPosition::Latest,
            _ => StartingPosition::TrimHorizon,
        };
        let shard = lease.shard_id();
        let iterator = plane
            .get_shard_iterator(&stream, &shard, &position)
            .await
            .with_context(|| format!("GetShardIterator for {shard}"))?;
        let out = plane
            .get_records(&iterator, 1)
            .await
            .with_context(|| format!("GetRecords for {shard}"))?;
        row.millis_behind_latest = out.millis_behind_latest;
    }
    Ok(())
}

#[derive(Serialize)]
struct LeasesJson<'a> {
    table: String,
    leases: &'a [Row],
    /// Rows of other kinds (KCL 3.x `entityType` other than LEASE), skipped.
    other_rows: usize,
    /// Items that are not valid leases.
    malformed: Vec<String>,
}

fn styled() -> bool {
    std::io::stdout().is_terminal()
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(if styled() {
        presets::UTF8_FULL_CONDENSED
    } else {
        presets::NOTHING
    });
    t.set_header(header.iter().map(Cell::new));
    t
}

fn lease_table(rows: &[Row]) -> Table {
    let multi = rows.iter().any(|r| r.stream.is_some());
    let observed = rows.iter().any(|r| r.counter_unchanged_secs.is_some());
    let lag = rows.iter().any(|r| r.millis_behind_latest.is_some());
    let mut header = vec![];
    if multi {
        header.push("STREAM");
    }
    header.extend([
        "SHARD",
        "OWNER",
        "CHECKPOINT",
        "SUB",
        "PENDING",
        "COUNTER",
        "PARENTS",
        "CHILDREN",
        "STATE",
    ]);
    if observed {
        header.push("UNCHANGED");
    }
    if lag {
        header.push("BEHIND");
    }
    let mut t = new_table(&header);
    for r in rows {
        let mut cells = vec![];
        if multi {
            cells.push(Cell::new(r.stream.as_deref().unwrap_or("-")));
        }
        let mut state = Cell::new(r.state.label());
        if styled() {
            state = state.fg(r.state.color());
        }
        cells.extend([
            Cell::new(&r.shard_id),
            Cell::new(r.owner.as_deref().unwrap_or("-")),
            Cell::new(&r.checkpoint),
            Cell::new(r.checkpoint_sub_sequence),
            Cell::new(r.pending_checkpoint.as_deref().unwrap_or("-")),
            Cell::new(r.counter),
            Cell::new(dash(&r.parents)),
            Cell::new(dash(&r.children)),
            state,
        ]);
        if observed {
            let secs = r.counter_unchanged_secs.unwrap_or_default();
            let more = if r.counter_unchanged_whole_observation == Some(true) {
                "≥"
            } else {
                ""
            };
            cells.push(Cell::new(format!("{more}{secs:.1}s")));
        }
        if lag {
            cells.push(Cell::new(
                r.millis_behind_latest
                    .map_or("-".to_string(), |m| format!("{m} ms")),
            ));
        }
        t.add_row(cells);
    }
    t
}

fn dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

async fn leases_rows(conn: &Conn, args: &LeasesArgs) -> Result<(LeaseListing, Vec<Row>)> {
    let (listing, mut rows) = observed(conn, &args.app, args.observe).await?;
    if args.lag {
        add_lag(conn, args, &mut rows, &listing.leases).await?;
    }
    Ok((listing, rows))
}

/// `kclctl leases APP`.
pub(crate) async fn leases(conn: &Conn, args: &LeasesArgs, out: Output) -> Result<()> {
    let (listing, rows) = leases_rows(conn, args).await?;
    print_leases(conn, &args.app, &listing, &rows, out);
    Ok(())
}

fn print_leases(conn: &Conn, app: &str, listing: &LeaseListing, rows: &[Row], out: Output) {
    if out.json {
        out.json(&LeasesJson {
            table: conn.table(app),
            leases: rows,
            other_rows: listing.other_entities,
            malformed: listing.malformed.iter().map(|e| e.to_string()).collect(),
        });
        return;
    }
    println!("{}", lease_table(rows));
    if listing.other_entities > 0 {
        println!(
            "({} rows that are not leases skipped)",
            listing.other_entities
        );
    }
    for bad in &listing.malformed {
        println!("malformed item: {bad}");
    }
}

/// Leases per worker (ended leases and leases waiting on parents are not load).
#[derive(Debug, Serialize)]
pub(crate) struct Balance {
    pub(crate) workers: BTreeMap<String, usize>,
    pub(crate) unowned: usize,
    pub(crate) max_minus_min: usize,
}

pub(crate) fn balance(rows: &[Row]) -> Balance {
    let mut workers: BTreeMap<String, usize> = BTreeMap::new();
    let mut unowned = 0;
    for r in rows {
        if matches!(r.state, State::Ended | State::WaitingOnParents) {
            continue;
        }
        match &r.owner {
            Some(o) => *workers.entry(o.clone()).or_default() += 1,
            None => unowned += 1,
        }
    }
    let max = workers.values().max().copied().unwrap_or(0);
    let min = workers.values().min().copied().unwrap_or(0);
    Balance {
        workers,
        unowned,
        max_minus_min: max - min,
    }
}

/// `kclctl watch APP`.
pub(crate) async fn watch(conn: &Conn, args: &WatchArgs, out: Output) -> Result<()> {
    let mut n = 0u64;
    loop {
        let (listing, rows) = leases_rows(conn, &args.leases).await?;
        let balance = balance(&rows);
        if out.json {
            // One JSON document per line: a stream a program can follow.
            println!(
                "{}",
                serde_json::json!({ "leases": rows, "balance": balance, "other_rows": listing.other_entities })
            );
        } else {
            if styled() {
                // Clear the screen and go home, so the view refreshes in place.
                print!("\x1b[2J\x1b[H");
            }
            println!(
                "{} — {} leases, refreshed every {}",
                conn.table(&args.leases.app),
                rows.len(),
                humantime::format_duration(args.every)
            );
            println!("{}", lease_table(&rows));
            let mut t = new_table(&["WORKER", "LEASES"]);
            for (w, c) in &balance.workers {
                t.add_row(vec![Cell::new(w), Cell::new(c)]);
            }
            t.add_row(vec![Cell::new("(unowned)"), Cell::new(balance.unowned)]);
            println!("{t}");
            println!("balance: max − min = {}", balance.max_minus_min);
        }
        n += 1;
        if args.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(args.every) => {}
        }
    }
}

/// A node of the shard tree.
#[derive(Debug, Serialize)]
pub(crate) struct Node {
    pub(crate) lease_key: String,
    pub(crate) shard_id: String,
    /// `None` when the table has no lease for the shard (cleaned up, or not created yet).
    pub(crate) state: Option<State>,
    pub(crate) owner: Option<String>,
    pub(crate) children: Vec<Node>,
}

/// The shard trees of the table: roots are leases with no parent lease in the table.
pub(crate) fn forest(leases: &[Lease]) -> Vec<Node> {
    let by_key: BTreeMap<&str, &Lease> = leases.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut children: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in leases {
        for p in &l.parent_shard_ids {
            children
                .entry(l.key_in_stream(p))
                .or_default()
                .insert(l.key.clone());
        }
        for c in &l.child_shard_ids {
            children
                .entry(l.key.clone())
                .or_default()
                .insert(l.key_in_stream(c));
        }
    }
    let roots = leases.iter().filter(|l| {
        !l.parent_shard_ids
            .iter()
            .any(|p| by_key.contains_key(l.key_in_stream(p).as_str()))
    });
    roots.map(|r| node(&r.key, &by_key, &children, 0)).collect()
}

fn node(
    key: &str,
    by_key: &BTreeMap<&str, &Lease>,
    children: &BTreeMap<String, BTreeSet<String>>,
    depth: usize,
) -> Node {
    let lease = by_key.get(key);
    Node {
        lease_key: key.to_string(),
        shard_id: lease.map_or_else(
            || key.rsplit(':').next().unwrap_or(key).to_string(),
            |l| l.shard_id().to_string(),
        ),
        state: lease.map(|l| state(l, by_key)),
        owner: lease.and_then(|l| l.owner.clone()),
        // Depth-bounded: a malformed table with a cycle prints a finite tree.
        children: if depth < 64 {
            children
                .get(key)
                .into_iter()
                .flatten()
                .map(|c| node(c, by_key, children, depth + 1))
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn render(node: &Node, prefix: &str, last: bool, root: bool, out: &mut String) {
    let state = match node.state {
        Some(s) => {
            if styled() {
                let code = match s {
                    State::Ended => "90",
                    State::HandingOff => "33",
                    State::WaitingOnParents => "36",
                    State::Unowned => "31",
                    State::Processing => "32",
                };
                format!("\x1b[{code}m{}\x1b[0m", s.label())
            } else {
                s.label().to_string()
            }
        }
        None => "(no lease)".to_string(),
    };
    let owner = node
        .owner
        .as_deref()
        .map(|o| format!("  {o}"))
        .unwrap_or_default();
    let branch = if root {
        ""
    } else if last {
        "└── "
    } else {
        "├── "
    };
    out.push_str(&format!(
        "{prefix}{branch}{}  {state}{owner}\n",
        node.lease_key
    ));
    let next = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (i, c) in node.children.iter().enumerate() {
        render(c, &next, i + 1 == node.children.len(), false, out);
    }
}

/// `kclctl lineage APP`.
pub(crate) async fn lineage(conn: &Conn, app: &str, out: Output) -> Result<()> {
    let listing = list(conn, app).await?;
    let trees = forest(&listing.leases);
    if out.json {
        out.json(&trees);
        return Ok(());
    }
    let mut text = String::new();
    for t in &trees {
        render(t, "", true, true, &mut text);
    }
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kcl_core::model::ShardId;

    fn lease(shard: u64, parents: &[u64], end: bool, owner: Option<&str>) -> Lease {
        let mut l = Lease::new(
            &ShardId::from_index(shard),
            if end {
                ExtendedSequenceNumber::ShardEnd
            } else {
                ExtendedSequenceNumber::TrimHorizon
            },
        );
        l.parent_shard_ids = parents.iter().map(|p| ShardId::from_index(*p)).collect();
        l.owner = owner.map(str::to_string);
        l
    }

    #[test]
    fn states_and_the_tree_of_a_split_then_merge() {
        let mut parent = lease(0, &[], true, None);
        parent.child_shard_ids = vec![ShardId::from_index(1), ShardId::from_index(2)];
        let leases = vec![
            parent,
            lease(1, &[0], false, Some("w1")),
            lease(2, &[0], false, None),
            lease(3, &[1, 2], false, Some("w2")),
        ];
        let r = rows(&leases);
        let states: Vec<State> = r.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                State::Ended,
                State::Processing,
                State::Unowned,
                State::WaitingOnParents
            ]
        );
        let trees = forest(&leases);
        assert_eq!(trees.len(), 1);
        assert_eq!(trees[0].children.len(), 2);
        assert_eq!(
            trees[0].children[0].children[0].shard_id,
            "shardId-000000000003"
        );
        let b = balance(&r);
        assert_eq!(b.workers.get("w1"), Some(&1));
        assert_eq!(b.workers.get("w2"), None, "a child waiting is not load");
        assert_eq!(b.unowned, 1);
    }
}
