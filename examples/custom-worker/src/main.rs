//! Your own processor under the kcl-worker runtime: the same settings (`KCL_WORKER_*`), health
//! and metrics endpoints, SIGTERM drain and exit codes as `kcl-worker`, with this processor.
//! It appends each record, upper-cased, to the file named by `CUSTOM_WORKER_OUTPUT` (or prints
//! it), then checkpoints.

use std::io::Write;

use kcl_worker::kcl_core::processor::{
    ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
};

struct Uppercase {
    shard: String,
}

#[kcl_worker::kcl_core::async_trait]
impl ShardRecordProcessor for Uppercase {
    async fn process_records(
        &mut self,
        input: ProcessRecordsInput<'_>,
    ) -> Result<(), ProcessorError> {
        let mut out = String::new();
        for r in input.records {
            let text = String::from_utf8_lossy(&r.data).to_uppercase();
            out.push_str(&format!("{} {} {text}\n", self.shard, r.sequence_number));
        }
        match std::env::var_os("CUSTOM_WORKER_OUTPUT") {
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?
                .write_all(out.as_bytes())?,
            None => print!("{out}"),
        }
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    kcl_worker::main(|info: &ShardInfo| Uppercase {
        shard: info.shard_id.to_string(),
    })
}
