//! `Scheduler::run_until_signal`: SIGTERM shuts the scheduler down gracefully (its own test
//! binary, since the signal goes to the whole process; real time, since the signal is real).

use std::sync::Arc;
use std::time::Duration;

use kcl_core::engine::InMemoryKinesis;
use kcl_core::lease::InMemoryLeaseStore;
use kcl_core::model::InitialPosition;
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use kcl_core::scheduler::SchedulerBuilder;

struct Quiet;

#[kcl_core::async_trait]
impl ShardRecordProcessor for Quiet {
    async fn process_records(&mut self, _: ProcessRecordsInput<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_stops_the_scheduler_gracefully() {
    let kinesis = InMemoryKinesis::new();
    let stream = kinesis.create_stream("s", 1).unwrap();
    let store = Arc::new(InMemoryLeaseStore::new());
    let scheduler = SchedulerBuilder::new(stream, "app")
        .lease_store(store.clone())
        .kinesis(Arc::new(kinesis))
        .initial_position(InitialPosition::TrimHorizon)
        .processor_factory(|_: &ShardInfo| Quiet)
        .build()
        .unwrap();
    let run = tokio::spawn(scheduler.run_until_signal());
    // Wait until the lease is held (the signal handlers are installed before the run starts).
    for _ in 0..500 {
        if store.snapshot().iter().any(|l| l.owner.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        store.snapshot().iter().any(|l| l.owner.is_some()),
        "lease taken"
    );
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::TERM)
        .expect("SIGTERM sent to this process");
    let report = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("stopped within the shutdown timeout")
        .unwrap()
        .unwrap();
    assert_eq!(report.end, kcl_core::scheduler::RunEnd::ShutdownRequested);
    assert!(
        store.snapshot().iter().all(|l| l.owner.is_none()),
        "leases released"
    );
}
