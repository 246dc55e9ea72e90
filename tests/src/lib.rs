//! Harness for cross-process tests: starts the real `hubd` binary, reads what
//! it prints, talks to its local API, kills it. Emulators of devices that
//! cannot be here (pty modems, TCP adbd) will live beside it.
//!
//! Waiting is always for an observable event with a deadline
//! ([`wait_for`]); no test sleeps and hopes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod audiosocket;
pub mod control_plane;
pub mod kamailio;
pub mod modem;
pub mod modem_hub;
pub mod recording;
pub mod sipp;
pub mod sshd;
pub mod sync_client;
pub mod tone;
pub mod udp_proxy;

/// The `hubd` binary of this build: `$HUBD_BIN`, or `hubd` beside the test
/// executable's `deps/` directory (cargo and nextest both put it there).
pub fn hubd_bin() -> PathBuf {
    workspace_bin("hubd", "HUBD_BIN")
}

/// A binary of this workspace: `$env_var`, or `name` beside the test
/// executable's `deps/` directory.
pub fn workspace_bin(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} does not exist: build it first (cargo build --workspace --bins) or set {env_var}",
        bin.display()
    );
    bin
}

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A `hubd` child process whose stdout lines are collected.
pub struct HubProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl HubProcess {
    /// Starts `hubd` with `args`; stderr goes to the test's stderr.
    pub fn spawn(args: &[&str]) -> HubProcess {
        Self::spawn_with_stderr(args, Stdio::inherit())
    }

    /// Starts `hubd` with `args`, its stderr (the log) going to `stderr`.
    pub fn spawn_with_stderr(args: &[&str], stderr: impl Into<Stdio>) -> HubProcess {
        Self::spawn_program(&hubd_bin(), args, stderr)
    }

    /// Starts `program` (a binary of this workspace) with `args`.
    pub fn spawn_program(program: &Path, args: &[&str], stderr: impl Into<Stdio>) -> HubProcess {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("hubd starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        HubProcess {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Starts `hubd demo` with `extra` arguments on a free port and waits
    /// until its API is ready.
    pub fn demo(data_dir: &Path, extra: &[&str]) -> (HubProcess, SocketAddr) {
        Self::demo_with_stderr(data_dir, extra, Stdio::inherit())
    }

    /// [`HubProcess::demo`] with its log going to `stderr`.
    pub fn demo_with_stderr(
        data_dir: &Path,
        extra: &[&str],
        stderr: impl Into<Stdio>,
    ) -> (HubProcess, SocketAddr) {
        let dir = data_dir.to_str().expect("utf-8 temp path");
        let mut args = vec!["demo", "--api", "127.0.0.1:0", "--data-dir", dir];
        args.extend_from_slice(extra);
        let mut hub = HubProcess::spawn_with_stderr(&args, stderr);
        let addr = hub.api_addr();
        wait_for("hubd to be ready", Duration::from_secs(30), || {
            (get(addr, "/health/ready").0 == 200).then_some(())
        });
        (hub, addr)
    }

    /// Starts `hubd run --config config` (whose `api.listen` may be port 0)
    /// and returns it with the API address it printed; it may not be ready yet.
    pub fn run_config(config: &Path) -> (HubProcess, SocketAddr) {
        let config = config.to_str().expect("utf-8 config path");
        let mut hub = HubProcess::spawn(&["run", "--config", config]);
        let addr = hub.api_addr();
        (hub, addr)
    }

    /// Waits for the line with the local API's URL (`http://ADDR/api/slots`,
    /// printed by `run` and `demo`) and returns ADDR.
    pub fn api_addr(&mut self) -> SocketAddr {
        let line = self.next_line_matching("the API URL", Duration::from_secs(30), |l| {
            l.contains("/api/slots")
        });
        line.split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no API address in {line:?}"))
    }

    /// The next stdout line for which `matches` holds.
    pub fn next_line_matching(
        &mut self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no {what} from hubd within {timeout:?}; it printed {:?}",
                    self.seen
                ),
            }
        }
    }

    /// The next stdout line, or `None` once stdout is closed.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(30))
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        wait_for("hubd to exit", timeout, || {
            self.child.try_wait().ok().flatten()
        })
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    call_with(addr, method, path, None)
}

fn call_with(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a test runtime");
    let timeout = Duration::from_secs(100);
    let answer = match body {
        Some(body) => runtime.block_on(hubd::api::client::request_json(
            addr, method, path, body, timeout,
        )),
        None => runtime.block_on(hubd::api::client::request(addr, method, path, timeout)),
    };
    match answer {
        Ok(answer) => (answer.status, answer.body),
        Err(e) => (0, e.to_string()),
    }
}

/// `GET path` on the hub API: status (0 when unreachable) and body.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    call(addr, "GET", path)
}

/// `POST path` (empty body) on the hub API.
pub fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    call(addr, "POST", path)
}

/// `POST path` with a JSON body on the hub API: status and body.
pub fn post_json(addr: SocketAddr, path: &str, body: &serde_json::Value) -> (u16, String) {
    call_with(addr, "POST", path, Some(&body.to_string()))
}

/// `GET path` parsed as JSON; panics unless the status is 200.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let (status, body) = get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// The value of the Prometheus sample `series` (name with labels, exactly as
/// rendered) in a `/metrics` scrape.
pub fn metric(addr: SocketAddr, series: &str) -> Option<f64> {
    let (status, body) = get(addr, "/metrics");
    if status != 200 {
        return None;
    }
    body.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// A read-only connection to the store in `data_dir` (`hub.db`).
pub fn open_store(data_dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        data_dir.join("hub.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("hub.db opens read-only")
}
