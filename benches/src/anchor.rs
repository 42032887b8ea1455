//! The Python anchor: finds (or builds) an interpreter with
//! `prometheus_client` 0.26.0 and runs `benches/anchors/seed_ingest.py` on
//! the same events, with a deadline.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The version the shared anchors were measured with.
pub const PROMETHEUS_CLIENT_VERSION: &str = "0.26.0";
/// The shared anchors' environment, if someone has built it on this machine.
const SHARED_ANCHOR_PYTHON: &str = "/tmp/anchorvenv/bin/python";

fn imports_prometheus_client(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import prometheus_client"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// An interpreter that imports `prometheus_client`: the explicit one, the
/// shared anchor venv, or `target/bench-venv` (created with pip on first use).
pub fn find_python(explicit: Option<&Path>, target_dir: &Path) -> anyhow::Result<PathBuf> {
    if let Some(python) = explicit {
        if imports_prometheus_client(python) {
            return Ok(python.to_owned());
        }
        bail!(
            "{} cannot import prometheus_client: run `{} -m pip install prometheus_client=={PROMETHEUS_CLIENT_VERSION}`",
            python.display(),
            python.display()
        );
    }
    let shared = Path::new(SHARED_ANCHOR_PYTHON);
    if imports_prometheus_client(shared) {
        return Ok(shared.to_owned());
    }
    let venv = target_dir.join("bench-venv");
    let python = venv.join("bin").join("python");
    if imports_prometheus_client(&python) {
        return Ok(python);
    }
    eprintln!(
        "creating {} with prometheus_client=={PROMETHEUS_CLIENT_VERSION} for the anchor",
        venv.display()
    );
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running `python3 -m venv` (is python3 installed?)")?;
    if !created.success() {
        bail!("`python3 -m venv {}` failed with {created}", venv.display());
    }
    let installed = Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            &format!("prometheus_client=={PROMETHEUS_CLIENT_VERSION}"),
        ])
        .status()
        .context("running pip in the bench venv")?;
    if !installed.success() || !imports_prometheus_client(&python) {
        bail!(
            "could not install prometheus_client=={PROMETHEUS_CLIENT_VERSION} into {}; \
             install it by hand or pass --python",
            venv.display()
        );
    }
    Ok(python)
}

/// Runs the anchor script on `events_file`; returns its JSON lines.
pub fn run(
    python: &Path,
    script: &Path,
    events_file: &Path,
    events: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut child = Command::new(python)
        .arg(script)
        .arg("--events-file")
        .arg(events_file)
        .args(["--events", &events.to_string()])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
    // Drain both pipes on their own threads so that neither can fill up and
    // stall the child while we wait on the deadline.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the anchor did not finish within {timeout:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("the anchor failed with {status}:\n{stderr}");
    }
    for line in stderr.lines() {
        eprintln!("  anchor: {line}");
    }
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).with_context(|| format!("anchor output is not JSON: {line}")))
        .collect()
}
