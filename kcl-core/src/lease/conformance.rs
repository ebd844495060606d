//! The conformance suite every [`LeaseStore`] must pass: one async function per clause of the
//! trait's contract, plus races. Run it against a store with [`crate::lease_store_conformance`]:
//!
//! ```no_run
//! kcl_core::lease_store_conformance!(|| async {
//!     std::sync::Arc::new(kcl_core::lease::InMemoryLeaseStore::new()) as std::sync::Arc<dyn kcl_core::lease::LeaseStore>
//! });
//! ```
//!
//! The factory is called once per case and must return an empty store (or an
//! `Option<Arc<dyn LeaseStore>>`, `None` skipping the case — for backends whose emulator is not
//! running locally; CI must never skip). Each case becomes its own
//! `#[tokio::test]` (multi-threaded, so races are real), named after the case.

use std::sync::Arc;

use bytes::Bytes;

use super::{CheckpointUpdate, Lease, LeaseError, LeaseStore, MultiStreamKey, RenewalStamp};
use crate::model::{ExtendedSequenceNumber, HashKeyRange, SequenceNumber, ShardId};

/// Expands to one `#[tokio::test]` per conformance case for the store `factory` builds.
/// Requires `tokio` (with `macros` and `rt-multi-thread`) in the calling crate.
#[macro_export]
macro_rules! lease_store_conformance {
    ($factory:expr) => {
        $crate::lease_store_conformance!(@cases $factory;
            ensure_table_is_idempotent,
            create_if_absent_writes_once,
            get_missing_is_none,
            list_returns_every_lease,
            every_field_round_trips,
            renew_requires_counter_and_owner,
            take_sets_owner_and_counts_switches,
            take_with_stale_counter_fails,
            evict_releases_and_requires_owner,
            checkpoint_commits_and_prepares,
            checkpoint_by_former_owner_fails,
            hand_off_lets_previous_owner_finish,
            set_child_shards_keeps_counter,
            delete_is_conditional,
            missing_lease_is_not_found,
            sixteen_concurrent_takers_one_wins,
            renew_racing_steal_one_wins,
            counters_never_go_backwards,
            renewal_stamps_are_written_when_given,
            posts_reach_the_owner_through_renewals
        );
    };
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                // The factory returns a store, or `None` to skip (it says why).
                let store: ::std::option::Option<::std::sync::Arc<dyn $crate::lease::LeaseStore>> =
                    ($factory)().await.into();
                if let ::std::option::Option::Some(store) = store {
                    $crate::lease::conformance::$case(store).await;
                }
            }
        )*
    };
}

type Store = Arc<dyn LeaseStore>;

fn seq(n: u64, sub: u64) -> ExtendedSequenceNumber {
    ExtendedSequenceNumber::Sequence {
        sequence: SequenceNumber::new(&format!("4959{n:052}")).expect("digits"),
        sub_sequence: sub,
    }
}

async fn created(store: &Store, key: &str) -> Lease {
    let mut lease = Lease::new(&ShardId::new(key), ExtendedSequenceNumber::TrimHorizon);
    lease.key = key.to_string();
    store.create_if_absent(&lease).await.expect("create");
    store
        .get(key)
        .await
        .expect("get")
        .expect("created lease exists")
}

async fn owned(store: &Store, key: &str, owner: &str) -> Lease {
    let lease = created(store, key).await;
    store.take(&lease, owner).await.expect("take a fresh lease")
}

fn assert_condition_failed<T: std::fmt::Debug>(r: Result<T, LeaseError>, what: &str) {
    assert!(
        matches!(r, Err(LeaseError::ConditionFailed { .. })),
        "{what}: expected ConditionFailed, got {r:?}"
    );
}

/// `ensure_table` on a store that is ready changes nothing, twice over.
pub async fn ensure_table_is_idempotent(store: Store) {
    let before = created(&store, "ensure-table").await;
    store.ensure_table().await.expect("ensure_table");
    store.ensure_table().await.expect("ensure_table again");
    assert_eq!(store.get("ensure-table").await.unwrap(), Some(before));
}

/// `create_if_absent` writes once; a second create of the key fails and changes nothing.
pub async fn create_if_absent_writes_once(store: Store) {
    let lease = created(&store, "shardId-000000000001").await;
    assert_eq!(lease.owner, None);
    assert_eq!(lease.checkpoint, ExtendedSequenceNumber::TrimHorizon);
    let mut other = lease.clone();
    other.checkpoint = ExtendedSequenceNumber::Latest;
    assert_condition_failed(store.create_if_absent(&other).await, "second create");
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), lease);
}

/// `get` of an absent key is `None`.
pub async fn get_missing_is_none(store: Store) {
    assert_eq!(store.get("shardId-missing").await.unwrap(), None);
}

/// `list` returns every lease (more than one page of a paged backend), in key order.
pub async fn list_returns_every_lease(store: Store) {
    let keys: Vec<String> = (0..300).map(|i| format!("shardId-{i:012}")).collect();
    futures::future::join_all(keys.iter().map(|k| created(&store, k))).await;
    let listing = store.list().await.unwrap();
    assert!(listing.malformed.is_empty());
    let listed: Vec<&str> = listing.leases.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(listed, keys.iter().map(String::as_str).collect::<Vec<_>>());
    // An eventually consistent listing catches up within moments.
    let by = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let listing = store.list_eventually().await.unwrap();
        let listed: Vec<&str> = listing.leases.iter().map(|l| l.key.as_str()).collect();
        if listed == keys.iter().map(String::as_str).collect::<Vec<_>>() {
            break;
        }
        assert!(
            std::time::Instant::now() < by,
            "list_eventually never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Every attribute of the KCL schema survives a write and a read.
pub async fn every_field_round_trips(store: Store) {
    let key: MultiStreamKey = "123456789012:orders:1700000000:shardId-000000000007"
        .parse()
        .unwrap();
    let mut lease = Lease::new_multi_stream(key, seq(7, 3));
    lease.owner = Some("worker-a".into());
    lease.counter = 41;
    lease.pending_checkpoint = Some(seq(9, 0));
    lease.pending_checkpoint_state = Some(Bytes::from_static(b"\x00app\xffstate"));
    lease.owner_switches_since_checkpoint = 2;
    lease.parent_shard_ids = vec![ShardId::from_index(1), ShardId::from_index(2)];
    lease.child_shard_ids = vec![ShardId::from_index(8)];
    lease.hash_key_range = Some(HashKeyRange {
        start: 0,
        end: u128::MAX,
    });
    lease.checkpoint_owner = Some("worker-b".into());
    lease.throughput_kbps = Some(12.5);
    lease.renewed_at = Some(RenewalStamp::new(41, 1_765_000_000_123).stepped_down());
    lease.inbox = vec!["shardId-000000000002".into(), "shardId-000000000003".into()];
    store.create_if_absent(&lease).await.unwrap();
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), lease);
    for checkpoint in [
        ExtendedSequenceNumber::AtTimestamp,
        ExtendedSequenceNumber::Latest,
        ExtendedSequenceNumber::ShardEnd,
    ] {
        let mut l = Lease::new(
            &ShardId::new(format!("shardId-{}", checkpoint.checkpoint_value())),
            checkpoint,
        );
        l.key = format!("sentinel-{}", l.key);
        store.create_if_absent(&l).await.unwrap();
        assert_eq!(store.get(&l.key).await.unwrap().unwrap(), l);
    }
}

/// `renew` bumps the counter only for the current counter and owner.
pub async fn renew_requires_counter_and_owner(store: Store) {
    let lease = owned(&store, "shardId-r", "w1").await;
    let renewed = store.renew(&lease).await.unwrap();
    assert_eq!(renewed.counter, lease.counter + 1);
    assert_eq!(renewed.owner.as_deref(), Some("w1"));
    assert_condition_failed(store.renew(&lease).await, "renew with a stale counter");
    let mut other_owner = renewed.clone();
    other_owner.owner = Some("w2".into());
    assert_condition_failed(store.renew(&other_owner).await, "renew by another owner");
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), renewed);
    // A renewal carries the lease's throughput; one without leaves it as stored.
    let mut loaded = renewed.clone();
    loaded.throughput_kbps = Some(250.5);
    let renewed = store.renew(&loaded).await.unwrap();
    assert_eq!(renewed.throughput_kbps, Some(250.5));
    let mut unmeasured = renewed.clone();
    unmeasured.throughput_kbps = None;
    let renewed = store.renew(&unmeasured).await.unwrap();
    assert_eq!(renewed.throughput_kbps, Some(250.5));
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), renewed);
}

/// `take` sets the owner, bumps the counter, counts owner switches and clears checkpointOwner.
pub async fn take_sets_owner_and_counts_switches(store: Store) {
    let lease = created(&store, "shardId-t").await;
    let taken = store.take(&lease, "w1").await.unwrap();
    assert_eq!(
        (
            taken.owner.as_deref(),
            taken.counter,
            taken.owner_switches_since_checkpoint
        ),
        (Some("w1"), lease.counter + 1, 1)
    );
    let stolen = store.take(&taken, "w2").await.unwrap();
    assert_eq!(
        (
            stolen.owner.as_deref(),
            stolen.owner_switches_since_checkpoint
        ),
        (Some("w2"), 2)
    );
    let handed = store.hand_off(&stolen, "w3").await.unwrap();
    assert_eq!(handed.checkpoint_owner.as_deref(), Some("w2"));
    let retaken = store.take(&handed, "w3").await.unwrap();
    assert_eq!(retaken.checkpoint_owner, None);
    assert_eq!(
        retaken.owner_switches_since_checkpoint, 3,
        "taking a lease one owns is no switch"
    );
}

/// `take` with a stale counter fails and changes nothing.
pub async fn take_with_stale_counter_fails(store: Store) {
    let lease = owned(&store, "shardId-s", "w1").await;
    let renewed = store.renew(&lease).await.unwrap();
    assert_condition_failed(store.take(&lease, "w2").await, "take with a stale counter");
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), renewed);
}

/// `evict` removes the owner, only for the current counter and owner.
pub async fn evict_releases_and_requires_owner(store: Store) {
    let lease = owned(&store, "shardId-e", "w1").await;
    let mut wrong = lease.clone();
    wrong.owner = Some("w2".into());
    assert_condition_failed(store.evict(&wrong).await, "evict by another owner");
    let evicted = store.evict(&lease).await.unwrap();
    assert_eq!(
        (evicted.owner.clone(), evicted.counter),
        (None, lease.counter + 1)
    );
    assert_condition_failed(store.evict(&lease).await, "evict with a stale counter");
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), evicted);
}

/// A commit sets the checkpoint, clears the pending one and resets owner switches; a prepare
/// sets the pending checkpoint and state and leaves the checkpoint.
pub async fn checkpoint_commits_and_prepares(store: Store) {
    let lease = owned(&store, "shardId-c", "w1").await;
    let state = Bytes::from_static(b"two-phase");
    let prepared = store
        .checkpoint(
            &lease,
            CheckpointUpdate::Prepare {
                pending: seq(5, 1),
                state: Some(state.clone()),
            },
        )
        .await
        .unwrap();
    assert_eq!(prepared.checkpoint, ExtendedSequenceNumber::TrimHorizon);
    assert_eq!(
        (
            prepared.pending_checkpoint.clone(),
            prepared.pending_checkpoint_state.clone()
        ),
        (Some(seq(5, 1)), Some(state))
    );
    assert_eq!(prepared.counter, lease.counter + 1);
    let committed = store
        .checkpoint(&prepared, CheckpointUpdate::Commit(seq(5, 1)))
        .await
        .unwrap();
    assert_eq!(committed.checkpoint, seq(5, 1));
    assert_eq!(
        (
            committed.pending_checkpoint.clone(),
            committed.pending_checkpoint_state.clone()
        ),
        (None, None)
    );
    assert_eq!(
        (committed.owner_switches_since_checkpoint, committed.counter),
        (0, prepared.counter + 1)
    );
    let end = store
        .checkpoint(
            &committed,
            CheckpointUpdate::Commit(ExtendedSequenceNumber::ShardEnd),
        )
        .await
        .unwrap();
    assert!(end.is_shard_end());
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), end);
}

/// A worker that lost the lease cannot checkpoint.
pub async fn checkpoint_by_former_owner_fails(store: Store) {
    let lease = owned(&store, "shardId-f", "w1").await;
    let stolen = store.take(&lease, "w2").await.unwrap();
    assert_condition_failed(
        store
            .checkpoint(&lease, CheckpointUpdate::Commit(seq(1, 0)))
            .await,
        "former owner checkpoint",
    );
    let mut pretend = stolen.clone();
    pretend.owner = Some("w1".into());
    assert_condition_failed(
        store
            .checkpoint(&pretend, CheckpointUpdate::Commit(seq(1, 0)))
            .await,
        "checkpoint with another's counter",
    );
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), stolen);
}

/// A hand-off moves the lease; the previous owner's renew fails, its final checkpoint lands
/// through `finish_hand_off`, and the new owner's renewals are unaffected.
pub async fn hand_off_lets_previous_owner_finish(store: Store) {
    let lease = owned(&store, "shardId-h", "old").await;
    let handed = store.hand_off(&lease, "new").await.unwrap();
    assert_eq!(
        (handed.owner.as_deref(), handed.checkpoint_owner.as_deref()),
        (Some("new"), Some("old"))
    );
    assert_eq!(handed.counter, lease.counter + 1);
    assert_condition_failed(store.renew(&lease).await, "previous owner renew");
    assert_condition_failed(
        store.hand_off(&handed, "third").await,
        "second hand-off while one is in progress",
    );
    let renewed = store.renew(&handed).await.unwrap();
    assert_condition_failed(
        store.finish_hand_off(&lease.key, "someone", None).await,
        "finish by a stranger",
    );
    let finished = store
        .finish_hand_off(&lease.key, "old", Some(seq(3, 0)))
        .await
        .unwrap();
    assert_eq!(
        (
            finished.checkpoint.clone(),
            finished.checkpoint_owner.clone()
        ),
        (seq(3, 0), None)
    );
    assert_eq!(
        finished.counter, renewed.counter,
        "finishing leaves the counter to the new owner"
    );
    assert_eq!(finished.owner_switches_since_checkpoint, 0);
    store
        .renew(&finished)
        .await
        .expect("new owner keeps renewing");
    assert_condition_failed(
        store.finish_hand_off(&lease.key, "old", None).await,
        "finish twice",
    );
}

/// `set_child_shards` records children without touching the counter.
pub async fn set_child_shards_keeps_counter(store: Store) {
    let lease = owned(&store, "shardId-p", "w1").await;
    let children = [ShardId::from_index(5), ShardId::from_index(6)];
    let updated = store.set_child_shards(&lease.key, &children).await.unwrap();
    assert_eq!(updated.child_shard_ids, children.to_vec());
    assert_eq!(updated.counter, lease.counter);
    store
        .renew(&lease)
        .await
        .expect("owner's view is still current");
}

/// `delete` needs the current counter.
pub async fn delete_is_conditional(store: Store) {
    let lease = owned(&store, "shardId-d", "w1").await;
    let renewed = store.renew(&lease).await.unwrap();
    assert_condition_failed(store.delete(&lease).await, "delete with a stale counter");
    store.delete(&renewed).await.unwrap();
    assert_eq!(store.get(&lease.key).await.unwrap(), None);
}

/// Conditional writes on a missing lease are `NotFound` and create nothing.
pub async fn missing_lease_is_not_found(store: Store) {
    let mut ghost = Lease::new(
        &ShardId::new("shardId-ghost"),
        ExtendedSequenceNumber::TrimHorizon,
    );
    ghost.owner = Some("w1".into());
    let nf = |r: Result<Lease, LeaseError>, what: &str| {
        assert!(
            matches!(r, Err(LeaseError::NotFound { .. })),
            "{what}: expected NotFound, got {r:?}"
        )
    };
    nf(store.renew(&ghost).await, "renew");
    nf(store.take(&ghost, "w2").await, "take");
    nf(store.hand_off(&ghost, "w2").await, "hand_off");
    nf(
        store.finish_hand_off(&ghost.key, "w1", None).await,
        "finish_hand_off",
    );
    nf(store.evict(&ghost).await, "evict");
    let posted = store.post(&ghost.key, "w1", &["x".into()]).await;
    if store.capabilities().inboxes {
        assert!(
            matches!(posted, Err(LeaseError::NotFound { .. })),
            "post: {posted:?}"
        );
    } else {
        assert!(
            matches!(posted, Err(LeaseError::Unsupported { .. })),
            "post: {posted:?}"
        );
    }
    nf(
        store
            .checkpoint(&ghost, CheckpointUpdate::Commit(seq(1, 0)))
            .await,
        "checkpoint",
    );
    nf(
        store
            .set_child_shards(&ghost.key, &[ShardId::from_index(1)])
            .await,
        "set_child_shards",
    );
    assert!(
        matches!(store.delete(&ghost).await, Err(LeaseError::NotFound { .. })),
        "delete"
    );
    assert_eq!(store.get(&ghost.key).await.unwrap(), None);
    assert!(store.list().await.unwrap().leases.is_empty());
}

/// Sixteen workers take the same lease at once: exactly one wins.
pub async fn sixteen_concurrent_takers_one_wins(store: Store) {
    for round in 0..5 {
        let lease = created(&store, &format!("shardId-race-{round}")).await;
        let tasks: Vec<_> = (0..16)
            .map(|w| {
                let (store, lease) = (store.clone(), lease.clone());
                tokio::spawn(async move { store.take(&lease, &format!("w{w}")).await })
            })
            .collect();
        let results: Vec<_> = futures::future::join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(
            results
                .iter()
                .all(|r| r.is_ok() || matches!(r, Err(LeaseError::ConditionFailed { .. })))
        );
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(&stored, winners[0]);
    }
}

/// The owner's renew races another worker's steal: exactly one wins, and the store agrees.
pub async fn renew_racing_steal_one_wins(store: Store) {
    for round in 0..10 {
        let lease = owned(&store, &format!("shardId-rs-{round}"), "owner").await;
        let (s1, s2, l1, l2) = (store.clone(), store.clone(), lease.clone(), lease.clone());
        let renew = tokio::spawn(async move { s1.renew(&l1).await });
        let steal = tokio::spawn(async move { s2.take(&l2, "thief").await });
        let (renew, steal) = (renew.await.unwrap(), steal.await.unwrap());
        assert!(
            renew.is_ok() != steal.is_ok(),
            "round {round}: renew {renew:?}, steal {steal:?}"
        );
        let stored = store.get(&lease.key).await.unwrap().unwrap();
        let winner = renew.or(steal).unwrap();
        assert_eq!(stored, winner);
        assert_eq!(stored.counter, lease.counter + 1);
    }
}

/// Under concurrent renewals, takes and checkpoints, every reader sees each lease's counter only
/// grow.
pub async fn counters_never_go_backwards(store: Store) {
    let keys: Vec<String> = (0..4).map(|i| format!("shardId-mono-{i}")).collect();
    for k in &keys {
        owned(&store, k, "w0").await;
    }
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (store, keys) = (store.clone(), keys.clone());
            tokio::spawn(async move {
                for i in 0..40 {
                    let key = &keys[(w + i) % keys.len()];
                    let Some(lease) = store.get(key).await.unwrap() else {
                        continue;
                    };
                    let _ = match i % 3 {
                        0 => store.renew(&lease).await,
                        1 => store.take(&lease, &format!("w{w}")).await,
                        _ => {
                            store
                                .checkpoint(&lease, CheckpointUpdate::Commit(seq(i as u64, 0)))
                                .await
                        }
                    };
                }
            })
        })
        .collect();
    let reader = {
        let (store, keys) = (store.clone(), keys.clone());
        tokio::spawn(async move {
            let mut last = vec![0u64; keys.len()];
            for _ in 0..60 {
                for l in store.list().await.unwrap().leases {
                    let i = keys.iter().position(|k| *k == l.key).unwrap();
                    assert!(
                        l.counter >= last[i],
                        "{} went from {} to {}",
                        l.key,
                        last[i],
                        l.counter
                    );
                    last[i] = l.counter;
                }
                tokio::task::yield_now().await;
            }
        })
    };
    for w in writers {
        w.await.unwrap();
    }
    reader.await.unwrap();
}

/// `renew`, `take`, `hand_off` and `checkpoint` write the caller's renewal stamp when it brings
/// one, and leave the stored one otherwise.
pub async fn renewal_stamps_are_written_when_given(store: Store) {
    let stamp = |counter, unix_millis| Some(RenewalStamp::new(counter, unix_millis));
    let lease = created(&store, "shardId-stamp").await;
    let mut taking = lease.clone();
    taking.renewed_at = stamp(lease.counter + 1, 1_000);
    let taken = store.take(&taking, "w1").await.unwrap();
    assert_eq!(taken.renewed_at, stamp(taken.counter, 1_000));
    let mut renewing = taken.clone();
    renewing.renewed_at = stamp(taken.counter + 1, 2_000);
    let renewed = store.renew(&renewing).await.unwrap();
    assert_eq!(renewed.renewed_at, stamp(renewed.counter, 2_000));
    let mut checkpointing = renewed.clone();
    checkpointing.renewed_at = stamp(renewed.counter + 1, 3_000);
    let checkpointed = store
        .checkpoint(&checkpointing, CheckpointUpdate::Commit(seq(5, 0)))
        .await
        .unwrap();
    assert_eq!(checkpointed.renewed_at, stamp(checkpointed.counter, 3_000));
    let mut stealing = checkpointed.clone();
    stealing.renewed_at = stamp(checkpointed.counter + 1, 3_500);
    let stolen = store.hand_off(&stealing, "w2").await.unwrap();
    assert_eq!(stolen.renewed_at, stamp(stolen.counter, 3_500));
    let checkpointed = store.finish_hand_off(&lease.key, "w1", None).await.unwrap();
    // A write without a stamp (a Java KCL worker's) leaves the old one, now behind the counter.
    let mut plain = checkpointed.clone();
    plain.renewed_at = None;
    let renewed = store.renew(&plain).await.unwrap();
    assert_eq!(renewed.renewed_at, stamp(checkpointed.counter, 3_500));
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), renewed);
}

/// `post` adds to the inbox of the owner's lease without moving the counter; a renewal removes
/// exactly the entries its caller saw; posts to a lease of another owner fail. A store without
/// inboxes says so in its capabilities and refuses every post with `Unsupported`, writing
/// nothing.
pub async fn posts_reach_the_owner_through_renewals(store: Store) {
    let lease = owned(&store, "shardId-inbox", "w1").await;
    if !store.capabilities().inboxes {
        let refused = store.post(&lease.key, "w1", &["shardId-x".into()]).await;
        assert!(
            matches!(refused, Err(LeaseError::Unsupported { .. })),
            "a store without inboxes refuses posts as Unsupported: {refused:?}"
        );
        let after = store.get(&lease.key).await.unwrap().unwrap();
        assert_eq!(after, lease, "a refused post writes nothing");
        return;
    }
    assert_condition_failed(
        store.post(&lease.key, "w2", &["shardId-x".into()]).await,
        "post naming another owner",
    );
    store
        .post(&lease.key, "w1", &["shardId-b".into(), "shardId-a".into()])
        .await
        .unwrap();
    store
        .post(&lease.key, "w1", &["shardId-a".into()])
        .await
        .unwrap();
    let seen = store.renew(&lease).await.unwrap();
    assert_eq!(seen.counter, lease.counter + 1, "posting moved the counter");
    assert_eq!(
        seen.inbox,
        vec!["shardId-a".to_string(), "shardId-b".into()]
    );
    // Posted after the renewal that saw the others: kept by the renewal that clears them.
    store
        .post(&lease.key, "w1", &["shardId-c".into()])
        .await
        .unwrap();
    let cleared = store.renew(&seen).await.unwrap();
    assert_eq!(cleared.inbox, vec!["shardId-c".to_string()]);
    let empty = store.renew(&cleared).await.unwrap();
    assert!(empty.inbox.is_empty(), "{:?}", empty.inbox);
    assert_eq!(store.get(&lease.key).await.unwrap().unwrap(), empty);
}
