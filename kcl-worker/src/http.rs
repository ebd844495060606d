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
/// has enough workers.
async fn readyz(State(app): State<App>) -> (StatusCode, String) {
    if app.status.is_ready() {
        (
            StatusCode::OK,
            format!("ready: {} shard consumers\n", app.status.consumers()),
        )
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
}
