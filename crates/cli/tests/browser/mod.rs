//! Headless Chromium driven over the Chrome DevTools Protocol, for the
//! dashboard tests: load a page, wait for a condition in it, evaluate
//! JavaScript, take a screenshot, and collect everything that went wrong on
//! the way (console errors and warnings, uncaught exceptions, failed or
//! refused requests, log entries of level error).
//!
//! The protocol is JSON over one WebSocket (tungstenite); the browser's
//! `DevToolsActivePort` file says where it listens. Every wait has a
//! deadline and reports what it saw.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::support::{require_program, wait_until};

/// How long Chromium may take to start and open its DevTools port.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one protocol command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

pub const CHROMIUM_INSTALL: &str = "apt-get install -y chromium";

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    session: String,
    next_id: u64,
    /// Every protocol event received so far, in order.
    events: Vec<Value>,
    _profile: tempfile::TempDir,
    log_path: PathBuf,
}

/// What went wrong while a page loaded and ran.
#[derive(Debug, Default)]
pub struct Problems {
    pub lines: Vec<String>,
}

impl Browser {
    /// Starts Chromium with a fresh profile and a `width` x `height` page.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = require_program("chromium", CHROMIUM_INSTALL);
        let profile = tempfile::Builder::new()
            .prefix("modelwatch-chromium-")
            .tempdir()
            .expect("create a Chromium profile directory");
        let log_path = profile.path().join("chromium.log");
        let log = std::fs::File::create(&log_path).expect("create the Chromium log");
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("duplicate the log handle"))
            .stderr(log)
            .spawn()
            .expect("start chromium");
        let active_port = profile.path().join("DevToolsActivePort");
        let mut endpoint = None;
        let started = wait_until(START_DEADLINE, || {
            endpoint = std::fs::read_to_string(&active_port).ok().and_then(|text| {
                let mut lines = text.lines();
                let port: u16 = lines.next()?.trim().parse().ok()?;
                let path = lines.next()?.trim().to_owned();
                Some((port, path))
            });
            endpoint.is_some()
        });
        let mut browser_log = String::new();
        if !started {
            browser_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        let (port, path) = endpoint.unwrap_or_else(|| {
            panic!(
                "chromium did not open its DevTools port within {START_DEADLINE:?}; its log:\n{browser_log}"
            )
        });
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the DevTools port");
        stream
            .set_read_timeout(Some(COMMAND_DEADLINE))
            .expect("set a read timeout");
        let (socket, _) = tungstenite::client(format!("ws://127.0.0.1:{port}{path}"), stream)
            .expect("open the DevTools WebSocket");
        // From now on reads return every 200 ms, so that waits can check
        // their deadlines; tungstenite resumes a frame cut by a timeout.
        socket
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        let mut browser = Browser {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            events: Vec::new(),
            _profile: profile,
            log_path,
        };
        let target = browser.call_browser("Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("a target id").to_owned();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"].as_str().expect("a session id").to_owned();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable", "Network.enable"] {
            browser.call(domain, json!({}));
        }
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        );
        browser
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .unwrap_or_else(|error| panic!("send {method}: {error}"));
        let deadline = Instant::now() + COMMAND_DEADLINE;
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {method} within {COMMAND_DEADLINE:?}"
            );
            let Some(message) = self.receive() else { continue };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// One message, or `None` when none arrived within the read timeout.
    fn receive(&mut self) -> Option<Value> {
        match self.socket.read() {
            Ok(Message::Text(text)) => {
                Some(serde_json::from_str(text.as_str()).expect("DevTools sends JSON"))
            }
            Ok(_) => None,
            Err(tungstenite::Error::Io(error))
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(error) => panic!("DevTools connection failed: {error}"),
        }
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page's session.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Navigates to `url` and waits for the load event.
    pub fn navigate(&mut self, url: &str) {
        let already = self.events.len();
        let answer = self.call("Page.navigate", json!({ "url": url }));
        assert!(
            answer.get("errorText").is_none(),
            "navigating to {url} failed: {answer}"
        );
        let deadline = Instant::now() + COMMAND_DEADLINE;
        while !self.events[already..]
            .iter()
            .any(|event| event["method"] == "Page.loadEventFired")
        {
            assert!(
                Instant::now() < deadline,
                "{url} did not load within {COMMAND_DEADLINE:?}"
            );
            if let Some(message) = self.receive()
                && message.get("method").is_some()
            {
                self.events.push(message);
            }
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns
    /// its value as JSON; panics on an exception.
    pub fn evaluate(&mut self, expression: &str) -> Value {
        let answer = self.call(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        if let Some(exception) = answer.get("exceptionDetails") {
            panic!("evaluating `{expression}` threw: {exception}");
        }
        answer["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true`; panics after `deadline` with
    /// the value of `describe` and the problems seen so far.
    pub fn wait_for(&mut self, expression: &str, deadline: Duration, describe: &str) {
        let give_up_at = Instant::now() + deadline;
        loop {
            if self.evaluate(expression) == json!(true) {
                return;
            }
            if Instant::now() >= give_up_at {
                let state = self.evaluate(describe);
                panic!(
                    "`{expression}` did not become true within {deadline:?}; {describe} = {state}\nproblems: {:#?}",
                    self.problems().lines
                );
            }
            // Drain events while waiting, so that none is lost.
            if let Some(message) = self.receive()
                && message.get("method").is_some()
            {
                self.events.push(message);
            }
        }
    }

    /// A PNG of the page as it is shown.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let answer = self.call(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": false }),
        );
        base64::engine::general_purpose::STANDARD
            .decode(answer["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64")
    }

    /// The URLs of every request the page made so far.
    pub fn requested_urls(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|event| event["method"] == "Network.requestWillBeSent")
            .filter_map(|event| event["params"]["request"]["url"].as_str().map(str::to_owned))
            .collect()
    }

    /// Console errors and warnings, uncaught exceptions, log entries of level
    /// error or warning (failed resources, CSP refusals, …), requests that
    /// failed and answers with a 4xx or 5xx status.
    pub fn problems(&self) -> Problems {
        let mut lines = Vec::new();
        for event in &self.events {
            let params = &event["params"];
            match event["method"].as_str().unwrap_or_default() {
                "Runtime.consoleAPICalled" => {
                    let kind = params["type"].as_str().unwrap_or_default();
                    if matches!(kind, "error" | "warning" | "assert") {
                        let text: Vec<String> = params["args"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|argument| {
                                argument["value"]
                                    .as_str()
                                    .map(str::to_owned)
                                    .unwrap_or_else(|| argument["description"].to_string())
                            })
                            .collect();
                        lines.push(format!("console.{kind}: {}", text.join(" ")));
                    }
                }
                "Runtime.exceptionThrown" => {
                    let details = &params["exceptionDetails"];
                    lines.push(format!(
                        "uncaught: {} {}",
                        details["text"].as_str().unwrap_or_default(),
                        details["exception"]["description"].as_str().unwrap_or_default()
                    ));
                }
                "Log.entryAdded" => {
                    let entry = &params["entry"];
                    let level = entry["level"].as_str().unwrap_or_default();
                    if matches!(level, "error" | "warning") {
                        lines.push(format!(
                            "log {level} ({}): {} {}",
                            entry["source"].as_str().unwrap_or_default(),
                            entry["text"].as_str().unwrap_or_default(),
                            entry["url"].as_str().unwrap_or_default()
                        ));
                    }
                }
                // A request the page or a navigation cancelled is no failure.
                "Network.loadingFailed" if params["canceled"] != json!(true) => {
                    lines.push(format!(
                        "request failed: {} ({})",
                        params["errorText"].as_str().unwrap_or_default(),
                        params["blockedReason"].as_str().unwrap_or("not blocked")
                    ));
                }
                "Network.responseReceived" => {
                    let response = &params["response"];
                    let status = response["status"].as_u64().unwrap_or(0);
                    if status >= 400 {
                        lines.push(format!(
                            "HTTP {status} for {}",
                            response["url"].as_str().unwrap_or_default()
                        ));
                    }
                }
                _ => {}
            }
        }
        Problems { lines }
    }

    /// Chromium's own log (stdout and stderr), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.socket.close(None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where tests leave files for people to look at: `target/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is under the target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&directory).expect("create target/test-artifacts");
    directory
}
