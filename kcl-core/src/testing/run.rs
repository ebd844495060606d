//! Running a scheduler in a test until something holds.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::scheduler::{RunReport, Scheduler, SchedulerError};

/// Why [`run_until`] gave up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunUntilError {
    /// The condition did not hold within the time given (the scheduler was stopped).
    #[error("the condition did not hold within {0:?}")]
    TimedOut(Duration),
    /// The scheduler stopped on its own, with an error.
    #[error("the scheduler failed: {0}")]
    Failed(#[from] SchedulerError),
    /// The scheduler stopped on its own before the condition held.
    #[error("the scheduler stopped before the condition held")]
    Stopped(RunReport),
}

/// Runs `scheduler` until `done()` holds (checked every 50 ms of tokio time), then shuts it
/// down gracefully and returns its report. Works under a paused clock: the checks advance
/// virtual time.
pub async fn run_until(
    scheduler: Scheduler,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<RunReport, RunUntilError> {
    let stop = CancellationToken::new();
    let mut run = tokio::spawn(scheduler.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + within;
    let held = loop {
        if done() {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::select! {
            finished = &mut run => {
                let report = finished.expect("the scheduler task panicked")?;
                return if done() { Ok(report) } else { Err(RunUntilError::Stopped(report)) };
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    };
    stop.cancel();
    let report = run.await.expect("the scheduler task panicked")?;
    if held {
        Ok(report)
    } else {
        Err(RunUntilError::TimedOut(within))
    }
}
