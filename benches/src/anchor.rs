//! The Python anchors: finds (or builds) an interpreter with the packages an
//! anchor needs, and runs anchor scripts with a deadline, collecting the JSON
//! lines they print.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The shared anchors' environment, if someone has built it on this machine.
const SHARED_ANCHOR_PYTHON: &str = "/tmp/anchorvenv/bin/python";

/// What an anchor needs from its Python environment.
#[derive(Debug, Clone, Copy)]
pub struct PythonNeeds {
    /// Modules that must import.
    pub modules: &'static [&'static str],
    /// Pinned requirements to install into a fresh venv.
    pub packages: &'static [&'static str],
    /// The venv created under the target directory when no other interpreter fits.
    pub venv_name: &'static str,
}

/// The ingestion anchor: the seed's `prometheus_client` instrumentation.
pub const INGEST_PYTHON: PythonNeeds = PythonNeeds {
    modules: &["prometheus_client"],
    packages: &["prometheus_client==0.26.0"],
    venv_name: "bench-venv",
};

/// The ground-truth anchors (pandas merge plus scikit-learn), at the versions
/// of the shared anchors' main environment (`../shared/anchors/README.md`).
pub const QUALITY_PYTHON: PythonNeeds = PythonNeeds {
    modules: &["numpy", "pandas", "sklearn", "pyarrow"],
    packages: &[
        "numpy==2.4.6",
        "pandas==2.3.3",
        "scikit-learn==1.9.1",
        "scipy==1.17.1",
        "pyarrow==26.0.1",
    ],
    venv_name: "quality-venv",
};

fn imports(python: &Path, modules: &[&str]) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", &format!("import {}", modules.join(", "))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// An interpreter that imports every module of `needs`: the explicit one, the
/// shared anchor venv, or `target/<venv_name>` (created with pip on first use).
/// The shared anchors' folder (`given`, else `<workspace>/../shared/anchors`),
/// checked to hold `scripts`.
pub fn anchors_dir(given: Option<&Path>, workspace_root: &Path, scripts: &[&str]) -> anyhow::Result<PathBuf> {
    let anchors = given
        .map(Path::to_owned)
        .unwrap_or_else(|| workspace_root.join("..").join("shared").join("anchors"));
    let anchors = anchors.canonicalize().with_context(|| {
        format!(
            "the shared anchors' folder {} (pass --anchors DIR)",
            anchors.display()
        )
    })?;
    for script in scripts {
        if !anchors.join(script).is_file() {
            bail!("{} has no {script} (pass --anchors DIR)", anchors.display());
        }
    }
    Ok(anchors)
}

pub fn find_python(
    explicit: Option<&Path>,
    target_dir: &Path,
    needs: &PythonNeeds,
) -> anyhow::Result<PathBuf> {
    let modules = needs.modules.join(", ");
    let packages = needs.packages.join(" ");
    if let Some(python) = explicit {
        if imports(python, needs.modules) {
            return Ok(python.to_owned());
        }
        bail!(
            "{} cannot import {modules}: run `{} -m pip install {packages}`",
            python.display(),
            python.display()
        );
    }
    let shared = Path::new(SHARED_ANCHOR_PYTHON);
    if imports(shared, needs.modules) {
        return Ok(shared.to_owned());
    }
    let venv = target_dir.join(needs.venv_name);
    let python = venv.join("bin").join("python");
    if imports(&python, needs.modules) {
        return Ok(python);
    }
    eprintln!("creating {} with {packages} for the anchor", venv.display());
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .context("running `python3 -m venv` (is python3 installed?)")?;
    if !created.success() {
        bail!("`python3 -m venv {}` failed with {created}", venv.display());
    }
    let installed = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet"])
        .args(needs.packages)
        .status()
        .context("running pip in the bench venv")?;
    if !installed.success() || !imports(&python, needs.modules) {
        bail!(
            "could not install {packages} into {}; install them by hand or pass --python",
            venv.display()
        );
    }
    Ok(python)
}

/// Runs the ingestion anchor script on `events_file`; returns its JSON lines.
pub fn run(
    python: &Path,
    script: &Path,
    events_file: &Path,
    events: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let args: Vec<OsString> = vec![
        "--events-file".into(),
        events_file.into(),
        "--events".into(),
        events.to_string().into(),
    ];
    run_script(python, script, &args, timeout, "anchor")
}

/// Runs `python script args...` with a deadline; echoes its stderr (progress)
/// as it comes, each line after `log_prefix`, and returns the JSON lines of
/// its stdout.
pub fn run_script(
    python: &Path,
    script: &Path,
    args: &[OsString],
    timeout: Duration,
    log_prefix: &str,
) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut child = Command::new(python)
        .arg(script)
        .args(args)
        // Nothing is written next to the scripts, in particular not into the
        // shared anchors' folder.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {}", python.display(), script.display()))?;
    // Drain both pipes on their own threads so that neither can fill up and
    // stall the child while we wait on the deadline.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let log_prefix = log_prefix.to_owned();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("  {log_prefix}: {line}");
            text.push_str(&line);
            text.push('\n');
        }
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
            bail!(
                "{} did not finish within {timeout:?} and was killed",
                script.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{} failed with {status}:\n{stderr}", script.display());
    }
    stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).with_context(|| format!("anchor output is not JSON: {line}")))
        .collect()
}
