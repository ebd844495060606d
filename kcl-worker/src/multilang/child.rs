//! One child process speaking the MultiLang protocol: messages to its stdin, messages from its
//! stdout (what is not a protocol line is logged and skipped, as the Java daemon does), its
//! stderr into the worker's logs with the shard's fields.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, Command};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::protocol::{FromChild, Line, ToChild, parse};

/// How to start a shard's child: `executableName` split on whitespace, run in the directory of
/// the properties file.
#[derive(Debug, Clone)]
pub(crate) struct ChildCommand {
    pub(crate) program: String,
    pub(crate) args: Vec<String>,
    pub(crate) dir: PathBuf,
}

/// What went wrong with a child. Each is handled by the worker's failure policy: the batch is
/// retried on a new child that resumes from the checkpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChildError {
    /// The child could not be started.
    #[error("cannot start the child process `{program}`: {source}")]
    Spawn {
        /// The executable.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The child exited (or closed its stdout) while the worker waited for it.
    #[error(
        "the child process exited ({status}) while the worker waited for its {waiting_for} status"
    )]
    Exited {
        /// Its exit status, as far as known.
        status: String,
        /// The action it had not answered.
        waiting_for: String,
    },
    /// The child did not answer within the deadline (`timeoutInSeconds`).
    #[error("the child process did not answer {waiting_for} within {after:?}")]
    TimedOut {
        /// The action it had not answered.
        waiting_for: String,
        /// The deadline.
        after: Duration,
    },
    /// The child wrote a JSON object that is not a protocol message, or a status for another
    /// action.
    #[error("the child process broke the protocol: {0}")]
    Protocol(String),
    /// Writing to the child failed.
    #[error("cannot write to the child process: {0}")]
    Io(#[from] std::io::Error),
}

/// Logs the child's stderr line by line; text without a newline (kclpy's sample writes its log
/// that way) is logged once nothing more came for a moment, not held until the child exits.
async fn log_stderr(mut stderr: tokio::process::ChildStderr, shard_id: String, pid: u32) {
    use tokio::io::AsyncReadExt;
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let emit = |text: &[u8]| {
        let text = String::from_utf8_lossy(text);
        let text = text.trim_end();
        if !text.is_empty() {
            info!(shard_id = %shard_id, pid, "child: {text}");
        }
    };
    loop {
        let read = if pending.is_empty() {
            stderr.read(&mut buf).await
        } else {
            match tokio::time::timeout(Duration::from_millis(100), stderr.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => {
                    emit(&pending);
                    pending.clear();
                    continue;
                }
            }
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=at).collect();
            emit(&line);
        }
    }
    emit(&pending);
}

pub(crate) struct Child {
    process: tokio::process::Child,
    stdin: ChildStdin,
    messages: mpsc::UnboundedReceiver<Result<FromChild, String>>,
    shard: String,
}

impl Child {
    pub(crate) fn spawn(command: &ChildCommand, shard: &str) -> Result<Self, ChildError> {
        let mut process = Command::new(&command.program)
            .args(&command.args)
            .current_dir(&command.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ChildError::Spawn {
                program: command.program.clone(),
                source,
            })?;
        let pid = process.id().unwrap_or(0);
        let stdin = process.stdin.take().expect("stdin is piped");
        let stdout = process.stdout.take().expect("stdout is piped");
        let stderr = process.stderr.take().expect("stderr is piped");
        let (tx, messages) = mpsc::unbounded_channel();
        let shard_id = shard.to_string();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let sent = match parse(&line) {
                    Line::Message(m) => tx.send(Ok(m)),
                    Line::Invalid(e) => tx.send(Err(e)),
                    Line::Other => {
                        if !line.trim().is_empty() {
                            info!(shard_id = %shard_id, pid, line = %line, "child stdout (not a protocol message; skipped)");
                        }
                        Ok(())
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(log_stderr(stderr, shard.to_string(), pid));
        info!(shard_id = %shard, pid, program = %command.program, "child process started");
        Ok(Self {
            process,
            stdin,
            messages,
            shard: shard.to_string(),
        })
    }

    /// Writes one message line.
    pub(crate) async fn send(&mut self, message: &ToChild<'_>) -> Result<(), ChildError> {
        let mut line = serde_json::to_string(message).expect("messages serialize");
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }

    /// The next protocol message, within `deadline`.
    pub(crate) async fn next(
        &mut self,
        waiting_for: &str,
        deadline: Duration,
    ) -> Result<FromChild, ChildError> {
        match tokio::time::timeout(deadline, self.messages.recv()).await {
            Ok(Some(Ok(m))) => Ok(m),
            Ok(Some(Err(e))) => Err(ChildError::Protocol(e)),
            Ok(None) => {
                let status =
                    match tokio::time::timeout(Duration::from_secs(1), self.process.wait()).await {
                        Ok(Ok(s)) => s.to_string(),
                        _ => "stdout closed".into(),
                    };
                Err(ChildError::Exited {
                    status,
                    waiting_for: waiting_for.into(),
                })
            }
            Err(_) => Err(ChildError::TimedOut {
                waiting_for: waiting_for.into(),
                after: deadline,
            }),
        }
    }

    /// Closes its stdin (the libraries exit at end of input) and waits up to `grace` for it to
    /// exit, then kills it.
    pub(crate) async fn close(mut self, grace: Duration) {
        drop(self.stdin);
        match tokio::time::timeout(grace, self.process.wait()).await {
            Ok(Ok(status)) => info!(shard_id = %self.shard, %status, "child process exited"),
            _ => {
                warn!(shard_id = %self.shard, "child process did not exit after its input closed; killing it");
                let _ = self.process.kill().await;
            }
        }
    }

    /// Kills it at once (after a protocol failure).
    pub(crate) async fn kill(mut self) {
        let _ = self.process.kill().await;
    }
}
