//! The processes a run starts: each one stopped when dropped and never outliving the
//! harness, the database server they share, and the deployment of one system (its
//! API and worker processes, started with the settings both systems get). Also what
//! the harness reads of processes and of the machine: memory, free ports, load.

use std::fs::{self, File};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::settings::{BATCH_SIZE, OUR_BINARY, POLL_MS, QUEUE};
use crate::systems::{Part, System};

/// How long a process may take to come up (database, API).
const START_LIMIT: Duration = Duration::from_secs(60);
/// How long a stopped process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A process the harness started. Dropping it stops it (SIGTERM, SIGKILL after
/// [`STOP_GRACE`]), so none outlives its phase or a panic; `PR_SET_PDEATHSIG` kills
/// it if the harness itself dies. Its stdout and stderr go to `log`.
pub struct ChildProcess {
    /// How progress lines and panics name it.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command`, its output going to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> ChildProcess {
        let output = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let errors = output.try_clone().expect("clone the log file handle");
        command.stdin(Stdio::null()).stdout(output).stderr(errors);
        die_with_harness(&mut command);
        let child =
            command.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", command.get_program()));
        ChildProcess { name: name.to_string(), child, log: log.to_path_buf() }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics, showing the end of its log, if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll a child process") {
            let log = fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(30)..].join("\n");
            panic!("{} exited ({status}); end of {}:\n{tail}", self.name, self.log.display());
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        // SAFETY: plain kill(2) on our own child, not reaped yet, so its pid is still ours.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Makes the process started by `command` get SIGKILL when the thread that starts
/// it (the harness's only thread) dies, however it dies.
pub fn die_with_harness(command: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // prctl, which is async-signal-safe; it touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// A port that was free a moment ago on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port()
}

/// `VmRSS` (resident now) or `VmHWM` (peak resident) of a process, in MB (10^6 bytes).
pub fn memory_mb(pid: u32, field: &str) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib * 1024.0 / 1e6
}

/// The database server of the run, on a free port, over a temporary storage dir
/// removed after the server stops (fields drop in order). The dir is in the logs
/// dir, which the next run wipes should this one be killed.
pub struct DatabaseServer {
    /// Held for its `Drop`, which stops the server.
    _process: ChildProcess,
    pub port: u16,
    _storage: tempfile::TempDir,
}

impl DatabaseServer {
    /// Starts `binary` and waits until it listens.
    pub fn start(binary: &Path, logs_dir: &Path) -> DatabaseServer {
        let log = logs_dir.join("secantusd-rs.log");
        let storage = tempfile::Builder::new().prefix("db-").tempdir_in(logs_dir).expect("temp dir");
        let port = free_port();
        let mut command = Command::new(binary);
        command.arg("--port").arg(port.to_string()).arg("--storage-path").arg(storage.path().join("data"));
        let mut process = ChildProcess::spawn("secantusd-rs", command, &log);
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            process.assert_running();
            assert!(Instant::now() < deadline, "secantusd-rs did not listen on {port}; see {}", log.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        DatabaseServer { _process: process, port, _storage: storage }
    }

    /// The connection string of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{database}", self.port)
    }
}

/// The running processes of one system (the API first, if any); stopped when dropped.
pub struct Deployment {
    pub processes: Vec<ChildProcess>,
    base_url: Option<String>,
}

impl Deployment {
    /// Starts `part` of `system` on the database at `url`, its logs in
    /// `logs_dir/<label>-<process>.log`, and waits until its API answers.
    pub async fn start(
        system: System,
        part: Part,
        url: &str,
        label: &str,
        logs_dir: &Path,
        seed_app_dir: &Path,
        http: &reqwest::Client,
    ) -> Deployment {
        let port = free_port();
        let log = |process: &str| logs_dir.join(format!("{label}-{process}.log"));
        let mut processes = Vec::new();
        match system {
            System::Ours => {
                let mut command = Command::new(OUR_BINARY);
                command.arg(part.name()).current_dir(logs_dir); // no .env there
                for name in ["API_TOKEN", "ALLOWED_SITES"] {
                    command.env_remove(name);
                }
                command
                    .env("PORT", port.to_string())
                    .env("HOST", "127.0.0.1")
                    .env("MONGO_URL", url)
                    .env("QUEUE_NAME", QUEUE)
                    .env("BATCH_SIZE", BATCH_SIZE.to_string())
                    .env("POLL_MS", POLL_MS.to_string())
                    // BENCH_LOG=debug shows each batch's step times in the worker's log.
                    .env("RUST_LOG", std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()));
                processes.push(ChildProcess::spawn(&format!("ours {}", part.name()), command, &log(part.name())));
            }
            System::Seed => {
                if part.serves_api() {
                    let mut command = Command::new("node");
                    command.arg("server.js").current_dir(seed_app_dir);
                    command.env("PORT", port.to_string()).env("MONGO_URL", url).env("QUEUE_NAME", QUEUE);
                    processes.push(ChildProcess::spawn("seed server.js", command, &log("server")));
                }
                if part.runs_worker() {
                    let mut command = Command::new("node");
                    command.arg("worker/processor.js").current_dir(seed_app_dir);
                    command
                        .env("MONGO_URL", url)
                        .env("QUEUE_NAME", QUEUE)
                        .env("BATCH_SIZE", BATCH_SIZE.to_string())
                        .env("POLL_MS", POLL_MS.to_string());
                    processes.push(ChildProcess::spawn("seed worker/processor.js", command, &log("worker")));
                }
            }
        }
        let mut deployment =
            Deployment { processes, base_url: part.serves_api().then(|| format!("http://127.0.0.1:{port}")) };
        if let Some(base) = deployment.base_url.clone() {
            let deadline = Instant::now() + START_LIMIT;
            loop {
                deployment.assert_running();
                let probe = http.get(format!("{base}/stats?site_id=probe")).send().await;
                if probe.is_ok_and(|response| response.status() == StatusCode::OK) {
                    break;
                }
                assert!(Instant::now() < deadline, "{} {} did not answer at {base}", system.name(), part.name());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        deployment
    }

    /// Where its API answers (`http://127.0.0.1:<port>`).
    pub fn base_url(&self) -> &str {
        self.base_url.as_deref().expect("this deployment serves the API")
    }

    /// The process answering HTTP (ours: the only one).
    pub fn api_pid(&self) -> u32 {
        self.processes[0].pid()
    }

    /// Panics, showing the end of its log, if any of its processes has exited.
    pub fn assert_running(&mut self) {
        self.processes.iter_mut().for_each(ChildProcess::assert_running);
    }
}
