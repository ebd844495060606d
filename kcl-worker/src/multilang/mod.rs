//! MultiLang mode: each shard's processor is a child process speaking the KCL MultiLang
//! protocol (JSON lines over stdin/stdout), so applications written against `amazon-kclpy`
//! (Python) or `aws-kcl` (Node.js) run unchanged, without a JVM. Configured by the Java
//! MultiLangDaemon's properties file (`properties.rs`).
//!
//! Per shard: the child is started and `initialize`d on first use; each batch is a
//! `processRecords` whose `checkpoint` requests are carried out with the shard's checkpointer —
//! fenced by the lease like any other — and answered (an error named as the Java KCL names it:
//! `ShutdownException` once the lease is gone, `ThrottlingException`,
//! `KinesisClientLibDependencyException`, `IllegalArgumentException`, `InvalidStateException`)
//! before the child's `status`. Nothing is checkpointed that the child did not ask for. A child
//! that exits, does not answer within the deadline, or breaks the protocol fails the batch
//! (typed: [`ChildError`]); it is killed, and the failure policy decides — by default the batch
//! is retried on a new child, initialized at the shard's checkpoint.

mod child;
pub(crate) mod properties;
mod protocol;

use std::sync::Arc;
use std::time::Duration;

use kcl_core::checkpoint::{CheckpointError, Checkpointer};
use kcl_core::model::{ExtendedSequenceNumber, SequenceNumber};
use kcl_core::processor::{
    InitializationInput, LeaseLostInput, ProcessRecordsInput, ProcessorError, ShardInfo,
    ShardRecordProcessor,
};
use tracing::{debug, warn};

use child::Child;
pub(crate) use child::ChildCommand;
pub use child::ChildError;
use protocol::{FromChild, ToChild, WireRecord};

/// How children are run.
#[derive(Debug, Clone)]
pub(crate) struct MultiLangConfig {
    pub(crate) command: ChildCommand,
    /// How long the child may take to answer a message (`timeoutInSeconds`).
    pub(crate) timeout: Duration,
}

/// How long a child may take to exit after its input closes.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// The processor of one shard: drives its child.
pub(crate) struct MultiLangProcessor {
    config: Arc<MultiLangConfig>,
    shard: ShardInfo,
    child: Option<Child>,
}

impl MultiLangProcessor {
    pub(crate) fn new(config: Arc<MultiLangConfig>, shard: &ShardInfo) -> Self {
        Self {
            config,
            shard: shard.clone(),
            child: None,
        }
    }

    /// The running child, or a new one initialized at `checkpoint`.
    async fn child(&mut self, checkpoint: &ExtendedSequenceNumber) -> Result<(), ChildError> {
        if self.child.is_some() {
            return Ok(());
        }
        let mut child = Child::spawn(&self.config.command, self.shard.shard_id.as_str())?;
        let (sequence_number, sub_sequence_number) = protocol::position(checkpoint);
        let init = ToChild::Initialize {
            shard_id: self.shard.shard_id.as_str(),
            sequence_number,
            sub_sequence_number,
        };
        match exchange(&mut child, &init, "initialize", None, self.config.timeout).await {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                child.kill().await;
                Err(e)
            }
        }
    }

    /// Sends `message` to the running child and handles its answers; a failure kills it.
    async fn send(
        &mut self,
        message: &ToChild<'_>,
        action: &str,
        checkpointer: Option<&mut Checkpointer>,
    ) -> Result<(), ChildError> {
        let Some(child) = self.child.as_mut() else {
            return Ok(());
        };
        let result = exchange(child, message, action, checkpointer, self.config.timeout).await;
        if let Err(e) = &result {
            warn!(shard_id = %self.shard.shard_id, error = %kcl_core::error::Report(&e), "child failed; stopping it");
            if let Some(child) = self.child.take() {
                child.kill().await;
            }
        }
        result
    }

    async fn close(&mut self) {
        if let Some(child) = self.child.take() {
            child.close(EXIT_GRACE).await;
        }
    }
}

/// Writes `message`, then reads until the child's `status` for `action`, carrying out its
/// checkpoint requests with `checkpointer` (none: each is answered `InvalidStateException`).
async fn exchange(
    child: &mut Child,
    message: &ToChild<'_>,
    action: &str,
    mut checkpointer: Option<&mut Checkpointer>,
    timeout: Duration,
) -> Result<(), ChildError> {
    child.send(message).await?;
    loop {
        match child.next(action, timeout).await? {
            FromChild::Status { response_for } if response_for == action => return Ok(()),
            FromChild::Status { response_for } => {
                return Err(ChildError::Protocol(format!(
                    "status for {response_for:?} while waiting for {action:?}"
                )));
            }
            FromChild::Checkpoint {
                sequence_number,
                sub_sequence_number,
            } => {
                let error = match checkpointer.as_deref_mut() {
                    Some(c) => checkpoint(c, sequence_number.as_deref(), sub_sequence_number).await,
                    None => Some("InvalidStateException"),
                };
                child
                    .send(&ToChild::Checkpoint {
                        sequence_number,
                        sub_sequence_number,
                        error,
                    })
                    .await?;
            }
        }
    }
}

/// Carries out a checkpoint request; the Java exception name of its failure.
async fn checkpoint(
    checkpointer: &mut Checkpointer,
    sequence: Option<&str>,
    sub_sequence: Option<u64>,
) -> Option<&'static str> {
    let result = match sequence {
        None => checkpointer.checkpoint().await,
        Some(digits) => match SequenceNumber::new(digits) {
            Ok(seq) => {
                checkpointer
                    .checkpoint_at(seq, sub_sequence.unwrap_or(0))
                    .await
            }
            Err(_) => return Some("IllegalArgumentException"),
        },
    };
    match result {
        Ok(()) => None,
        Err(CheckpointError::LeaseLost { .. }) => Some("ShutdownException"),
        Err(e @ CheckpointError::Store(_)) if e.is_retryable() => Some("ThrottlingException"),
        Err(CheckpointError::Store(_)) => Some("KinesisClientLibDependencyException"),
        Err(
            CheckpointError::BeforeLastCheckpoint { .. }
            | CheckpointError::AfterLargestDelivered { .. },
        ) => Some("IllegalArgumentException"),
        Err(_) => Some("InvalidStateException"),
    }
}

#[kcl_core::async_trait]
impl ShardRecordProcessor for MultiLangProcessor {
    async fn initialize(&mut self, input: InitializationInput) -> Result<(), ProcessorError> {
        Ok(self.child(&input.checkpoint).await?)
    }

    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if input.records.is_empty() {
            return Ok(());
        }
        // After a failure the batch comes again: a new child resumes from the checkpoint, so
        // what the failed child checkpointed of the batch is not sent again.
        let from = input.checkpointer.last_checkpoint();
        self.child(&from).await?;
        let records: Vec<WireRecord> = input
            .records
            .iter()
            .filter(|r| {
                !matches!(from, ExtendedSequenceNumber::Sequence { .. })
                    || r.extended_sequence_number() > from
            })
            .map(WireRecord::from)
            .collect();
        if records.is_empty() {
            return Ok(());
        }
        let count = records.len();
        let message = ToChild::ProcessRecords {
            records,
            millis_behind_latest: input.millis_behind_latest,
        };
        self.send(&message, "processRecords", Some(input.checkpointer))
            .await?;
        // When the application finished a batch (scripts/multilang-handoff measures with it).
        debug!(shard_id = %self.shard.shard_id, records = count, "batch processed by the child");
        Ok(())
    }

    async fn lease_lost(&mut self, _input: LeaseLostInput) {
        let _ = self.send(&ToChild::LeaseLost {}, "leaseLost", None).await;
        self.close().await;
    }

    async fn shard_ended(&mut self, checkpointer: &mut Checkpointer) -> Result<(), ProcessorError> {
        self.child(&checkpointer.last_checkpoint()).await?;
        self.send(&ToChild::ShardEnded {}, "shardEnded", Some(checkpointer))
            .await?;
        self.close().await;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        // Only what the child asks for is checkpointed (no default checkpoint here).
        let result = self
            .send(
                &ToChild::ShutdownRequested {},
                "shutdownRequested",
                Some(checkpointer),
            )
            .await;
        self.close().await;
        Ok(result?)
    }
}
