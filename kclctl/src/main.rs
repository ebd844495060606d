//! `kclctl`: operate a kcl-rs (or Java KCL 2.x/3.x) application — see its leases, lineage and lag,
//! rewind or replay safely, release leases, and manage its lease table.
//!
//! Endpoints, region and credentials follow the worker's conventions: `--kinesis-endpoint`,
//! `--dynamodb-endpoint`, `--region` (or `KCL_WORKER_*`), credentials from the SDK's chain.

mod ops;
mod replay;
mod table;
mod view;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kcl_core::kinesis::DeadlineKinesis;
use kcl_core::lease::{DeadlineStore, LeaseStore};

/// Deadline of each single-item call: a hung call fails the command instead of hanging it.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of a whole-table listing (paged).
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

use clap::{Args, Parser, Subcommand};

/// Operate a Kinesis consumer application's lease table.
#[derive(Debug, Parser)]
#[command(name = "kclctl", version, about)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where the services are.
#[derive(Debug, Clone, Args)]
pub(crate) struct Conn {
    /// Kinesis endpoint URL (default: the region's).
    #[arg(long, global = true, env = "KCL_WORKER_KINESIS_ENDPOINT")]
    pub(crate) kinesis_endpoint: Option<String>,
    /// DynamoDB endpoint URL (default: the region's).
    #[arg(long, global = true, env = "KCL_WORKER_DYNAMODB_ENDPOINT")]
    pub(crate) dynamodb_endpoint: Option<String>,
    /// AWS region (default: the SDK's chain).
    #[arg(long, global = true, env = "KCL_WORKER_REGION")]
    pub(crate) region: Option<String>,
    /// Lease table (default: the application name).
    #[arg(long, global = true, env = "KCL_WORKER_LEASE_TABLE")]
    pub(crate) lease_table: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every lease: owner, checkpoint, counter, lineage, state.
    Leases(view::LeasesArgs),
    /// The shard tree with each lease's state.
    Lineage {
        /// Application name.
        app: String,
    },
    /// The leases view, refreshed live, with the fleet's balance per worker.
    Watch(view::WatchArgs),
    /// Move checkpoints, fenced by the lease counter (dry run unless --apply).
    Rewind(ops::RewindArgs),
    /// Release leases so workers take them again (asks first unless --yes).
    Release(ops::ReleaseArgs),
    /// Replay a stream between two bounds into a separate application, as JSON lines.
    Replay(replay::ReplayArgs),
    /// Show, create or upgrade the lease table.
    #[command(subcommand)]
    Table(table::TableCommand),
    /// Delete an application's lease table (asks first unless --yes).
    DeleteApp {
        /// Application name.
        app: String,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// Parses "4s", "500ms", "1m".
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KCL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let out = view::Output { json: cli.json };
    let result = match cli.command {
        Command::Leases(a) => view::leases(&cli.conn, &a, out).await,
        Command::Lineage { app } => view::lineage(&cli.conn, &app, out).await,
        Command::Watch(a) => view::watch(&cli.conn, &a, out).await,
        Command::Rewind(a) => ops::rewind(&cli.conn, &a, out).await,
        Command::Release(a) => ops::release(&cli.conn, &a, out).await,
        Command::Replay(a) => replay::replay(&cli.conn, &a).await,
        Command::Table(t) => table::run(&cli.conn, &t, out).await,
        Command::DeleteApp { app, yes } => ops::delete_app(&cli.conn, &app, yes, out).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kclctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Conn {
    pub(crate) fn table(&self, app: &str) -> String {
        self.lease_table.clone().unwrap_or_else(|| app.to_string())
    }

    async fn sdk(&self, endpoint: Option<&String>) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(e) = endpoint {
            loader = loader.endpoint_url(e);
        }
        if let Some(r) = &self.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        // Every SDK call under a deadline (retries included), also those of table management.
        loader = loader.timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        );
        loader.load().await
    }

    pub(crate) async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk(self.dynamodb_endpoint.as_ref()).await)
    }

    /// The lease table, every call under a deadline (as the worker's are).
    pub(crate) async fn store(&self, app: &str) -> Arc<dyn LeaseStore> {
        Arc::new(DeadlineStore::new(
            Arc::new(kcl_dynamo_leases::DynamoLeaseStore::new(
                self.dynamodb().await,
                self.table(app),
            )),
            CALL_TIMEOUT,
            LIST_TIMEOUT,
        ))
    }

    /// The lease table for table management (create, describe, upgrade).
    pub(crate) async fn table_admin(&self, app: &str) -> kcl_dynamo_leases::LeaseTable {
        kcl_dynamo_leases::LeaseTable::new(self.dynamodb().await, self.table(app))
    }

    /// DynamoDB Streams (on the DynamoDB endpoint), every call under a deadline.
    pub(crate) async fn dynamodb_streams(&self) -> DeadlineKinesis {
        let plane = kcl_dynamodb_streams::DynamoDbStreams::new(
            &self.sdk(self.dynamodb_endpoint.as_ref()).await,
        );
        DeadlineKinesis::new(Arc::new(plane), CALL_TIMEOUT)
    }

    /// Kinesis, every call under a deadline.
    pub(crate) async fn kinesis(&self) -> DeadlineKinesis {
        let kinesis = kcl_aws::AwsKinesis::new(&self.sdk(self.kinesis_endpoint.as_ref()).await);
        DeadlineKinesis::new(Arc::new(kinesis), CALL_TIMEOUT)
    }
}
