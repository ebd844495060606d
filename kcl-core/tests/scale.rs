//! The scale simulation, small (issue 15 §5; `cargo bench --bench fleet_scale` runs the large
//! one): 100 shards × 10 workers through a steady period, a rolling restart, a crash of 10 % of
//! the workers and a reshard doubling the shards, in virtual time.

use std::time::Duration;

use kcl_core::simulation::{ScaleConfig, simulate_scale};

#[test]
fn rolling_restart_crash_and_reshard_at_scale() {
    let config = ScaleConfig::new(100, 10).with_steady(Duration::from_secs(300));
    let phases = simulate_scale(&config);
    for p in &phases {
        println!(
            "{}: {:.1} RRU and {:.0} WCU per shard-hour, {} listings, balanced after {:?}, longest gap {:?}, {} moves",
            p.name,
            p.read_per_shard_hour(),
            p.write_per_shard_hour(),
            p.units.listings,
            p.balanced_after,
            p.longest_gap,
            p.moves
        );
    }
    let phase = |name: &str| phases.iter().find(|p| p.name == name).unwrap();
    let cycle = Duration::from_secs(10);
    // Steady: balanced, nothing moves, renewals cost a write per lease per renew interval.
    let steady = phase("steady");
    assert_eq!(steady.moves, 0, "a steady fleet moves nothing");
    assert!((1000.0..1200.0).contains(&steady.write_per_shard_hour()));
    // Rolling restart: planned hand-offs and steals leave no lease without a holder for a
    // second, and the fleet is balanced within two taker cycles of the last restart.
    let restart = phase("rolling restart");
    assert!(restart.longest_gap <= Duration::from_secs(1), "{restart:?}");
    assert!(
        restart.balanced_after.is_some_and(|d| d <= 2 * cycle),
        "{restart:?}"
    );
    // Crash: leases move within the failover time + 1 s, balanced within two cycles.
    let crash = phase("crash 10 %");
    assert!(crash.longest_gap <= Duration::from_secs(11), "{crash:?}");
    assert!(
        crash.balanced_after.is_some_and(|d| d <= 2 * cycle),
        "{crash:?}"
    );
    // Reshard: every child lease taken at once (no gap), balanced within two cycles.
    let reshard = phase("reshard ×2");
    assert_eq!(reshard.leases, 300);
    assert!(reshard.longest_gap <= Duration::from_secs(1), "{reshard:?}");
    assert!(
        reshard.balanced_after.is_some_and(|d| d <= 2 * cycle),
        "{reshard:?}"
    );
}

/// Issue 15 §3: the fleet's lease-table reads grow with shards, not shards × workers — ten
/// times the workers read about the same per shard-hour in the steady phase.
#[test]
fn steady_reads_do_not_grow_with_the_number_of_workers() {
    let steady = |workers: usize| {
        let config = ScaleConfig::new(400, workers)
            .with_steady(Duration::from_secs(600))
            .with_settle(Duration::from_secs(30));
        let phases = simulate_scale(&config);
        phases[0].read_per_shard_hour()
    };
    let (few, many) = (steady(4), steady(40));
    println!("steady RRU per shard-hour: {few:.1} at 4 workers, {many:.1} at 40");
    assert!(
        many <= few * 1.2 && few <= many * 1.2,
        "{few:.1} RRU/shard-hour at 4 workers, {many:.1} at 40"
    );
}
