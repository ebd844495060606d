//! The worker runtime: start-up checks, metrics, HTTP, the scheduler, the drain, exit codes.

use std::sync::Arc;
use std::time::Duration;

use kcl_aws::AwsKinesis;
use kcl_cloudwatch::{
    AwsCloudWatch, CloudWatchConfig, CloudWatchPublisher, CloudWatchRecorder, MetricsLevel,
};
use kcl_core::kinesis::{KinesisDataPlane, KinesisError};
use kcl_core::lease::{LeaseError, LeaseStore};
use kcl_core::processor::{ShardInfo, ShardRecordProcessorFactory};
use kcl_core::scheduler::{
    RemovedStreamPolicy, RetrievalMode, RunEnd, SchedulerBuilder, StreamConfig, StreamSet,
};
use kcl_dynamo_leases::{DynamoLeaseStore, TableOptions};
use kcl_efo::{AwsFanOut, FanOutConfig, FanOutRetrieval};
use metrics_exporter_prometheus::PrometheusBuilder;
use metrics_util::layers::FanoutBuilder;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Settings;
use crate::ledger::{Ledger, LedgerProcessor};

/// Why the worker exits, as an orchestrator reads it: the process exit code (sysexits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 0: drained cleanly (or stopped during start-up, holding no lease).
    Drained = 0,
    /// 64: invalid configuration.
    Usage = 64,
    /// 66: a stream does not exist (at start, or deleted while running).
    NoInput = 66,
    /// 69: an endpoint was unreachable at start-up.
    Unavailable = 69,
    /// 70: an internal error.
    Software = 70,
    /// 73: an output (the ledger file) cannot be created.
    CantCreate = 73,
    /// 75: the drain missed its deadline (leases left to expire).
    TempFail = 75,
    /// 77: credentials missing or rejected.
    NoPerm = 77,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        Self::from(e.code())
    }
}

/// Where a worker's processors come from.
pub(crate) enum Processors {
    /// The user's factory.
    Factory(Arc<dyn ShardRecordProcessorFactory>),
    /// The built-in ledger processor (the chaos run's), writing the configured ledger file.
    Ledger,
    /// A child process per shard, speaking the MultiLang protocol.
    MultiLang(Arc<crate::multilang::MultiLangConfig>),
}

pub(crate) fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KCL_WORKER_LOG")
        .unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_current_span(false)
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

async fn sdk(endpoint: Option<&String>, region: Option<&String>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.clone()));
    }
    loader.load().await
}

/// The current stream of a DynamoDB table (DescribeTable's `LatestStreamArn`), with retries
/// while DynamoDB is unreachable; a missing table, or one without a stream, exits 66.
async fn table_stream(
    sdk: &aws_config::SdkConfig,
    table: &str,
    deadline: Duration,
) -> Result<kcl_core::model::StreamIdentity, Exit> {
    let client = aws_sdk_dynamodb::Client::new(sdk);
    let described = with_retries(
        "describe table",
        |e: &KinesisError| kinesis_exit(e) == Exit::Unavailable,
        async || match tokio::time::timeout(
            deadline,
            client.describe_table().table_name(table).send(),
        )
        .await
        {
            Ok(answer) => answer.map_err(kcl_aws::sdk_error::map_err),
            Err(_) => Err(KinesisError::TimedOut {
                operation: "DescribeTable",
                after: deadline,
            }),
        },
    )
    .await;
    let out = match described {
        Ok(out) => out,
        Err(e) => {
            let exit = kinesis_exit(&e);
            match exit {
                Exit::NoInput => error!(table, "table not found: {e}"),
                _ => error!(table, "describing the table failed: {e}"),
            }
            return Err(exit);
        }
    };
    let disabled = out
        .table()
        .and_then(|t| t.stream_specification())
        .is_some_and(|spec| !spec.stream_enabled());
    if disabled {
        warn!(
            table,
            "the table's stream is disabled: its last stream is read to its end, and no change after the disabling is seen"
        );
    }
    let Some(arn) = out.table().and_then(|t| t.latest_stream_arn()) else {
        error!(
            table,
            "the table has no stream: enable one (StreamSpecification, NEW_AND_OLD_IMAGES for both images)"
        );
        return Err(Exit::NoInput);
    };
    kcl_dynamodb_streams::stream(arn).map_err(|e| {
        error!(
            table,
            "DynamoDB returned a stream ARN that does not parse: {e}"
        );
        Exit::Software
    })
}

/// Exit codes by error kind (never by error text).
fn kinesis_exit(e: &KinesisError) -> Exit {
    match e {
        KinesisError::ResourceNotFound { .. } => Exit::NoInput,
        KinesisError::AccessDenied { .. } | KinesisError::CredentialsRejected { .. } => {
            Exit::NoPerm
        }
        e if e.is_retryable() => Exit::Unavailable,
        _ => Exit::Software,
    }
}

fn lease_exit(e: &LeaseError) -> Exit {
    match e {
        LeaseError::AccessDenied { .. } | LeaseError::CredentialsRejected { .. } => Exit::NoPerm,
        LeaseError::TableNotFound { .. } => Exit::NoInput,
        e if e.is_retryable() => Exit::Unavailable,
        _ => Exit::Software,
    }
}

fn scheduler_exit(e: &kcl_core::scheduler::SchedulerError) -> Exit {
    use kcl_core::scheduler::SchedulerError as E;
    match e {
        E::LeaseTableMissing(_) | E::StreamNotFound { .. } => Exit::NoInput,
        E::LeaseTableAccessDenied(_) | E::StreamAccessDenied(_) | E::CredentialsRejected { .. } => {
            Exit::NoPerm
        }
        E::Config(_) => Exit::Usage,
        _ => Exit::Software,
    }
}

/// Retries a start-up check a few times (an emulator or sidecar may still be starting).
async fn with_retries<T, E: std::error::Error>(
    what: &str,
    retryable: impl Fn(&E) -> bool,
    mut call: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    // Five attempts, 0.5 s doubling to 4 s, each with jitter up to the delay: 7.5-15 s of waiting.
    let policy =
        kcl_core::retry::RetryConfig::new(Duration::from_millis(500), Duration::from_secs(4))
            .with_max_attempts(5);
    let mut backoff = policy.backoff(std::process::id().into());
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e)
                if retryable(&e)
                    && let Some(delay) = backoff.next_delay() =>
            {
                warn!(check = what, attempt, error = %kcl_core::error::Report(&e), "start-up check failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

pub(crate) async fn run(s: Settings, processors: Processors) -> Exit {
    // Handlers first: a SIGTERM during start-up (an orchestrator scaling in, a restart loop) stops
    // the worker cleanly instead of killing it; it holds no lease yet.
    let mut signals = Signals::install();
    info!(
        pid = std::process::id(),
        "signal handlers installed; starting"
    );
    let started = tokio::select! {
        biased;
        name = signals.recv() => {
            info!(signal = name, "stopped during start-up; no lease was held");
            return Exit::Drained;
        }
        started = start(&s, processors) => match started {
            Ok(started) => started,
            Err(exit) => return exit,
        },
    };
    drive(&s, started, &mut signals).await
}

/// A worker past its start-up checks, serving health and metrics, not yet running.
struct Started {
    scheduler: kcl_core::scheduler::Scheduler,
    publisher: Option<CloudWatchPublisher>,
    server: Option<tokio::task::JoinHandle<()>>,
    http_stop: CancellationToken,
}

/// Installs metrics, checks every endpoint, builds the scheduler and serves HTTP.
async fn start(s: &Settings, processors: Processors) -> Result<Started, Exit> {
    let c = &s.raw;
    // Metrics: recorded once, exported to Prometheus (/metrics) and CloudWatch.
    let prometheus = PrometheusBuilder::new().build_recorder();
    let prometheus_handle = prometheus.handle();
    let cloudwatch = CloudWatchRecorder::new(s.metrics_level);
    let fanout = FanoutBuilder::default()
        .add_recorder(prometheus)
        .add_recorder(cloudwatch.clone())
        .build();
    if metrics::set_global_recorder(fanout).is_err() {
        error!("a metrics recorder was already installed");
        return Err(Exit::Software);
    }
    kcl_core::telemetry::describe();
    let upkeep = prometheus_handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });

    let kinesis_sdk = sdk(c.kinesis_endpoint.as_ref(), c.region.as_ref()).await;
    let dynamo_sdk = sdk(c.dynamodb_endpoint.as_ref(), c.region.as_ref()).await;
    let (kinesis, kinesis_at): (Arc<dyn KinesisDataPlane>, &str) = if s.dynamodb_streams {
        let endpoint = c
            .dynamodb_streams_endpoint
            .as_ref()
            .or(c.dynamodb_endpoint.as_ref());
        let streams_sdk = sdk(endpoint, c.region.as_ref()).await;
        (
            Arc::new(kcl_dynamodb_streams::DynamoDbStreams::new(&streams_sdk)),
            endpoint.map_or("AWS", String::as_str),
        )
    } else {
        (
            Arc::new(AwsKinesis::new(&kinesis_sdk)),
            c.kinesis_endpoint.as_deref().unwrap_or("AWS"),
        )
    };
    let mut streams = s.streams.clone();
    for table in &s.tables {
        streams.push(table_stream(&dynamo_sdk, table, s.failover).await?);
    }
    // Start-up checks answer within the failover time too (the SDK sets only a connect
    // timeout); the scheduler builder puts the same deadline on the data plane it runs on.
    let checks = kcl_core::kinesis::DeadlineKinesis::new(kinesis.clone(), s.failover);
    for stream in &streams {
        let name = &stream.name;
        let check = with_retries(
            "describe stream",
            |e: &KinesisError| kinesis_exit(e) == Exit::Unavailable,
            async || checks.describe_stream(stream).await,
        )
        .await;
        if let Err(e) = check {
            let exit = kinesis_exit(&e);
            match exit {
                Exit::NoInput => error!(stream = %name, "stream not found: {e}"),
                Exit::NoPerm => error!(
                    endpoint = kinesis_at,
                    "Kinesis rejected the credentials: {e}"
                ),
                Exit::Unavailable => error!(endpoint = kinesis_at, "Kinesis unreachable: {e}"),
                _ => error!(stream = %name, "describing the stream failed: {e}"),
            }
            return Err(exit);
        }
    }
    let table = c
        .lease_table
        .clone()
        .unwrap_or_else(|| c.application.clone());
    let store = DynamoLeaseStore::from_config(&dynamo_sdk, &table);
    let dynamo_at = c.dynamodb_endpoint.as_deref().unwrap_or("AWS");
    if let Err(e) = with_retries(
        "lease table",
        |e: &LeaseError| lease_exit(e) == Exit::Unavailable,
        async || {
            // With the owner index the KCL 3.x uses: a move back to Java needs no table work.
            store
                .create_table_if_missing(&TableOptions::default().with_lease_owner_index(true))
                .await
        },
    )
    .await
    {
        let exit = lease_exit(&e);
        match exit {
            Exit::NoPerm => {
                error!(endpoint = dynamo_at, table = %table, "DynamoDB rejected the credentials: {e}")
            }
            Exit::Unavailable => error!(endpoint = dynamo_at, "DynamoDB unreachable: {e}"),
            _ => error!(table = %table, "lease table check failed: {e}"),
        }
        return Err(exit);
    }
    let store: Arc<dyn LeaseStore> = Arc::new(store);

    let fan_out = if s.fan_out {
        let fan_out = FanOutRetrieval::new(
            Arc::new(AwsFanOut::new(&kinesis_sdk)),
            streams[0].clone(),
            &c.application,
            FanOutConfig::default(),
        )
        .expect("the default fan-out settings are valid");
        // Registered (or reused) up front, so a missing permission or quota shows at start-up.
        for stream in &streams {
            let registered = with_retries(
                "register stream consumer",
                |e: &KinesisError| kinesis_exit(e) == Exit::Unavailable,
                async || fan_out.register_stream(stream).await,
            )
            .await;
            match registered {
                Ok(arn) => {
                    info!(stream = %stream.name, consumer_arn = %arn, "enhanced fan-out consumer ready")
                }
                Err(e) => {
                    let exit = kinesis_exit(&e);
                    error!(stream = %stream.name, "registering the enhanced fan-out consumer failed: {e}");
                    return Err(exit);
                }
            }
        }
        Some(fan_out)
    } else {
        None
    };

    let publisher = if s.metrics_level != MetricsLevel::None {
        // The region's CloudWatch unless an endpoint is set (never the Kinesis emulator's).
        let mut b = kinesis_sdk.clone().into_builder();
        b.set_endpoint_url(c.cloudwatch_endpoint.clone());
        match CloudWatchPublisher::start(
            &cloudwatch,
            Arc::new(AwsCloudWatch::new(&b.build())),
            CloudWatchConfig::new(&c.application),
        ) {
            Ok(p) => Some(p),
            Err(e) => {
                error!("{e}");
                return Err(Exit::Usage);
            }
        }
    } else {
        None
    };

    let factory: Arc<dyn ShardRecordProcessorFactory> = match processors {
        Processors::Factory(f) => f,
        Processors::MultiLang(config) => Arc::new(move |info: &ShardInfo| {
            crate::multilang::MultiLangProcessor::new(config.clone(), info)
        }),
        Processors::Ledger => {
            let ledger = match Ledger::open(
                c.ledger_file.clone(),
                c.worker_id.as_deref().unwrap_or("worker"),
            )
            .await
            {
                Ok(l) => l,
                Err(e) => {
                    error!(file = ?c.ledger_file, "cannot open the ledger file: {e}");
                    return Err(Exit::CantCreate);
                }
            };
            Arc::new(move |info: &ShardInfo| LedgerProcessor {
                info: info.clone(),
                ledger: ledger.clone(),
            })
        }
    };
    let builder = if streams.len() == 1 {
        SchedulerBuilder::new(streams[0].clone(), &c.application)
            .initial_position(s.initial_position)
    } else {
        let set = StreamSet::new(RemovedStreamPolicy::Keep);
        for stream in &streams {
            set.add(StreamConfig::new(stream.clone(), s.initial_position));
        }
        SchedulerBuilder::multi_stream(set, &c.application)
    };
    let mut builder = builder
        .lease_store(store)
        .kinesis(kinesis)
        .failover_time(s.failover)
        .shard_sync_interval(s.shard_sync)
        .parent_shard_poll_interval(Duration::from_millis(500))
        // `run` returns within its shutdown timeout plus one lease-store call (the releases,
        // failover / 3); leave that and a second for flushing metrics out of the deadline.
        .shutdown_timeout(
            s.shutdown_deadline
                .saturating_sub(s.failover / 3 + Duration::from_secs(1))
                .max(s.shutdown_deadline / 2),
        )
        .processor_factory(move |info: &ShardInfo| factory.create(info));
    if let Some(id) = &c.worker_id {
        builder = builder.worker_id(id);
    }
    if let Some(coordinator) = &s.coordinator {
        builder = builder.coordinator_config(coordinator.clone());
    }
    builder = match s.hash_range_policy {
        Some(policy) => builder.hash_range_check(policy),
        None => builder.without_hash_range_check(),
    };
    builder = builder.trimmed_data(s.trimmed_data);
    builder = match fan_out {
        Some(f) => builder.retrieval(RetrievalMode::Custom(Arc::new(f))),
        None => builder.retrieval(RetrievalMode::Polling(s.polling.clone())),
    };
    let scheduler = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            error!("configuration: {e}");
            return Err(Exit::Usage);
        }
    };
    let http_stop = CancellationToken::new();
    let server = match s.http_addr {
        None => None,
        Some(addr) => {
            match crate::http::serve(
                addr,
                scheduler.status(),
                prometheus_handle,
                http_stop.clone(),
            )
            .await
            {
                Ok(server) => Some(server),
                Err(e) => {
                    error!(http_addr = %addr, "cannot serve health and metrics: {e} (set KCL_WORKER_HTTP_ADDR to another address, or off)");
                    return Err(Exit::Usage);
                }
            }
        }
    };
    Ok(Started {
        scheduler,
        publisher,
        server,
        http_stop,
    })
}

/// Runs the scheduler until a signal (then drains within the deadline) or until it ends.
async fn drive(s: &Settings, started: Started, signals: &mut Signals) -> Exit {
    let Started {
        scheduler,
        publisher,
        server,
        http_stop,
    } = started;
    let worker_id = scheduler.worker_id().to_string();
    info!(worker_id = %worker_id, streams = ?s.raw.streams, http_addr = ?s.http_addr, "worker started");
    let shutdown = CancellationToken::new();
    let mut run = tokio::spawn(scheduler.run(shutdown.clone()));
    let signal = tokio::select! {
        biased;
        s = signals.recv() => Some(s),
        _ = &mut run => None,
    };
    let exit = match signal {
        Some(name) => {
            info!(worker_id = %worker_id, signal = name, deadline_s = s.shutdown_deadline.as_secs(), "draining");
            shutdown.cancel();
            match tokio::time::timeout(s.shutdown_deadline, &mut run).await {
                Ok(Ok(Ok(report))) if report.aborted == 0 => {
                    info!(worker_id = %worker_id, shards_ended = report.shards_ended, "drained; every lease released");
                    Exit::Drained
                }
                Ok(Ok(Ok(report))) => {
                    warn!(worker_id = %worker_id, aborted = report.aborted, "drain deadline hit; some leases are left to expire");
                    Exit::TempFail
                }
                Ok(Ok(Err(e))) => {
                    error!("scheduler failed: {}", kcl_aws::error_chain(&e));
                    scheduler_exit(&e)
                }
                Ok(Err(e)) => {
                    error!("scheduler task failed: {e}");
                    Exit::Software
                }
                Err(_) => {
                    run.abort();
                    warn!(worker_id = %worker_id, "drain deadline hit; leases are left to expire");
                    Exit::TempFail
                }
            }
        }
        None => match run.await {
            Ok(Ok(report)) if report.end == RunEnd::StreamDeleted => {
                error!("the stream was deleted");
                Exit::NoInput
            }
            Ok(Ok(_)) => Exit::Drained,
            Ok(Err(e)) => {
                error!("scheduler failed: {}", kcl_aws::error_chain(&e));
                scheduler_exit(&e)
            }
            Err(e) => {
                error!("scheduler task failed: {e}");
                Exit::Software
            }
        },
    };
    if let Some(p) = publisher {
        p.shutdown().await;
    }
    http_stop.cancel();
    if let Some(server) = server {
        let _ = server.await;
    }
    info!(worker_id = %worker_id, exit_code = exit as u8, "worker stopped");
    exit
}

/// SIGTERM and SIGINT handlers, installed once at start.
struct Signals {
    handlers: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(e), _) | (_, Err(e)) => {
                warn!(
                    "cannot handle SIGTERM/SIGINT ({e}); only the scheduler ending stops the worker"
                );
                None
            }
        };
        Self { handlers }
    }

    /// Waits for SIGTERM or SIGINT; the signal's name.
    async fn recv(&mut self) -> &'static str {
        let Some((term, int)) = &mut self.handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    }
}
