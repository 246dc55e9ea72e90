//! A real OpenSSH server on loopback, for tests of code that runs commands
//! over SSH (the USB power cycle's `uhubctl` on another machine).
//!
//! It owns a temporary directory holding a fresh host key, a client key it
//! authorizes, its `sshd_config`, its log, and the client configurations and
//! `known_hosts` files of [`Sshd::client_config`]; and the `sshd -D -e`
//! child, which it starts on a free `127.0.0.1` port and waits for until
//! the port answers with an SSH banner (polled, never a fixed sleep).
//!
//! It must never touch the machine's own sshd configuration, host keys or
//! `~/.ssh` (the only thing it creates outside its directory is
//! `/run/sshd`, the privilege separation directory sshd refuses to start
//! without), and never outlive its [`Sshd`]: dropping it kills the server.
//!
//! The server logs in only the user running the test, by key (no PAM, no
//! passwords). Tests run as root, hence `PermitRootLogin prohibit-password`;
//! `StrictModes no` because the temporary directory's modes are not sshd's
//! business. (`UsePrivilegeSeparation` is not set: OpenSSH removed it in 7.5
//! and warns about it.) Without PAM, sshd refuses an account whose password
//! is locked (`!` in /etc/shadow; Debian's root has `*`, which is fine).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::wait_for;

/// The OpenSSH server binary (sshd re-executes itself: it must be absolute).
pub const SSHD: &str = "/usr/sbin/sshd";

/// How long the server may take to answer on its port.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many ports are tried when another process takes the free port first.
const PORT_ATTEMPTS: usize = 5;

/// A running `sshd` on `127.0.0.1`.
pub struct Sshd {
    child: Child,
    dir: TempDir,
    port: u16,
}

impl Sshd {
    /// Generates keys, writes the configuration and starts the server;
    /// returns once it answers. Panics (with sshd's log) if it cannot.
    pub fn start() -> Sshd {
        ensure_privsep_dir();
        let dir = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir()
            .expect("a temp dir");
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        keygen(&host_key);
        keygen(&client_key);
        fs::copy(pub_path(&client_key), dir.path().join("authorized_keys"))
            .expect("authorized_keys written");
        let log_path = dir.path().join("sshd.log");
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let config = dir.path().join("sshd_config");
            fs::write(&config, sshd_config(dir.path(), port)).expect("sshd_config written");
            let log = fs::File::create(&log_path).expect("sshd.log created");
            let mut child = Command::new(SSHD)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {SSHD} ({e}): install openssh-server"));
            match wait_answering(&mut child, port) {
                Ok(()) => return Sshd { child, dir, port },
                Err(status) => {
                    let log = fs::read_to_string(&log_path).unwrap_or_default();
                    // Another process may take the port between our probe
                    // and sshd's bind: try another one.
                    assert!(
                        log.contains("Address already in use"),
                        "sshd exited ({status}) before answering on port {port}:\n{log}"
                    );
                }
            }
        }
        panic!("sshd found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// The port it listens on (`127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory (keys, configuration, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key the server accepts for the current user.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// The server's public host key, `ssh-ed25519 AAAA…`.
    pub fn host_public_key(&self) -> String {
        let text = fs::read_to_string(pub_path(&self.dir.path().join("host_ed25519")))
            .expect("the host key was generated");
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A fresh private key named `name` that the server does not accept.
    pub fn stranger_key(&self, name: &str) -> PathBuf {
        let key = self.dir.path().join(name);
        keygen(&key);
        key
    }

    /// Writes an ssh client configuration in which `alias` reaches this
    /// server as the current user with `identity`, and returns its path.
    /// Its known-hosts file, `known_hosts-ALIAS` beside it, starts empty
    /// ([`Sshd::known_hosts`]); global known hosts are not read.
    pub fn client_config(&self, alias: &str, identity: &Path) -> PathBuf {
        let known_hosts = self.known_hosts(alias);
        let path = self.dir.path().join(format!("ssh_config-{alias}"));
        let text = format!(
            "Host {alias}\n\
             \x20 HostName 127.0.0.1\n\
             \x20 Port {port}\n\
             \x20 User {user}\n\
             \x20 IdentityFile \"{identity}\"\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 UserKnownHostsFile \"{known_hosts}\"\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 PasswordAuthentication no\n\
             \x20 KbdInteractiveAuthentication no\n",
            port = self.port,
            user = current_user(),
            identity = identity.display(),
            known_hosts = known_hosts.display(),
        );
        fs::write(&path, text).expect("ssh client config written");
        path
    }

    /// The known-hosts file of [`Sshd::client_config`]`(alias, …)`.
    pub fn known_hosts(&self, alias: &str) -> PathBuf {
        self.dir.path().join(format!("known_hosts-{alias}"))
    }

    /// What sshd logged so far (`-e`: its log goes to stderr, kept in a file).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// Kills the server and waits until it is gone: its port refuses
    /// connections from then on. Keeps the directory.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until `port` answers with an SSH banner, or `child` exits.
fn wait_answering(child: &mut Child, port: u16) -> Result<(), ExitStatus> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_for("sshd to answer", START_TIMEOUT, || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(status));
        }
        banner(addr).then_some(Ok(()))
    })
}

/// Whether `addr` answers with an SSH banner within a second.
fn banner(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("SSH-2.0-")
}

fn sshd_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey \"{d}/host_ed25519\"\n\
         PidFile \"{d}/sshd.pid\"\n\
         AuthorizedKeysFile \"{d}/authorized_keys\"\n\
         AuthorizedKeysCommand none\n\
         AuthorizedPrincipalsFile none\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         HostbasedAuthentication no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         ForceCommand none\n\
         PermitUserEnvironment no\n\
         PermitUserRC no\n\
         PermitTTY no\n\
         AllowTcpForwarding no\n\
         AllowAgentForwarding no\n\
         X11Forwarding no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         LogLevel VERBOSE\n"
    )
}

/// `ssh-keygen` an unencrypted ed25519 key at `path` (and `path.pub`).
fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vss-tests", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen ({e}): install openssh-client"));
    assert!(
        out.status.success(),
        "ssh-keygen {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pub_path(key: &Path) -> PathBuf {
    let mut name = key.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The user name the test runs as (the one sshd lets in).
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// sshd refuses to start without its privilege separation directory.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).expect("create /run/sshd (run the tests as root)");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod /run/sshd");
    }
}
