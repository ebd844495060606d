//! The worker's processor: counts records and, when a ledger file is configured, appends one line
//! per record before checkpointing, so an outside check can prove what was processed.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kcl_core::checkpoint::Checkpointer;
use kcl_core::processor::{ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The ledger file, shared by a worker's processors. Each line:
/// `<worker> <stream> <shard> <sequence> <sub-sequence> <partition key> <data> <unix ms>`
/// (the last: when the batch was processed, for measuring hand-off gaps), written and flushed
/// before the batch is checkpointed.
#[derive(Debug, Clone)]
pub(crate) struct Ledger {
    file: Option<Arc<Mutex<tokio::fs::File>>>,
    worker: String,
}

impl Ledger {
    pub(crate) async fn open(path: Option<PathBuf>, worker: &str) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Arc::new(Mutex::new(
                tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .await?,
            ))),
            None => None,
        };
        Ok(Self {
            file,
            worker: worker.to_string(),
        })
    }
}

pub(crate) struct LedgerProcessor {
    pub(crate) info: ShardInfo,
    pub(crate) ledger: Ledger,
}

#[async_trait]
impl ShardRecordProcessor for LedgerProcessor {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        if let Some(file) = &self.ledger.file {
            let mut lines = String::new();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            for r in input.records {
                lines.push_str(&format!(
                    "{} {} {} {} {} {} {} {now}\n",
                    self.ledger.worker,
                    self.info.stream.name,
                    self.info.shard_id,
                    r.sequence_number,
                    r.sub_sequence_number,
                    r.partition_key,
                    String::from_utf8_lossy(&r.data).replace(['\n', ' '], "_"),
                ));
            }
            let mut f = file.lock().await;
            f.write_all(lines.as_bytes()).await?;
            f.flush().await?;
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &mut Checkpointer,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}
