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
