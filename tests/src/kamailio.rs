//! A real Kamailio (Debian's `kamailio` package) as the PBX's registrar, for
//! cross-process tests: started on a free loopback UDP port with the repo's
//! `deploy/kamailio/kamailio.cfg`, in a temporary directory, its `ctl`
//! module on a unix socket there, and read back with `kamcmd`.
//!
//! It must never: wait without a deadline (readiness is `kamcmd core.uptime`
//! answering, polled with [`crate::wait_for`]), or outlive its [`Kamailio`]
//! (it runs in its own process group, which drop kills).

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

/// How long Kamailio may take to start or stop.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How the registrar challenges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KamailioOptions {
    /// Challenge with `qop="auth"` (else without qop).
    pub qop: bool,
    /// The password of every user (the config's `SIP_PASSWORD`).
    pub password: String,
}

impl Default for KamailioOptions {
    fn default() -> Self {
        KamailioOptions {
            qop: true,
            password: "secret".to_owned(),
        }
    }
}

/// One registered contact, as `ul.dump` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The AOR (the user part: `6001`).
    pub aor: String,
    /// The contact URI.
    pub contact: String,
    /// Seconds until it expires.
    pub expires: Option<i64>,
}

/// A running Kamailio.
pub struct Kamailio {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    options: KamailioOptions,
}

/// The repo's registrar configuration.
pub fn config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kamailio/kamailio.cfg")
}

/// `name` from Debian's package (`/usr/sbin`, often not in a user's PATH),
/// else as found in PATH.
fn program(name: &str) -> PathBuf {
    let packaged = Path::new("/usr/sbin").join(name);
    if packaged.exists() {
        packaged
    } else {
        PathBuf::from(name)
    }
}

fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
    socket.local_addr().expect("bound").port()
}

impl Kamailio {
    /// Starts Kamailio on a free port and waits until it answers.
    pub fn start(options: KamailioOptions) -> Kamailio {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut kamailio = Kamailio {
            child: None,
            dir,
            addr,
            options,
        };
        kamailio.spawn();
        kamailio
    }

    /// Where it listens (UDP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn ctl(&self) -> String {
        format!("unix:{}", self.dir.path().join("kamailio_ctl").display())
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("kamailio.log"))
            .expect("a log file");
        let mut command = Command::new(program("kamailio"));
        command
            .arg("-f")
            .arg(config_path())
            .args(["-DD", "-E", "-Y"])
            .arg(self.dir.path())
            .arg("-l")
            .arg(format!("udp:{}", self.addr))
            .arg("-A")
            .arg(format!("CTL_SOCKET=\"{}\"", self.ctl()))
            .arg("-A")
            .arg(format!("SIP_PASSWORD=\"{}\"", self.options.password));
        if self.options.qop {
            command.args(["-A", "WITH_QOP"]);
        }
        let child = command
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("kamailio starts (Debian package kamailio)");
        self.child = Some(child);
        let what = format!("kamailio on {} to answer kamcmd", self.addr);
        wait_for(&what, START_TIMEOUT, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("kamailio exited ({status}): {}", self.log());
            }
            self.kamcmd(&["core.uptime"]).ok()
        });
    }

    /// Kamailio's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kamailio.log")).unwrap_or_default()
    }

    /// Runs `kamcmd -s CTL args…`: its output, or its error text.
    pub fn kamcmd(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new(program("kamcmd"))
            .arg("-s")
            .arg(self.ctl())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("kamcmd: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && !stdout.starts_with("error") {
            Ok(stdout)
        } else {
            Err(format!(
                "{stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    /// The registered contacts (`kamcmd ul.dump`).
    pub fn ul_dump(&self) -> Vec<Binding> {
        parse_ul_dump(&self.kamcmd(&["ul.dump"]).unwrap_or_default())
    }

    /// The AORs with at least one contact, sorted.
    pub fn registered_aors(&self) -> Vec<String> {
        let mut aors: Vec<String> = self.ul_dump().into_iter().map(|b| b.aor).collect();
        aors.sort();
        aors.dedup();
        aors
    }

    /// How many REGISTERs from `user` this Kamailio has seen since it started.
    pub fn register_count(&self, user: &str) -> u64 {
        self.kamcmd(&["htable.get", "reg", &format!("s:{user}")])
            .ok()
            .and_then(|out| {
                out.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("value:")
                        .and_then(|v| v.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Stops Kamailio (SIGTERM to its process group, then SIGKILL) and waits.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = i32::try_from(child.id()).expect("pid fits i32");
        // SAFETY: kill(2) on the process group this harness created.
        unsafe {
            libc::kill(-group, libc::SIGTERM);
        }
        let exited = wait_for_exit(&mut child, Duration::from_secs(10));
        // SAFETY: as above; whatever is left of the group goes.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        if !exited {
            let _ = child.wait();
        }
        // The port is free again once no process of the group holds it.
        wait_for("kamailio's UDP port to be free", START_TIMEOUT, || {
            UdpSocket::bind(self.addr).ok().map(drop)
        });
    }

    /// Stops Kamailio and starts it again on the same port (its in-memory
    /// registrations are gone).
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(self.dir.path().join("kamailio_ctl"));
        self.spawn();
    }
}

fn wait_for_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let group = i32::try_from(child.id()).unwrap_or(0);
            if group > 0 {
                // SAFETY: kill(2) on the process group this harness created.
                unsafe {
                    libc::kill(-group, libc::SIGKILL);
                }
            }
            let mut child = child;
            let _ = child.wait();
        }
    }
}

/// Parses `kamcmd ul.dump` output (Kamailio 5.x's nested text):
/// `AoR: 6001` opens an AOR, each `Address: sip:…` is one of its contacts,
/// an `Expires:` line after it belongs to that contact.
pub fn parse_ul_dump(text: &str) -> Vec<Binding> {
    let mut bindings: Vec<Binding> = Vec::new();
    let mut aor: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "AoR" if !value.is_empty() && value != "{" => aor = Some(value.to_owned()),
            "Address" => {
                if let Some(aor) = &aor {
                    bindings.push(Binding {
                        aor: aor.clone(),
                        contact: value.to_owned(),
                        expires: None,
                    });
                }
            }
            "Expires" => {
                if let Some(last) = bindings.last_mut()
                    && last.expires.is_none()
                {
                    last.expires = value.parse().ok();
                }
            }
            _ => {}
        }
    }
    bindings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kamailio_5_6_ul_dump() {
        // Trimmed from `kamcmd ul.dump` of Kamailio 5.6.3.
        let dump = "{\n\tDomains: {\n\t\tDomain: {\n\t\t\tDomain: location\n\t\t\tSize: 1024\n\
            \t\t\tAoRs: {\n\t\t\t\tInfo: {\n\t\t\t\t\tAoR: 6001\n\t\t\t\t\tHashID: 821943567\n\
            \t\t\t\t\tContacts: {\n\t\t\t\t\t\tContact: {\n\
            \t\t\t\t\t\t\tAddress: sip:6001@127.0.0.1:56688\n\t\t\t\t\t\t\tExpires: 60\n\
            \t\t\t\t\t\t\tCall-ID: cap1\n\t\t\t\t\t\t\tLast-Keepalive: 1795531836\n\
            \t\t\t\t\t\t}\n\t\t\t\t\t}\n\t\t\t\t}\n\t\t\t}\n\
            \t\t\tStats: {\n\t\t\t\tRecords: 1\n\t\t\t\tMax-Slots: 1\n\t\t\t}\n\t\t}\n\t}\n}\n";
        assert_eq!(
            parse_ul_dump(dump),
            vec![Binding {
                aor: "6001".into(),
                contact: "sip:6001@127.0.0.1:56688".into(),
                expires: Some(60),
            }]
        );
        assert!(parse_ul_dump("{\n\tDomains: {\n\t\tAoRs: {\n\t\t}\n\t}\n}\n").is_empty());
    }
}
