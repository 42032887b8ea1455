//! A minimal `/metrics` endpoint on a background thread, like the Python
//! client's `start_http_server(8000)`, for model servers that do not already
//! have an HTTP server to mount the registry on.
//!
//! It answers `GET /metrics` (and `GET /`) with Prometheus text 0.0.4, or
//! with OpenMetrics when the `Accept` header asks for it, one connection at a
//! time, and closes every connection after its answer.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tracing::debug;

use crate::metrics::{encode_openmetrics, encode_text};

/// The content type of Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of OpenMetrics 1.0 text.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scraper may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest request head read; a scrape needs a few hundred bytes.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// A running `/metrics` endpoint. Dropping it stops the thread.
#[derive(Debug)]
pub struct MetricsServer {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `registry` on `address` (for example `0.0.0.0:8000`, or
    /// `127.0.0.1:0` for any free port).
    pub fn start(address: impl ToSocketAddrs, registry: Arc<Registry>) -> io::Result<Self> {
        let listener = TcpListener::bind(address)?;
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let thread_stopping = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("modelwatch-metrics".to_owned())
            .spawn(move || {
                for stream in listener.incoming() {
                    if thread_stopping.load(Ordering::Acquire) {
                        break;
                    }
                    match stream {
                        Ok(stream) => {
                            if let Err(error) = answer(stream, &registry) {
                                debug!(%error, "metrics scrape failed");
                            }
                        }
                        Err(error) => debug!(%error, "metrics accept failed"),
                    }
                }
            })?;
        Ok(Self {
            address,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address the endpoint listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // `accept` has no timeout: a connection of our own wakes it.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: TcpStream, registry: &Registry) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut wants_openmetrics = false;
    let mut head_bytes = request_line.len();
    loop {
        let mut header = String::new();
        let read = reader.read_line(&mut header)?;
        head_bytes += read;
        if read == 0 || header == "\r\n" || header == "\n" || head_bytes > MAX_REQUEST_HEAD_BYTES {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            wants_openmetrics |=
                name.trim().eq_ignore_ascii_case("accept") && value.contains("application/openmetrics-text");
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics" | "/") if wants_openmetrics => {
            ("200 OK", OPENMETRICS_CONTENT_TYPE, encode_openmetrics(registry))
        }
        ("GET", "/metrics" | "/") => ("200 OK", TEXT_CONTENT_TYPE, encode_text(registry)),
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".to_owned(),
        ),
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
