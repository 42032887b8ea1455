//! Harness for end-to-end tests: the real `modelwatch` binary on a loopback
//! port, a real Prometheus that scrapes it, and `promtool`.
//!
//! Every wait polls a condition under a deadline and, when the deadline
//! passes, panics with what it last saw (and the process's own log). External
//! programs are found on `PATH` or the test fails with the command that
//! installs them: nothing here skips or passes silently.

// Each test binary includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// How long a freshly started process may take to answer its readiness probe.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);
/// How long a process may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Pause between two evaluations of a polled condition.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How many fresh ports to try when a process loses the race for its port.
const PORT_ATTEMPTS: usize = 5;
/// The install command printed when Prometheus or promtool is missing.
pub const PROMETHEUS_INSTALL: &str = "apt-get install -y prometheus";

// ---------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------

/// Polls `condition` until it holds or `deadline` has passed; returns whether
/// it held. The condition is always evaluated at least once, and once more
/// after the deadline, so a slow last poll is not lost.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let give_up_at = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= give_up_at {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A loopback port that was free a moment ago. Whoever binds it next may
/// still lose a race, so callers retry on "address already in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_now_ms() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_millis()).expect("milliseconds since 1970 fit in i64")
}

/// Finds `name` on `PATH`, or panics with the command that installs it.
pub fn require_program(name: &str, install_command: &str) -> PathBuf {
    let search_path = std::env::var_os("PATH").unwrap_or_default();
    for directory in std::env::split_paths(&search_path) {
        let candidate = directory.join(name);
        if is_executable_file(&candidate) {
            return candidate;
        }
    }
    panic!(
        "this test needs `{name}`, which is not on PATH ({}); install it with: {install_command}",
        search_path.to_string_lossy()
    );
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An HTTP client that never goes through a proxy, whatever the environment
/// says: every peer of these tests is on 127.0.0.1.
pub fn http_client() -> Client {
    // reqwest is built with rustls and no default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build the blocking HTTP client")
}

/// Percent-encodes a query-string component (RFC 3986 unreserved characters
/// pass through).
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                encoded.push(char::from(byte))
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

/// The last `max_bytes` of a log, for panic messages.
fn tail(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut start = text.len() - max_bytes;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn read_log(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("<could not read {}: {error}>", path.display()),
    }
}

/// Opens `path` for the child's stdout and stderr: a file, not a pipe, so a
/// chatty child never blocks on a pipe nobody drains.
fn log_file_stdio(path: &Path) -> (Stdio, Stdio) {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|error| panic!("create log file {}: {error}", path.display()));
    let file_for_stdout = file.try_clone().expect("duplicate the log file handle");
    (Stdio::from(file_for_stdout), Stdio::from(file))
}

fn mentions_port_in_use(log: &str) -> bool {
    let log = log.to_lowercase();
    log.contains("address already in use") || log.contains("addrinuse")
}

/// Sends SIGTERM through the `kill` program (the workspace forbids `unsafe`,
/// so no libc).
fn send_sigterm(pid: u32) {
    let kill = require_program("kill", "apt-get install -y procps");
    let status = Command::new(kill)
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM {pid} failed: {status}");
}

fn wait_for_exit(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let mut exit_status = None;
    wait_until(deadline, || {
        exit_status = child.try_wait().expect("poll the child's exit status");
        exit_status.is_some()
    });
    exit_status
}

enum Startup {
    Ready,
    Exited(ExitStatus),
    TimedOut,
}

/// Spawns `command` and polls `is_ready` until it answers, the child exits,
/// or [`READY_DEADLINE`] passes.
fn spawn_and_wait_ready(
    mut command: Command,
    log_path: &Path,
    is_ready: impl Fn() -> bool,
) -> (Child, Startup) {
    let (stdout, stderr) = log_file_stdio(log_path);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|error| panic!("spawn {command:?}: {error}"));
    let mut startup = Startup::TimedOut;
    wait_until(READY_DEADLINE, || {
        if let Some(exit_status) = child.try_wait().expect("poll the child's exit status") {
            startup = Startup::Exited(exit_status);
            return true;
        }
        if is_ready() {
            // Answering on the port is not enough: another process might hold
            // it. Ours must still be alive.
            startup = match child.try_wait().expect("poll the child's exit status") {
                Some(exit_status) => Startup::Exited(exit_status),
                None => Startup::Ready,
            };
            return true;
        }
        false
    });
    (child, startup)
}

fn http_get_is_ok(client: &Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .map(|response| response.status().as_u16() == 200)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// modelwatch
// ---------------------------------------------------------------------------

/// How to start a [`Server`]: data directory, extra arguments and environment,
/// and optionally a fixed port.
pub struct ServerBuilder {
    data_dir: PathBuf,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    port: Option<u16>,
}

impl ServerBuilder {
    /// Appends an argument after `serve --listen … --data …`.
    pub fn arg(mut self, argument: impl Into<String>) -> Self {
        self.extra_args.push(argument.into());
        self
    }

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_env.push((key.into(), value.into()));
        self
    }

    /// Listens on this port instead of a fresh free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Starts the server and waits until `GET /readyz` answers 200.
    pub fn start(self) -> Server {
        let mut server = Server {
            child: None,
            port: 0,
            data_dir: self.data_dir,
            extra_args: self.extra_args,
            extra_env: self.extra_env,
            logs: tempfile::Builder::new()
                .prefix("modelwatch-logs-")
                .tempdir()
                .expect("create a log directory"),
            instances_started: 0,
            logs_already_reported: false,
            client: http_client(),
        };
        server.spawn(self.port);
        server
    }
}

/// A running `modelwatch serve` process. Dropping it kills the process.
pub struct Server {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    logs: tempfile::TempDir,
    instances_started: usize,
    /// Set when a panic message already carries the logs, so that `Drop`
    /// does not print them a second time.
    logs_already_reported: bool,
    client: Client,
}

impl Server {
    /// Starts `modelwatch serve` on a free loopback port with `data_dir`.
    pub fn start(data_dir: &Path) -> Server {
        Server::builder(data_dir).start()
    }

    /// Like [`Server::start`], with extra arguments, environment or port.
    pub fn builder(data_dir: &Path) -> ServerBuilder {
        ServerBuilder {
            data_dir: data_dir.to_path_buf(),
            extra_args: Vec::new(),
            extra_env: Vec::new(),
            port: None,
        }
    }

    fn log_path_of_instance(&self, instance: usize) -> PathBuf {
        self.logs.path().join(format!("modelwatch-{instance}.log"))
    }

    fn current_log_path(&self) -> PathBuf {
        self.log_path_of_instance(self.instances_started)
    }

    fn command(&self, port: u16) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_modelwatch"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&self.data_dir)
            .args(&self.extra_args);
        // Tests are hermetic: no stray MODELWATCH_* setting from the
        // developer's shell changes what the server does.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("MODELWATCH_") {
                command.env_remove(key);
            }
        }
        command.envs(self.extra_env.iter().map(|(key, value)| (key, value)));
        command
    }

    /// Spawns one instance; with a fixed port, retries while the port is
    /// still held (for example by the instance that was just killed).
    fn spawn(&mut self, fixed_port: Option<u16>) {
        assert!(self.child.is_none(), "the previous instance is still running");
        let started_at = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.instances_started += 1;
            let port = fixed_port.unwrap_or_else(free_port);
            let readyz = format!("http://127.0.0.1:{port}/readyz");
            let client = &self.client;
            let (mut child, startup) =
                spawn_and_wait_ready(self.command(port), &self.current_log_path(), || {
                    http_get_is_ok(client, &readyz)
                });
            let log = read_log(&self.current_log_path());
            self.logs_already_reported = !matches!(startup, Startup::Ready);
            match startup {
                Startup::Ready => {
                    self.child = Some(child);
                    self.port = port;
                    return;
                }
                Startup::Exited(_) if mentions_port_in_use(&log) => {
                    let may_retry = match fixed_port {
                        None => attempt < PORT_ATTEMPTS,
                        Some(_) => started_at.elapsed() < READY_DEADLINE,
                    };
                    if may_retry {
                        continue;
                    }
                    panic!("modelwatch could not bind 127.0.0.1:{port}; its log:\n{log}");
                }
                Startup::Exited(exit_status) => {
                    panic!("modelwatch exited ({exit_status}) before /readyz answered 200; its log:\n{log}")
                }
                Startup::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "modelwatch did not answer 200 on {readyz} within {READY_DEADLINE:?}; its log:\n{}",
                        read_log(&self.current_log_path())
                    );
                }
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as a Prometheus target.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is not running").id()
    }

    /// Everything the current instance wrote to stdout and stderr.
    pub fn log(&self) -> String {
        read_log(&self.current_log_path())
    }

    /// The logs of every instance started so far (restarts included).
    pub fn all_logs(&self) -> String {
        (1..=self.instances_started)
            .map(|instance| {
                let path = self.log_path_of_instance(instance);
                if path.exists() {
                    format!("--- instance {instance} ---\n{}", read_log(&path))
                } else {
                    String::new()
                }
            })
            .collect()
    }

    /// POSTs `lines` as one NDJSON body; returns the status and the answer
    /// (a JSON string holding the raw text when the answer is not JSON).
    pub fn post_ndjson(&self, path: &str, lines: &[String]) -> (u16, Value) {
        let mut body = lines.join("\n");
        body.push('\n');
        let (status, _, text) = self.post_raw(path, "application/x-ndjson", body.into_bytes());
        (status, json_or_string(text))
    }

    /// POSTs `body` as `application/json`.
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let bytes = serde_json::to_vec(body).expect("serialize the JSON body");
        let (status, _, text) = self.post_raw(path, "application/json", bytes);
        (status, json_or_string(text))
    }

    /// POSTs raw bytes with the given content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, HeaderMap, String) {
        let url = self.url(path);
        let response = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .unwrap_or_else(|error| panic!("POST {url} failed: {error}\nserver log:\n{}", self.log()));
        into_parts(response)
    }

    /// GETs `path`: status, headers and body text.
    pub fn get(&self, path: &str) -> (u16, HeaderMap, String) {
        self.get_with_headers(path, &[])
    }

    /// GETs `path` with extra request headers, such as `Accept`.
    pub fn get_with_headers(&self, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, String) {
        let url = self.url(path);
        let mut request = self.client.get(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .unwrap_or_else(|error| panic!("GET {url} failed: {error}\nserver log:\n{}", self.log()));
        into_parts(response)
    }

    /// Kills the process with SIGKILL, as `kill -9` does, and reaps it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the server is not running");
        child.kill().expect("send SIGKILL to modelwatch");
        child.wait().expect("reap modelwatch after SIGKILL");
    }

    /// Sends SIGTERM and waits for the process to exit; panics (after
    /// killing it) when it does not exit within [`STOP_DEADLINE`].
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the server is not running");
        send_sigterm(child.id());
        match wait_for_exit(&mut child, STOP_DEADLINE) {
            Some(exit_status) => exit_status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                self.logs_already_reported = true;
                panic!(
                    "modelwatch did not exit within {STOP_DEADLINE:?} of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
        }
    }

    /// Starts a new instance with the same data directory, arguments and
    /// port, after [`Server::kill9`] or [`Server::stop`].
    pub fn restart(&mut self) {
        let port = self.port;
        self.spawn(Some(port));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() && !self.logs_already_reported {
            eprintln!(
                "modelwatch log (last 16 KiB) of the failed test:\n{}",
                tail(&self.all_logs(), 16 * 1024)
            );
        }
    }
}

fn into_parts(response: reqwest::blocking::Response) -> (u16, HeaderMap, String) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().expect("read the response body");
    (status, headers, text)
}

fn json_or_string(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// The `Content-Type` of an answer, or `""`.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_string()
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

/// What `promtool check metrics` said.
#[derive(Debug)]
pub struct PromtoolReport {
    pub exit_status: ExitStatus,
    /// stdout and stderr together: promtool prints its lint problems, one per
    /// line, on stderr.
    pub output: String,
}

/// Runs `promtool check metrics` with `exposition` on stdin.
pub fn promtool_check_metrics(exposition: &str) -> PromtoolReport {
    let promtool = require_program("promtool", PROMETHEUS_INSTALL);
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn promtool check metrics");
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    // Write from another thread: promtool may answer before reading it all.
    let exposition = exposition.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(exposition.as_bytes());
    });
    let output = child.wait_with_output().expect("wait for promtool check metrics");
    writer.join().expect("the stdin writer thread");
    PromtoolReport {
        exit_status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

// ---------------------------------------------------------------------------
// Exposition parsing (just enough for assertions)
// ---------------------------------------------------------------------------

/// One sample line of a text or OpenMetrics exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct ExposedSample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses the sample lines of a Prometheus text 0.0.4 or OpenMetrics body.
/// Comments, exemplars and timestamps are skipped. Panics on a line it
/// cannot read, naming it.
pub fn parse_exposition_samples(body: &str) -> Vec<ExposedSample> {
    body.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample_line(line).unwrap_or_else(|| panic!("unreadable exposition line: {line:?}")))
        .collect()
}

/// `# TYPE name type` lines, as name -> type.
pub fn parse_exposition_types(body: &str) -> BTreeMap<String, String> {
    body.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| {
            let mut parts = rest.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

fn parse_sample_line(line: &str) -> Option<ExposedSample> {
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = line[..name_end].to_string();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        loop {
            while matches!(chars.peek(), Some((_, ' ' | ','))) {
                chars.next();
            }
            match chars.peek() {
                Some((index, '}')) => {
                    rest = &after_brace[index + 1..];
                    break;
                }
                None => return None,
                _ => {}
            }
            let mut label_name = String::new();
            for (_, character) in chars.by_ref() {
                if character == '=' {
                    break;
                }
                label_name.push(character);
            }
            if chars.next()?.1 != '"' {
                return None;
            }
            let mut label_value = String::new();
            loop {
                match chars.next()?.1 {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => label_value.push('\n'),
                        other => label_value.push(other),
                    },
                    other => label_value.push(other),
                }
            }
            labels.insert(label_name.trim().to_string(), label_value);
        }
    }
    // An OpenMetrics exemplar follows " # ".
    let rest = rest.split(" # ").next()?;
    let value = parse_prometheus_float(rest.split_whitespace().next()?)?;
    Some(ExposedSample { name, labels, value })
}

/// Parses a float as Prometheus writes it (`+Inf`, `-Inf`, `NaN` included).
pub fn parse_prometheus_float(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

/// Labels of one series in a query answer.
pub type Labels = BTreeMap<String, String>;
/// An instant vector: one value per series.
pub type InstantVector = Vec<(Labels, f64)>;
/// A range vector: the raw `(milliseconds, value)` samples of each series.
pub type RangeVector = Vec<(Labels, Vec<(i64, f64)>)>;

/// A real Prometheus server in a temporary directory, scraping the given
/// targets. Dropping it kills the process.
pub struct Prometheus {
    child: Option<Child>,
    port: u16,
    directory: tempfile::TempDir,
    client: Client,
}

impl Prometheus {
    /// The `job` label of the targets this harness configures.
    pub const JOB: &'static str = "modelwatch";

    /// Starts Prometheus scraping `targets` (`host:port`, path `/metrics`)
    /// every `scrape_interval` (a Prometheus duration such as `1s`), and
    /// waits until `/-/ready` answers 200.
    pub fn start(targets: &[String], scrape_interval: &str) -> Prometheus {
        Self::start_inner(targets, scrape_interval, None)
    }

    /// Like [`Prometheus::start`], and evaluates the rules of `rule_file`
    /// (Prometheus rule YAML) every `scrape_interval`.
    pub fn start_with_rules(targets: &[String], scrape_interval: &str, rule_file: &str) -> Prometheus {
        Self::start_inner(targets, scrape_interval, Some(rule_file))
    }

    fn start_inner(targets: &[String], scrape_interval: &str, rule_file: Option<&str>) -> Prometheus {
        let prometheus_binary = require_program("prometheus", PROMETHEUS_INSTALL);
        let directory = tempfile::Builder::new()
            .prefix("prometheus-")
            .tempdir()
            .expect("create a directory for Prometheus");
        let config_path = directory.path().join("prometheus.yml");
        let quoted_targets: Vec<String> = targets.iter().map(|target| format!("'{target}'")).collect();
        // The scrape timeout must not exceed the interval, and its default
        // (10s) does, so it is set to the interval.
        let config = format!(
            "global:\n  scrape_interval: {scrape_interval}\n  scrape_timeout: {scrape_interval}\n  evaluation_interval: {scrape_interval}\nscrape_configs:\n  - job_name: '{job}'\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{targets}]\n",
            job = Self::JOB,
            targets = quoted_targets.join(", "),
        );
        let config = match rule_file {
            Some(rules) => {
                std::fs::write(directory.path().join("rules.yml"), rules).expect("write rules.yml");
                // Relative rule files are read from the config file's directory.
                format!("{config}rule_files:\n  - rules.yml\n")
            }
            None => config,
        };
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let client = http_client();
        let log_path = directory.path().join("prometheus.log");
        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let mut command = Command::new(&prometheus_binary);
            command
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    directory.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=warn");
            let ready_url = format!("http://127.0.0.1:{port}/-/ready");
            let (mut child, startup) =
                spawn_and_wait_ready(command, &log_path, || http_get_is_ok(&client, &ready_url));
            let log = read_log(&log_path);
            match startup {
                Startup::Ready => {
                    return Prometheus {
                        child: Some(child),
                        port,
                        directory,
                        client,
                    };
                }
                Startup::Exited(_) if mentions_port_in_use(&log) && attempt < PORT_ATTEMPTS => {
                    continue;
                }
                Startup::Exited(exit_status) => {
                    panic!("prometheus exited ({exit_status}) before it was ready; its log:\n{log}")
                }
                Startup::TimedOut => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "prometheus was not ready within {READY_DEADLINE:?}; its log:\n{}",
                        read_log(&log_path)
                    );
                }
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// Full URL of `path` on this Prometheus.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// What Prometheus wrote to stdout and stderr.
    pub fn log(&self) -> String {
        read_log(&self.directory.path().join("prometheus.log"))
    }

    fn api_get(&self, path_and_query: &str) -> Result<Value, String> {
        let url = self.url(path_and_query);
        let response = self
            .client
            .get(&url)
            .send()
            .map_err(|error| format!("GET {url}: {error}"))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .map_err(|error| format!("GET {url}: reading the body: {error}"))?;
        let answer: Value = serde_json::from_str(&text).map_err(|_| format!("GET {url}: {status} {text}"))?;
        if answer["status"] != "success" {
            return Err(format!("GET {url}: {status} {answer}"));
        }
        Ok(answer["data"].clone())
    }

    fn try_query_at(&self, promql: &str, at_ms: Option<i64>) -> Result<InstantVector, String> {
        let mut path = format!("/api/v1/query?query={}", percent_encode(promql));
        if let Some(at_ms) = at_ms {
            path.push_str(&format!("&time={}", format_unix_seconds(at_ms)));
        }
        let data = self.api_get(&path)?;
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .ok_or_else(|| format!("no result array in {data}"))?
                .iter()
                .map(|series| {
                    Ok((
                        parse_labels(&series["metric"]),
                        parse_api_value(&series["value"])?.1,
                    ))
                })
                .collect(),
            Some("scalar") => Ok(vec![(Labels::new(), parse_api_value(&data["result"])?.1)]),
            other => Err(format!(
                "`{promql}` gave a {other:?} result, not an instant vector: {data}"
            )),
        }
    }

    /// Evaluates `promql` now.
    pub fn query(&self, promql: &str) -> InstantVector {
        self.try_query_at(promql, None)
            .unwrap_or_else(|error| panic!("query `{promql}` failed: {error}"))
    }

    /// Evaluates `promql` at `at_ms` (Unix milliseconds).
    pub fn query_at(&self, promql: &str, at_ms: i64) -> InstantVector {
        self.try_query_at(promql, Some(at_ms))
            .unwrap_or_else(|error| panic!("query `{promql}` at {at_ms} ms failed: {error}"))
    }

    /// Evaluates a range-vector selector such as `foo_total[5m]` at `at_ms`
    /// and returns the raw samples Prometheus stored, per series.
    pub fn query_range_raw(&self, selector: &str, at_ms: i64) -> RangeVector {
        let path = format!(
            "/api/v1/query?query={}&time={}",
            percent_encode(selector),
            format_unix_seconds(at_ms)
        );
        let data = self
            .api_get(&path)
            .unwrap_or_else(|error| panic!("query `{selector}` at {at_ms} ms failed: {error}"));
        assert_eq!(
            data["resultType"], "matrix",
            "`{selector}` is not a range-vector selector: {data}"
        );
        data["result"]
            .as_array()
            .expect("a matrix result is an array")
            .iter()
            .map(|series| {
                let samples = series["values"]
                    .as_array()
                    .expect("a matrix series has values")
                    .iter()
                    .map(|sample| parse_api_value(sample).unwrap_or_else(|error| panic!("{error}")))
                    .collect();
                (parse_labels(&series["metric"]), samples)
            })
            .collect()
    }

    /// Polls `promql` until `condition` holds on its result, and returns that
    /// result; panics after `deadline` with the last result (or error) and
    /// the health of the scrape targets.
    pub fn wait_for(
        &self,
        promql: &str,
        deadline: Duration,
        condition: impl Fn(&InstantVector) -> bool,
    ) -> InstantVector {
        let mut last: Result<InstantVector, String> = Err("never evaluated".to_string());
        let held = wait_until(deadline, || {
            last = self.try_query_at(promql, None);
            matches!(&last, Ok(vector) if condition(vector))
        });
        if held {
            return last.expect("the condition held on a successful query");
        }
        panic!(
            "`{promql}` did not reach the expected condition within {deadline:?}; last result: {last:?}\ntargets: {}\nprometheus log:\n{}",
            self.targets_summary(),
            tail(&self.log(), 8 * 1024)
        );
    }

    /// Waits until every target has been scraped successfully (`up == 1`).
    pub fn wait_for_targets_up(&self, target_count: usize, deadline: Duration) {
        let promql = format!("up{{job=\"{}\"}}", Self::JOB);
        self.wait_for(&promql, deadline, |vector| {
            vector.len() == target_count && vector.iter().all(|(_, value)| *value == 1.0)
        });
    }

    /// Scrape URL, health and last error of each target, for failure messages.
    pub fn targets_summary(&self) -> String {
        match self.api_get("/api/v1/targets") {
            Ok(data) => data["activeTargets"]
                .as_array()
                .map(|targets| {
                    targets
                        .iter()
                        .map(|target| {
                            format!(
                                "{} health={} lastError={:?}",
                                target["scrapeUrl"], target["health"], target["lastError"]
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_else(|| data.to_string()),
            Err(error) => error,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "prometheus log (last 8 KiB) of the failed test:\n{}",
                tail(&self.log(), 8 * 1024)
            );
        }
    }
}

/// Unix milliseconds as the `12345.678` seconds the Prometheus API takes.
pub fn format_unix_seconds(unix_ms: i64) -> String {
    format!("{}.{:03}", unix_ms.div_euclid(1000), unix_ms.rem_euclid(1000))
}

fn parse_labels(metric: &Value) -> Labels {
    metric
        .as_object()
        .map(|object| {
            object
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// `[1712345678.123, "42"]` -> `(1712345678123, 42.0)`.
fn parse_api_value(pair: &Value) -> Result<(i64, f64), String> {
    let seconds = pair[0]
        .as_f64()
        .ok_or_else(|| format!("no timestamp in {pair}"))?;
    let value = pair[1]
        .as_str()
        .and_then(parse_prometheus_float)
        .ok_or_else(|| format!("no value in {pair}"))?;
    // The API prints millisecond timestamps as seconds with three decimals.
    Ok(((seconds * 1000.0).round() as i64, value))
}

/// `rate()` of one float counter series as Prometheus 2.x computes it
/// (`extrapolatedRate` in `promql/functions.go`, with `isCounter` and
/// `isRate`, as of 2.42), from the raw samples that the range selector
/// `[range_ms]` returns when evaluated at `eval_ms`.
///
/// Prometheus 3 changed the order of the zero-point clamp and the
/// extrapolation threshold, so this is specific to 2.x; the harness self-test
/// checks it against the installed Prometheus.
pub fn prometheus2_rate(samples: &[(i64, f64)], eval_ms: i64, range_ms: i64) -> Option<f64> {
    // Fewer than two samples give no rate at all.
    let (&(first_ms, first_value), &(last_ms, last_value)) = (samples.first()?, samples.last()?);
    if samples.len() < 2 {
        return None;
    }
    // The increase, adding back the value before each counter reset.
    let mut increase = last_value - first_value;
    let mut previous_value = first_value;
    for &(_, value) in &samples[1..] {
        if value < previous_value {
            increase += previous_value;
        }
        previous_value = value;
    }
    let range_start_ms = eval_ms - range_ms;
    let range_end_ms = eval_ms;
    let mut duration_to_start = (first_ms - range_start_ms) as f64 / 1000.0;
    let duration_to_end = (range_end_ms - last_ms) as f64 / 1000.0;
    let sampled_interval = (last_ms - first_ms) as f64 / 1000.0;
    let average_duration_between_samples = sampled_interval / (samples.len() - 1) as f64;
    // A counter cannot be negative: do not extrapolate to before the moment
    // the line through the samples crosses zero.
    if increase > 0.0 && first_value >= 0.0 {
        let duration_to_zero = sampled_interval * (first_value / increase);
        if duration_to_zero < duration_to_start {
            duration_to_start = duration_to_zero;
        }
    }
    // Extrapolate to a range boundary when a sample lies within 110% of the
    // average spacing of it; otherwise assume the series starts (or ends)
    // half a spacing beyond its first (or last) sample.
    let extrapolation_threshold = average_duration_between_samples * 1.1;
    let mut extrapolate_to_interval = sampled_interval;
    extrapolate_to_interval += if duration_to_start < extrapolation_threshold {
        duration_to_start
    } else {
        average_duration_between_samples / 2.0
    };
    extrapolate_to_interval += if duration_to_end < extrapolation_threshold {
        duration_to_end
    } else {
        average_duration_between_samples / 2.0
    };
    let mut factor = extrapolate_to_interval / sampled_interval;
    factor /= range_ms as f64 / 1000.0;
    Some(increase * factor)
}

// ---------------------------------------------------------------------------
// A fixture exporter, to test the harness without modelwatch
// ---------------------------------------------------------------------------

/// A minimal HTTP server answering every `GET /metrics` with the exposition
/// that `body_for_scrape(n)` returns for the n-th scrape (counting from 1).
pub struct FixtureExporter {
    port: u16,
    scrapes: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FixtureExporter {
    pub fn start(body_for_scrape: impl Fn(u64) -> String + Send + 'static) -> FixtureExporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fixture exporter");
        let port = listener.local_addr().expect("fixture exporter address").port();
        let scrapes = Arc::new(AtomicU64::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let scrapes = Arc::clone(&scrapes);
            let stopping = Arc::clone(&stopping);
            std::thread::spawn(move || {
                for connection in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = connection {
                        let _ = serve_fixture_request(stream, &scrapes, &body_for_scrape);
                    }
                }
            })
        };
        FixtureExporter {
            port,
            scrapes,
            stopping,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`, as a Prometheus target.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many `/metrics` requests were answered.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }
}

impl Drop for FixtureExporter {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve_fixture_request(
    mut stream: TcpStream,
    scrapes: &AtomicU64,
    body_for_scrape: &impl Fn(u64) -> String,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    while !request.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let request_line = String::from_utf8_lossy(&request);
    let (status, body) = if request_line.starts_with("GET /metrics ") {
        let scrape = scrapes.fetch_add(1, Ordering::SeqCst) + 1;
        ("200 OK", body_for_scrape(scrape))
    } else {
        ("404 Not Found", String::new())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.flush()
}

/// Asserts `actual` is within `relative_tolerance` of `expected`, relative to
/// the larger magnitude.
pub fn assert_relative_eq(actual: f64, expected: f64, relative_tolerance: f64, what: &str) {
    let scale = actual.abs().max(expected.abs()).max(f64::MIN_POSITIVE);
    assert!(
        (actual - expected).abs() / scale <= relative_tolerance,
        "{what}: got {actual}, expected {expected} (relative tolerance {relative_tolerance})"
    );
}
