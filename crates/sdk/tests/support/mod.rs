//! The real modelwatch server, in-process on a loopback port, for the SDK's
//! end-to-end tests: the same `open()` and `app()` as `modelwatch serve`,
//! with a real SQLite store in a temporary directory.
//!
//! Waits poll a condition under a deadline; nothing sleeps "a bit".

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use modelwatch_server::{Config, Workers, app, open};
use serde_json::Value;

/// How long the server may take to start, and a flush to complete.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up_at = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= give_up_at {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running modelwatch server. [`TestServer::stop`] (or dropping it) shuts
/// it down as SIGTERM would: stop accepting, drain, commit.
pub struct TestServer {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    workers: Option<Workers>,
    client: reqwest::blocking::Client,
}

impl TestServer {
    /// Starts a server with the default config on `port`, storing under
    /// `data_dir`; retries while the port is still held.
    pub fn start(port: u16, data_dir: &Path) -> TestServer {
        let (state, workers) = open(Config::default(), data_dir).expect("open the modelwatch store");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let mut listener = None;
        assert!(
            wait_until(DEADLINE, || {
                listener = runtime
                    .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
                    .ok();
                listener.is_some()
            }),
            "could not bind 127.0.0.1:{port}"
        );
        let listener = listener.expect("bound");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = runtime.spawn(async move {
            axum::serve(listener, app(state))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("build an http client");
        let server = TestServer {
            port,
            runtime: Some(runtime),
            stop: Some(stop),
            serving: Some(serving),
            workers: Some(workers),
            client,
        };
        assert!(
            wait_until(DEADLINE, || server
                .client
                .get(server.url("/readyz"))
                .send()
                .is_ok_and(|response| response.status().is_success())),
            "the server did not become ready"
        );
        server
    }

    /// `http://127.0.0.1:PORT`, the SDK's base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// `GET path`, which must answer 200 with JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let response = self.client.get(self.url(path)).send().expect("GET");
        let status = response.status();
        let body = response.text().expect("read the body");
        assert!(status.is_success(), "GET {path} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path}: {error}: {body}"))
    }

    /// Shuts the server down and waits for its writer to commit.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let (Some(runtime), Some(serving)) = (self.runtime.take(), self.serving.take()) {
            let _ = runtime.block_on(serving);
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
        if let Some(workers) = self.workers.take() {
            workers.join();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Finds `name` on `PATH`, or panics with the command that installs it.
pub fn require_program(name: &str, install_command: &str) -> PathBuf {
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&search_path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("this test needs `{name}`, which is not on PATH; install it with: {install_command}")
        })
}
