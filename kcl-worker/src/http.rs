//! Health and metrics over HTTP: `/healthz` (liveness), `/readyz` (readiness), `/metrics`
//! (Prometheus text format).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use kcl_core::scheduler::SchedulerStatus;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct App {
    status: SchedulerStatus,
    prometheus: PrometheusHandle,
}

/// Live while the scheduler runs (a worker whose scheduler died must be restarted).
async fn healthz(State(app): State<App>) -> (StatusCode, &'static str) {
    if app.status.is_running() {
        (StatusCode::OK, "live\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "scheduler not running\n")
    }
}

/// Ready once shards were synced, until draining: holding leases, or idle because the fleet
/// has enough workers. Not ready while a shard is stopped for an operator (records trimmed
/// before they were read): the body names each and why.
async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    let stopped = app.status.stopped_shards();
    if app.status.is_ready() {
        (
            StatusCode::OK,
            format!("ready: {} shard consumers\n", app.status.consumers()),
        )
    } else if !stopped.is_empty() {
        let lines: String = stopped
            .iter()
            .map(|s| format!("shard stopped: {}: {}\n", s.lease_key, s.reason))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, lines)
    } else if app.status.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n".into())
    }
}

async fn metrics(State(app): State<App>) -> String {
    app.prometheus.render()
}

/// Binds `addr` (an error names the address) and serves until `stop`.
pub(crate) async fn serve(
    addr: SocketAddr,
    status: SchedulerStatus,
    prometheus: PrometheusHandle,
    stop: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(App { status, prometheus });
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use async_trait::async_trait;
    use kcl_core::checkpoint::Checkpointer;
    use kcl_core::engine::InMemoryKinesis;
    use kcl_core::lease::InMemoryLeaseStore;
    use kcl_core::processor::{
        ProcessRecordsInput, ProcessorError, ShardInfo, ShardRecordProcessor,
    };
    use kcl_core::scheduler::SchedulerBuilder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::Semaphore;

    use super::*;

    /// Its shutdown waits for a permit, holding the scheduler in its drain.
    struct SlowToDrain(Arc<Semaphore>);

    #[async_trait]
    impl ShardRecordProcessor for SlowToDrain {
        async fn process_records(
            &mut self,
            _input: ProcessRecordsInput<'_>,
        ) -> Result<(), ProcessorError> {
            Ok(())
        }

        async fn shutdown_requested(
            &mut self,
            checkpointer: &mut Checkpointer,
        ) -> Result<(), ProcessorError> {
            let _permit = self.0.acquire().await;
            checkpointer.checkpoint().await?;
            Ok(())
        }
    }

    /// Polls `condition` for up to 30 s.
    async fn wait_until(condition: impl Fn() -> bool) {
        let by = tokio::time::Instant::now() + Duration::from_secs(30);
        while !condition() {
            assert!(tokio::time::Instant::now() < by, "condition not reached");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        let code = text.split(' ').nth(1).unwrap().parse().unwrap();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (code, body.to_string())
    }

    /// Readiness over HTTP through a scheduler's life: starting, ready, draining (503 while a
    /// processor still checkpoints), and liveness gone once it stopped.
    #[tokio::test]
    async fn readiness_follows_the_scheduler_through_its_drain() {
        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", 1).unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let processors = gate.clone();
        let scheduler = SchedulerBuilder::new(stream, "app")
            .lease_store(Arc::new(InMemoryLeaseStore::new()))
            .kinesis(Arc::new(kinesis))
            .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(SlowToDrain(processors.clone()))
            })
            .build()
            .unwrap();
        let status = scheduler.status();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let stop = CancellationToken::new();
        let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle();
        let server = serve(addr, status.clone(), prometheus, stop.clone())
            .await
            .unwrap();
        assert_eq!(get(addr, "/readyz").await, (503, "starting\n".into()));
        assert_eq!(get(addr, "/healthz").await.0, 503);

        let shutdown = CancellationToken::new();
        let run = tokio::spawn(scheduler.run(shutdown.clone()));
        wait_until(|| status.is_ready() && status.consumers() == 1).await;
        assert_eq!(
            get(addr, "/readyz").await,
            (200, "ready: 1 shard consumers\n".into())
        );
        assert_eq!(get(addr, "/healthz").await, (200, "live\n".into()));

        shutdown.cancel();
        wait_until(|| status.is_draining()).await;
        assert_eq!(get(addr, "/readyz").await, (503, "draining\n".into()));
        assert_eq!(get(addr, "/healthz").await.0, 200, "live while draining");
        gate.add_permits(1);
        let report = run.await.unwrap().unwrap();
        assert_eq!(report.aborted, 0);
        assert_eq!(get(addr, "/healthz").await.0, 503);
        stop.cancel();
        server.await.unwrap();
    }

    /// A shard stopped on trimmed data makes the worker unready, and `/readyz` names it with
    /// the lost range (paused time: the stream's records age past a one-hour retention).
    #[tokio::test(start_paused = true)]
    async fn readiness_names_a_shard_stopped_on_trimmed_data() {
        use kcl_core::engine::PutRecordEntry;
        use kcl_core::lease::{Lease, LeaseStore};
        use kcl_core::model::{ExtendedSequenceNumber, ShardId};

        let kinesis = InMemoryKinesis::new();
        let stream = kinesis.create_stream("s", 1).unwrap();
        kinesis
            .set_retention_period("s", Duration::from_secs(3600))
            .unwrap();
        let put = |i: u32| {
            kinesis.put_record(
                "s",
                PutRecordEntry::new("k", bytes::Bytes::from(format!("r{i}"))),
            )
        };
        let checkpointed = put(0).await.unwrap().sequence_number;
        tokio::time::advance(Duration::from_secs(3000)).await;
        let first_readable = put(1).await.unwrap().sequence_number;
        tokio::time::advance(Duration::from_secs(1000)).await;
        let store = Arc::new(InMemoryLeaseStore::new());
        let checkpoint = ExtendedSequenceNumber::Sequence {
            sequence: checkpointed.clone(),
            sub_sequence: 0,
        };
        store
            .create_if_absent(&Lease::new(&ShardId::from_index(0), checkpoint))
            .await
            .unwrap();
        let gate = Arc::new(Semaphore::new(1));
        let scheduler = SchedulerBuilder::new(stream, "app")
            .lease_store(store)
            .kinesis(Arc::new(kinesis.clone()))
            .processor_factory(move |_: &ShardInfo| -> Box<dyn ShardRecordProcessor> {
                Box::new(SlowToDrain(gate.clone()))
            })
            .build()
            .unwrap();
        let status = scheduler.status();
        let app = App {
            status: status.clone(),
            prometheus: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
        };
        let shutdown = CancellationToken::new();
        let run = tokio::spawn(scheduler.run(shutdown.clone()));
        wait_until(|| !status.stopped_shards().is_empty()).await;
        let (code, body) = readyz(State(app.clone())).await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            body.starts_with("shard stopped: shardId-000000000000: records trimmed")
                && body.contains(&checkpointed.to_string())
                && body.contains(&first_readable.to_string()),
            "{body}"
        );
        assert_eq!(healthz(State(app)).await.0, StatusCode::OK, "still live");
        shutdown.cancel();
        run.await.unwrap().unwrap();
    }
}
