//! The server under test as a child process: start on a fresh data
//! directory and a free port, wait until ready, read its memory and CPU from
//! `/proc`, and stop it with SIGTERM the way an operator would.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A running `modelwatch serve`; killed (SIGKILL) on drop if still alive.
pub struct ServerProcess {
    child: Option<Child>,
    pub base_url: String,
    pub log_path: PathBuf,
    /// From spawn to the first 200 from `/readyz`.
    pub startup: Duration,
}

/// Memory of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub peak_rss_mb: f64,
    pub rss_mb: f64,
}

/// CPU time consumed so far by each thread name of a process (kernel names
/// are truncated to 15 bytes, so tokio's workers are `tokio-runtime-w`).
#[derive(Debug, Clone, Default)]
pub struct ThreadCpu {
    pub seconds_by_name: BTreeMap<String, f64>,
}

impl ThreadCpu {
    /// CPU seconds spent between `earlier` and `self`, per thread name.
    pub fn since(&self, earlier: &ThreadCpu) -> ThreadCpu {
        let seconds_by_name = self
            .seconds_by_name
            .iter()
            .map(|(name, seconds)| {
                let before = earlier.seconds_by_name.get(name).copied().unwrap_or(0.0);
                (name.clone(), seconds - before)
            })
            .filter(|(_, seconds)| *seconds > 0.0)
            .collect();
        ThreadCpu { seconds_by_name }
    }
}

/// A port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

impl ServerProcess {
    /// Starts `binary serve` on `data_dir` and waits for `/readyz`.
    pub fn start(binary: &Path, data_dir: &Path, log_dir: &Path) -> anyhow::Result<Self> {
        let port = free_port()?;
        let log_path = log_dir.join("modelwatch.log");
        let log = File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let started = Instant::now();
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
            .arg(data_dir)
            .env_remove("MODELWATCH_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut server = ServerProcess {
            child: Some(child),
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            startup: Duration::ZERO,
        };
        server.wait_ready(started, Duration::from_secs(20))?;
        Ok(server)
    }

    fn wait_ready(&mut self, started: Instant, timeout: Duration) -> anyhow::Result<()> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let url = format!("{}/readyz", self.base_url);
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                bail!(
                    "modelwatch exited with {status} before it was ready; its log:\n{}",
                    self.log_tail()
                );
            }
            let answered_ok = client
                .get(&url)
                .send()
                .is_ok_and(|response| response.status().is_success());
            if answered_ok {
                self.startup = started.elapsed();
                return Ok(());
            }
            if started.elapsed() > timeout {
                bail!(
                    "modelwatch did not answer 200 on {url} within {timeout:?}; its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the server process is still owned")
    }

    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .expect("the server process is still owned")
            .id()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        read_memory(self.pid())
    }

    pub fn thread_cpu(&self) -> anyhow::Result<ThreadCpu> {
        read_thread_cpu(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.pid())
    }

    pub fn disk_writes(&self) -> anyhow::Result<DiskWrites> {
        read_disk_writes(self.pid())
    }

    /// Sends SIGTERM and waits for a clean exit; returns how long the drain
    /// and final checkpoint took.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let pid = self.pid();
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .context("running `kill -TERM` (procps or coreutils must be installed)")?;
        if !status.success() {
            bail!("`kill -TERM {pid}` failed with {status}");
        }
        loop {
            if let Some(status) = self.child_mut().try_wait()? {
                self.child = None;
                if !status.success() {
                    bail!(
                        "modelwatch exited with {status} after SIGTERM; its log:\n{}",
                        self.log_tail()
                    );
                }
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "modelwatch did not exit within {timeout:?} of SIGTERM (it will be killed); its log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn status_kilobytes(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
}

/// VmHWM (peak resident set) and VmRSS of `pid`.
pub fn read_memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let peak = status_kilobytes(&status, "VmHWM:").context("no VmHWM in /proc status")?;
    let rss = status_kilobytes(&status, "VmRSS:").context("no VmRSS in /proc status")?;
    Ok(Memory {
        peak_rss_mb: peak / 1024.0,
        rss_mb: rss / 1024.0,
    })
}

/// Clock ticks per second for `/proc/*/stat` times.
fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (name, utime + stime in seconds) from one `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    // The name is in parentheses and may itself contain spaces or parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // After the name: state is field 3 of the man page, utime 14, stime 15.
    let user_ticks: f64 = fields.get(11)?.parse().ok()?;
    let system_ticks: f64 = fields.get(12)?.parse().ok()?;
    Some((name, (user_ticks + system_ticks) / clock_ticks_per_second()))
}

/// CPU seconds of every live thread of `pid`, summed per thread name.
pub fn read_thread_cpu(pid: u32) -> anyhow::Result<ThreadCpu> {
    let mut cpu = ThreadCpu::default();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing threads of {pid}"))?;
    for task in tasks.flatten() {
        let mut stat = String::new();
        // A thread may exit between listing and reading.
        if File::open(task.path().join("stat"))
            .and_then(|mut file| file.read_to_string(&mut stat))
            .is_err()
        {
            continue;
        }
        if let Some((name, seconds)) = parse_stat(&stat) {
            *cpu.seconds_by_name.entry(name).or_default() += seconds;
        }
    }
    Ok(cpu)
}

/// CPU seconds used so far by process `pid`, all threads including exited ones.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat(&stat))
        .map_or(0.0, |(_, seconds)| seconds)
}

/// CPU seconds used so far by this process.
pub fn own_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id())
}

/// What a process has written so far, from `/proc/PID/io`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskWrites {
    /// `wchar`: bytes passed to write(2) and its relatives (the WAL appends
    /// and the checkpoint's copies into the database file).
    pub written_bytes: u64,
    /// `write_bytes`: bytes the process caused to be sent to storage.
    pub storage_bytes: u64,
}

impl DiskWrites {
    pub fn since(&self, earlier: &DiskWrites) -> DiskWrites {
        DiskWrites {
            written_bytes: self.written_bytes.saturating_sub(earlier.written_bytes),
            storage_bytes: self.storage_bytes.saturating_sub(earlier.storage_bytes),
        }
    }
}

pub fn read_disk_writes(pid: u32) -> anyhow::Result<DiskWrites> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .with_context(|| format!("reading /proc/{pid}/io"))?;
    let field = |key: &str| {
        io.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().parse::<u64>().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/io"))
    };
    Ok(DiskWrites {
        written_bytes: field("wchar:")?,
        storage_bytes: field("write_bytes:")?,
    })
}

/// Size of the SQLite write-ahead log (`*-wal`) directly under `dir`.
pub fn wal_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().ends_with("-wal"))
                .filter_map(|entry| entry.metadata().ok())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Total size of the files directly under `dir` (the database, WAL and SHM).
pub fn directory_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|entry| entry.metadata().ok())
                .filter(|metadata| metadata.is_file())
                .map(|metadata| metadata.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Busy and total CPU ticks of the whole machine, from `/proc/stat`.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineCpu {
    busy_ticks: f64,
}

impl MachineCpu {
    pub fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = stat.lines().find(|line| line.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        let ticks: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|field| field.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
        let total_ticks: f64 = ticks.iter().take(8).sum();
        let idle_ticks = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
        MachineCpu {
            busy_ticks: total_ticks - idle_ticks,
        }
    }

    /// CPU seconds the whole machine spent busy since `earlier`.
    pub fn busy_seconds_since(&self, earlier: &MachineCpu) -> f64 {
        (self.busy_ticks - earlier.busy_ticks) / clock_ticks_per_second()
    }
}

/// The 1-minute load average.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `perf record` attached to a process, stopped with SIGINT so that it
/// writes its data file.
pub struct PerfRecording {
    child: Child,
}

impl PerfRecording {
    pub fn attach(pid: u32, output: &Path) -> anyhow::Result<PerfRecording> {
        let child = Command::new("perf")
            .args(["record", "-F", "999", "-g", "-p", &pid.to_string(), "-o"])
            .arg(output)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting `perf record` (install linux-perf, or drop --perf-record)")?;
        Ok(PerfRecording { child })
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status()?;
        let status = self.child.wait()?;
        // perf re-raises the SIGINT it was stopped with after writing its file.
        let stopped_by_us = std::os::unix::process::ExitStatusExt::signal(&status) == Some(2);
        if !status.success() && !stopped_by_us {
            bail!("`perf record` exited with {status}");
        }
        Ok(())
    }
}

/// A server on a fresh data directory under a new temporary directory (which
/// holds its logs too), announced on stderr with its start-up time and idle
/// memory.
pub struct FreshServer {
    pub scratch: tempfile::TempDir,
    pub data_dir: PathBuf,
    pub server: ServerProcess,
    pub idle_memory: Memory,
}

impl FreshServer {
    pub fn start(binary: &Path, prefix: &str, connections: usize) -> anyhow::Result<Self> {
        let scratch = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temporary directory")?;
        let data_dir = scratch.path().join("data");
        let server = ServerProcess::start(binary, &data_dir, scratch.path())?;
        let idle_memory = server.memory()?;
        eprintln!(
            "modelwatch ready on {} in {:.0} ms (idle RSS {:.1} MB); sending over {} connections",
            server.base_url,
            server.startup.as_secs_f64() * 1000.0,
            idle_memory.rss_mb,
            connections
        );
        Ok(Self {
            scratch,
            data_dir,
            server,
            idle_memory,
        })
    }
}
