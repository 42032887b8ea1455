//! The modelwatch server: ingestion, the query API, `/metrics` and the
//! built-in dashboard over HTTP.
//!
//! [`app`] builds the router over shared state (testable without a socket);
//! [`serve`] opens the store, restores the aggregates, starts the writer
//! thread and serves until SIGINT/SIGTERM, then drains and flushes.

pub mod alerts;
pub mod config;
mod dashboard;
pub mod drift;
pub mod error;
pub mod grafana;
pub mod ingest;
mod ingest_api;
pub mod labels;
pub mod metrics;
pub mod notify;
mod notify_api;
pub mod promql;
mod query_api;
pub mod remediation;
pub mod state;
mod timeseries_api;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use modelwatch_core::wire::ParseLimits;
use modelwatch_store::SqliteStore;
use prometheus_client::registry::Registry;
use tracing::info;

pub use crate::config::Config;
use crate::error::{ApiError, ErrorCode};
use crate::ingest::IngestQueue;
use crate::state::{Shared, Telemetry};

/// What every handler gets.
#[derive(Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    pub queue: IngestQueue,
    pub registry: Arc<Registry>,
    pub parse_limits: ParseLimits,
}

/// The HTTP routes over `app`.
pub fn app(app: App) -> Router {
    Router::new()
        .route("/v1/predictions", post(ingest_api::post_predictions))
        .route("/v1/labels", post(ingest_api::post_labels))
        .route("/v1/labels/stats", get(query_api::label_stats))
        .route("/v1/models/{model}/performance", get(query_api::performance))
        .route("/v1/models", get(query_api::models))
        .route("/v1/models/{model}/operations", get(query_api::operations))
        .route("/v1/models/{model}/predictions", get(query_api::predictions))
        .route("/v1/models/{model}/features", get(query_api::features))
        .route("/v1/models/{model}/slo", get(alerts::model_slo))
        .route("/v1/models/{model}/drift", get(drift::drift))
        .route(
            "/v1/models/{model}/baseline",
            get(drift::get_baseline)
                .post(drift::set_baseline)
                .delete(drift::delete_baseline),
        )
        .route("/v1/models/{model}/timeseries", get(timeseries_api::timeseries))
        .route("/v1/alerts", get(alerts::active))
        .route("/v1/alerts/history", get(alerts::history))
        .route("/v1/remediations", get(notify_api::remediations))
        .route("/metrics", get(metrics::metrics))
        .route("/", get(dashboard::overview_page))
        .route("/models/{model}", get(dashboard::model_page))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/v1/dashboard/overview", get(dashboard::overview))
        .route("/v1/dashboard/capabilities", get(dashboard::capabilities))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such endpoint") })
        .with_state(app)
}

async fn readyz(State(app): State<App>) -> impl IntoResponse {
    if app.shared.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unavailable\n")
    }
}

/// Runtime settings that come from flags, not the config file.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
}

/// Opens the store and restores state, on the wall clock.
pub fn open(config: Config, data_dir: &std::path::Path) -> Result<(App, Workers), ServeError> {
    open_with_clock(config, data_dir, state::Clock::wall())
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] modelwatch_store::StoreError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("alerting: {0}")]
    Alerts(String),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The background threads of a running server.
pub struct Workers {
    shared: Arc<Shared>,
    writer: std::thread::JoinHandle<()>,
    pruner: std::thread::JoinHandle<()>,
    evaluator: std::thread::JoinHandle<()>,
    delivery: std::thread::JoinHandle<()>,
    stop_delivery: Arc<AtomicBool>,
}

impl Workers {
    /// Stops the background threads once every [`App`] is dropped: the
    /// pruner stops, and the writer drains the queue, commits and checkpoints.
    pub fn join(self) {
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.evaluator.join();
        self.stop_delivery.store(true, Ordering::Release);
        let _ = self.delivery.join();
        let _ = self.pruner.join();
        let _ = self.writer.join();
    }
}

/// Opens the store and restores state; returns the app and its background
/// threads.
pub fn open_with_clock(
    config: Config,
    data_dir: &std::path::Path,
    clock: state::Clock,
) -> Result<(App, Workers), ServeError> {
    let store = SqliteStore::open(data_dir, config.storage.synchronous())?;
    let aggregates = ingest::load_aggregates(&store, config.aggregation())?;
    let parse_limits = config.ingest.parse_limits();
    let baselines = drift::Baselines::open(store.path(), config.storage.synchronous())?;
    let shared = Arc::new(Shared {
        config,
        aggregates: RwLock::new(aggregates),
        names: ingest::load_names(&store)?,
        readers: state::ReaderPool::new(store.path().to_owned()),
        telemetry: Telemetry::default(),
        ready: AtomicBool::new(true),
        stopping: AtomicBool::new(false),
        alerts: alerts::AlertView::default(),
        baselines,
        drift: drift::DriftView::default(),
        clock,
    });
    let engine = alerts::AlertEngine::open(&shared, store.path()).map_err(ServeError::Alerts)?;
    let database = store.path().to_owned();
    let (queue, writer) = ingest::start_writer(store, shared.clone());
    let pruner = ingest::start_pruner(shared.clone(), queue.clone());
    let evaluator = alerts::start_evaluator(shared.clone(), engine);
    let stopping = Arc::new(AtomicBool::new(false));
    let delivery = notify::start_delivery(
        Arc::new(shared.config.clone()),
        database,
        shared.config.storage.synchronous(),
        stopping.clone(),
        shared.clock,
    );
    let registry = Arc::new(metrics::registry(shared.clone()));
    Ok((
        App {
            shared: shared.clone(),
            queue,
            registry,
            parse_limits,
        },
        Workers {
            shared,
            writer,
            pruner,
            evaluator,
            delivery,
            stop_delivery: stopping,
        },
    ))
}

/// Serves until SIGINT or SIGTERM; then stops accepting, lets in-flight
/// requests finish, and waits for the writer to commit everything queued.
pub async fn serve(config: Config, options: ServeOptions) -> Result<(), ServeError> {
    serve_with(config, options, state::Clock::wall(), |_| {}, shutdown_signal()).await
}

/// [`serve`] on `clock`, calling `ready` with the bound address once it
/// listens, until `shutdown` completes.
pub async fn serve_with(
    config: Config,
    options: ServeOptions,
    clock: state::Clock,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = std::time::Instant::now();
    let (state, workers) = open_with_clock(config, &options.data_dir, clock)?;
    let models = state.shared.aggregates.read().expect("lock").models.len();
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServeError::Listen {
            address: options.listen,
            source,
        })?;
    let address = listener.local_addr()?;
    info!(
        %address,
        data = %options.data_dir.display(),
        models,
        startup_ms = started.elapsed().as_millis() as u64,
        "modelwatch ready: POST predictions to http://{address}/v1/predictions and labels to http://{address}/v1/labels, scrape http://{address}/metrics"
    );
    ready(address);
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    info!("draining the write queue");
    // The router (and with it every queue handle) is dropped: the writer
    // drains what was queued, commits, checkpoints and exits.
    tokio::task::spawn_blocking(move || workers.join()).await.ok();
    info!("modelwatch stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => info!("SIGINT received, shutting down"),
        _ = terminate => info!("SIGTERM received, shutting down"),
    }
}
