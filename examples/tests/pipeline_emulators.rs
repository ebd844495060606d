//! The pipeline example on the emulators (issue 12's acceptance program): every record put is
//! either flushed by the sink or in the dead-letter queue, calls are grouped by the batching
//! window, and checkpoints come from the flusher's handle.

use kcl_examples::pipeline::{Endpoints, run};
use kcl_tests::emulator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_example_flushes_dead_letters_and_checkpoints_from_its_flusher() {
    kcl_tests::init_logging();
    let (Some(kinesis), Some(dynamodb), Some(sqs)) = (
        emulator("KCL_KINESIS_ENDPOINT"),
        emulator("KCL_DYNAMODB_ENDPOINT"),
        emulator("KCL_SQS_ENDPOINT"),
    ) else {
        return;
    };
    let summary = run(
        &Endpoints {
            kinesis,
            dynamodb,
            sqs,
        },
        500,
    )
    .await
    .unwrap();
    assert_eq!(summary.put, 500);
    // Nothing lost: each record is in the sink or the dead-letter queue (a malformed record's
    // batch-mates are dead-lettered with it).
    assert!(
        summary.flushed + summary.dead_lettered >= 500,
        "{summary:?}"
    );
    assert!(
        summary.dead_lettered >= 2,
        "two malformed records: {summary:?}"
    );
    assert!(summary.largest_call <= 100, "{summary:?}");
    assert!(
        summary.largest_call > 40,
        "calls accumulate across 40-record reads: {summary:?}"
    );
    assert!(summary.handle_checkpoints > 0, "{summary:?}");
}
