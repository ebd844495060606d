//! The scale simulation (issue 15 §5) and the same figures computed for the Java KCL.
//!
//! `cargo bench -p kcl-core --features testing --bench fleet_scale -- 1000x5 1000x50`
//! (shards × workers, any number of runs; default `1000x5 1000x50`). See the README.

use std::time::Instant;

use kcl_core::lease::Lease;
use kcl_core::model::{ExtendedSequenceNumber, HashKeyRange, ShardId};
use kcl_core::simulation::{ScaleConfig, item_bytes, simulate_scale};

/// Read units per shard-hour of a design where `listers` workers each scan the whole table
/// every `every`, eventually consistent or not, with items of `bytes`.
fn scan_cost(shards: usize, bytes: usize, listers: usize, every: f64, eventual: bool) -> f64 {
    let table = (shards * bytes).div_ceil(4096) as f64;
    let per_listing = if eventual { table / 2.0 } else { table };
    listers as f64 * 3600.0 / every * per_listing / shards as f64
}

fn main() {
    let runs: Vec<(usize, usize)> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            let (s, w) = a.split_once('x')?;
            Some((s.parse().ok()?, w.parse().ok()?))
        })
        .collect();
    let runs = if runs.is_empty() {
        vec![(1000, 5), (1000, 50)]
    } else {
        runs
    };
    // A representative KCL item (owner, 56-digit checkpoint, parent, hash range) for the
    // computed figures.
    let mut typical = Lease::new(&ShardId::from_index(12_345), ExtendedSequenceNumber::Latest);
    typical.owner = Some("worker-ip-10-0-12-34.ec2.internal-4f3c".into());
    typical.checkpoint = ExtendedSequenceNumber::Sequence {
        sequence: "49654123412341234123412341234123412341234123412341234123"
            .parse()
            .unwrap(),
        sub_sequence: 0,
    };
    typical.parent_shard_ids = vec![ShardId::from_index(6_172)];
    typical.hash_key_range = Some(HashKeyRange {
        start: 0,
        end: u128::MAX / 3,
    });
    typical.throughput_kbps = Some(12.5);
    let bytes = item_bytes(&typical);
    println!(
        "phase | shards | workers | RRU/shard-h | WCU/shard-h | listings/h | balanced after (taker cycles) | longest gap | moves | wall"
    );
    for (shards, workers) in runs {
        let started = Instant::now();
        let config = ScaleConfig::new(shards, workers);
        let reports = simulate_scale(&config);
        for r in &reports {
            println!(
                "{} | {shards} | {workers} | {:.1} | {:.0} | {:.0} | {} | {:.2} s | {} | {:.0} s",
                r.name,
                r.read_per_shard_hour(),
                r.write_per_shard_hour(),
                r.units.listings as f64 / (r.duration.as_secs_f64() / 3600.0),
                r.balanced_after
                    .map_or("not within the phase".into(), |d| format!(
                        "{:.0} s ({:.1})",
                        d.as_secs_f64(),
                        d.as_secs_f64() / 10.0
                    )),
                r.longest_gap.as_secs_f64(),
                r.moves,
                started.elapsed().as_secs_f64()
            );
        }
        // The Java KCL at the same failover time (10 s), computed from its documented intervals
        // with the same item size: 2.x scans on every worker every (F + 25 ms) × 2, eventually
        // consistent; 3.x scans on its leader every 2 × F for assignment (its workers' own-lease
        // queries on the owner index and its worker-metrics table come on top, not counted).
        let kcl2 = scan_cost(shards, bytes, workers, 20.05, true);
        let kcl3 = scan_cost(shards, bytes, 1, 20.0, true);
        let renewals = 3600.0 / 3.308 * bytes.div_ceil(1024) as f64;
        println!(
            "computed | {shards} | {workers} | KCL 2.x {kcl2:.1}, KCL 3.x leader scans {kcl3:.1} | renewals {renewals:.0} | KCL 2.x {:.0}, 3.x {:.0} | | | | ",
            workers as f64 * 3600.0 / 20.05,
            3600.0 / 20.0
        );
    }
}
