//! The USB power cycle, the recovery ladder's last step before FAULT: cut and
//! restore a hung modem's USB port power with `uhubctl`, on this hub or, over
//! SSH, on the machine whose USB hub the modem hangs on.
//!
//! Owns the command line (built by pure functions, tested without running
//! anything), running it under a deadline, and turning the outcome into one
//! precise [`PowerError`]. It does not decide *when* to power-cycle: that is
//! [`super::recovery`]'s.
//!
//! Never runs a local shell (arguments go to the program as argv), never
//! panics on what the programs print, never keeps more than [`TAIL_BYTES`] of
//! a stream, and never leaves a process behind after a timeout or when its
//! future is dropped: the program runs in a process group of its own, which
//! is killed whole (ssh's `ProxyCommand` or a wrapper script included).
//!
//! The command is `uhubctl -l LOCATION -p PORT -a cycle -d 2 -N`: power off,
//! [`OFF_SECONDS`] off, power on; `-N` skips reading the attached devices'
//! descriptions, which a hung modem may never answer.
//!
//! Over SSH (`ssh` set in [`UsbPowerConfig`]) the command line is
//! `ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=accept-new
//! [-F SSH_CONFIG] -- HOST 'uhubctl' '-l' …`. The remote sshd hands the command
//! to the login shell, so every word is single-quoted ([`shell_quote`]).
//! `BatchMode`: never a password or passphrase prompt, the hub has nobody to
//! answer it. `accept-new`: a host's key is learned on the first connection
//! (the first power cycle may happen at 3 a.m., long after installation), a
//! key that *changed* is always refused; to pin the key from the start, put
//! it in the `known_hosts` file beforehand.

use std::borrow::Cow;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::config::UsbPowerConfig;

/// How long the port stays unpowered (`uhubctl -d`).
pub const OFF_SECONDS: u32 = 2;

/// How long ssh may take to connect (`ConnectTimeout`), in seconds.
pub const SSH_CONNECT_TIMEOUT_SECONDS: u32 = 5;

/// The most of each output stream (stdout, stderr) that is kept: its end.
pub const TAIL_BYTES: usize = 8 * 1024;

/// How many of stderr's last lines an error quotes.
const ERROR_LINES: usize = 5;

/// The remote shell's exit status for "command not found".
const SHELL_NOT_FOUND: i32 = 127;

/// ssh's exit status for its own failures (connect, authenticate, host key).
const SSH_FAILED: i32 = 255;

/// A power cycle that `uhubctl` reported as done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerCycleReport {
    /// What ran on this machine, program first (ssh's argv when over SSH).
    pub argv: Vec<String>,
    /// The end of what `uhubctl` printed on stdout: the port's status before
    /// and after, for the log.
    pub output: String,
}

/// Why a power cycle did not happen, or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// The program to run (`uhubctl` locally, or `ssh`) is not installed here.
    #[error("{program} not found on this hub: {}", not_found_hint(.program))]
    NotFound {
        /// The program as it was looked up.
        program: String,
    },
    /// The program exists but could not be started (permissions, a bad path).
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The remote shell could not find `uhubctl` (exit status 127).
    #[error(
        "{program} not found on {host}: install uhubctl there, or set driver.power.command to its full path ({stderr})"
    )]
    RemoteNotFound {
        /// The SSH host.
        host: String,
        /// The program as it was looked up there.
        program: String,
        /// The last lines of stderr.
        stderr: String,
    },
    /// `uhubctl` ran and failed (no hub at that location, no permission on
    /// the USB device, …).
    #[error("{program}{} failed ({status}): {stderr}", on_host(.host.as_deref()))]
    Failed {
        /// The program.
        program: String,
        /// The SSH host it ran on; `None`: this hub.
        host: Option<String>,
        /// How it ended.
        status: ExitStatus,
        /// The last lines of stderr.
        stderr: String,
    },
    /// ssh itself failed (exit status 255): it could not connect,
    /// authenticate or trust the host, so `uhubctl` never ran.
    #[error("ssh to {host} failed, {kind}: {stderr}")]
    Ssh {
        /// The SSH host.
        host: String,
        /// What went wrong, as far as ssh's message tells.
        kind: SshFailure,
        /// The last lines of ssh's stderr.
        stderr: String,
    },
    /// The program did not finish in time; it was killed with its process group.
    #[error("{program}{} did not finish within {timeout:?} and was killed ({stderr})", on_host(.host.as_deref()))]
    Timeout {
        /// The program (`ssh` when over SSH).
        program: String,
        /// The SSH host; `None`: this hub.
        host: Option<String>,
        /// The deadline it missed.
        timeout: Duration,
        /// The last lines of stderr so far.
        stderr: String,
    },
    /// Reading the program's output or waiting for it failed.
    #[error("running {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// What kind of ssh failure, read from ssh's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SshFailure {
    /// The host refused the hub's key (`Permission denied (publickey)`).
    Auth,
    /// The host's key is unknown in batch mode, or changed.
    HostKey,
    /// No connection: refused, timed out, no route, unknown host name.
    Unreachable,
    /// Anything else (a bad `ssh_config`, a protocol error).
    Other,
}

impl std::fmt::Display for SshFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SshFailure::Auth => {
                "authentication refused (is the hub's key in the host's authorized_keys, and IdentityFile right?)"
            }
            SshFailure::HostKey => {
                "host key not accepted (it changed, or is not in known_hosts: check it)"
            }
            SshFailure::Unreachable => "cannot connect (is the host up and its sshd running?)",
            SshFailure::Other => "see its message",
        })
    }
}

impl SshFailure {
    /// Classifies ssh's stderr (OpenSSH's messages).
    pub fn classify(stderr: &str) -> SshFailure {
        const AUTH: &[&str] = &["Permission denied", "Too many authentication failures"];
        const HOST_KEY: &[&str] = &[
            "Host key verification failed",
            "REMOTE HOST IDENTIFICATION HAS CHANGED",
        ];
        const UNREACHABLE: &[&str] = &[
            "Connection refused",
            "timed out",
            "No route to host",
            "Network is unreachable",
            "Could not resolve hostname",
            "Connection reset",
            "Connection closed by",
        ];
        let has = |needles: &[&str]| needles.iter().any(|n| stderr.contains(n));
        if has(HOST_KEY) {
            SshFailure::HostKey
        } else if has(AUTH) {
            SshFailure::Auth
        } else if has(UNREACHABLE) {
            SshFailure::Unreachable
        } else {
            SshFailure::Other
        }
    }
}

fn not_found_hint(program: &str) -> &'static str {
    if program == "ssh" {
        "install openssh-client"
    } else {
        "install uhubctl, or set driver.power.command to its full path"
    }
}

fn on_host(host: Option<&str>) -> String {
    host.map(|h| format!(" on {h}")).unwrap_or_default()
}

/// The `uhubctl` invocation for `config`, program first.
pub fn uhubctl_argv(config: &UsbPowerConfig) -> Vec<String> {
    vec![
        config.command.clone(),
        "-l".into(),
        config.location.clone(),
        "-p".into(),
        config.port.to_string(),
        "-a".into(),
        "cycle".into(),
        "-d".into(),
        OFF_SECONDS.to_string(),
        "-N".into(),
    ]
}

/// What runs on this machine, program first: [`uhubctl_argv`] itself, or
/// `ssh … -- HOST 'uhubctl' …` with the remote command as one shell-quoted
/// word list.
pub fn command_line(config: &UsbPowerConfig) -> Vec<String> {
    let uhubctl = uhubctl_argv(config);
    let Some(host) = &config.ssh else {
        return uhubctl;
    };
    let mut argv: Vec<String> = vec![
        "ssh".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={SSH_CONNECT_TIMEOUT_SECONDS}"),
        "-o".into(),
        "StrictHostKeyChecking=accept-new".into(),
    ];
    if let Some(file) = &config.ssh_config {
        argv.push("-F".into());
        argv.push(file.to_string_lossy().into_owned());
    }
    // `--` before the host: nothing after it is read as an ssh option, even
    // a host or a remote word starting with `-`.
    argv.push("--".into());
    argv.push(host.clone());
    argv.push(shell_join(&uhubctl));
    argv
}

/// `word` as one word for a POSIX shell: as is when it is made only of
/// characters no shell treats specially, else single-quoted (a `'` inside
/// becomes `'\''`).
pub fn shell_quote(word: &str) -> Cow<'_, str> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b"-_./:,+@".contains(&b);
    if !word.is_empty() && word.bytes().all(plain) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// `words` as one shell command line.
pub fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cuts and restores the USB power of `config`'s port; kills the program
/// and fails with [`PowerError::Timeout`] if it has not finished within
/// `timeout` (uhubctl itself takes [`OFF_SECONDS`] and a little more).
pub async fn power_cycle(
    config: &UsbPowerConfig,
    timeout: Duration,
) -> Result<PowerCycleReport, PowerError> {
    let argv = command_line(config);
    let Some((program, args)) = argv.split_first() else {
        // command_line always starts with a program; keep the type honest.
        return Err(PowerError::NotFound {
            program: String::new(),
        });
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => PowerError::NotFound {
            program: program.clone(),
        },
        _ => PowerError::Spawn {
            program: program.clone(),
            source,
        },
    })?;
    let mut group = ProcessGroup(child.id());
    let mut stdout = Tail::default();
    let mut stderr = Tail::default();
    let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
    let finished = tokio::time::timeout(timeout, async {
        let (out, err, status) = tokio::join!(
            stdout.read_from(out_pipe),
            stderr.read_from(err_pipe),
            child.wait()
        );
        out.and(err).and(status)
    })
    .await;
    let host = config.ssh.clone();
    let status = match finished {
        Ok(Ok(status)) => {
            group.disarm();
            status
        }
        Ok(Err(source)) => {
            return Err(PowerError::Io {
                program: program.clone(),
                source,
            });
        }
        Err(_elapsed) => {
            drop(group);
            // The group is dead; reap the leader unless `wait` already did.
            let _ = child.kill().await;
            return Err(PowerError::Timeout {
                program: program.clone(),
                host,
                timeout,
                stderr: stderr.last_lines(ERROR_LINES),
            });
        }
    };
    judge(status, &stderr.last_lines(ERROR_LINES), config)?;
    Ok(PowerCycleReport {
        argv,
        output: stdout.text(),
    })
}

/// The outcome of a finished run: `Ok` on exit status 0, else the error
/// that says why, from the status and stderr's last lines.
fn judge(status: ExitStatus, stderr: &str, config: &UsbPowerConfig) -> Result<(), PowerError> {
    if status.success() {
        return Ok(());
    }
    let stderr = if stderr.is_empty() {
        "nothing on stderr".to_owned()
    } else {
        stderr.to_owned()
    };
    match (&config.ssh, status.code()) {
        (Some(host), Some(SSH_FAILED)) => Err(PowerError::Ssh {
            host: host.clone(),
            kind: SshFailure::classify(&stderr),
            stderr,
        }),
        (Some(host), Some(SHELL_NOT_FOUND)) => Err(PowerError::RemoteNotFound {
            host: host.clone(),
            program: config.command.clone(),
            stderr,
        }),
        (host, _) => Err(PowerError::Failed {
            program: config.command.clone(),
            host: host.clone(),
            status,
            stderr,
        }),
    }
}

/// The end of an output stream: at most [`TAIL_BYTES`], however much the
/// program prints (the rest is read and dropped, so the program never
/// blocks on a full pipe).
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL_BYTES {
            let excess = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..excess);
        }
    }

    fn kept(&self) -> &[u8] {
        let start = self.bytes.len().saturating_sub(TAIL_BYTES);
        &self.bytes[start..]
    }

    async fn read_from(&mut self, pipe: Option<impl AsyncRead + Unpin>) -> io::Result<()> {
        let Some(mut pipe) = pipe else {
            return Ok(());
        };
        let mut chunk = [0u8; 4096];
        loop {
            match pipe.read(&mut chunk).await? {
                0 => return Ok(()),
                n => self.push(&chunk[..n]),
            }
        }
    }

    /// Everything kept, as text, trimmed.
    fn text(&self) -> String {
        String::from_utf8_lossy(self.kept()).trim().to_owned()
    }

    /// The last `n` non-blank lines, trimmed, on one line joined by ` | `.
    fn last_lines(&self, n: usize) -> String {
        let text = String::from_utf8_lossy(self.kept());
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

/// The child's process group (its id is the child's pid), killed on drop
/// unless disarmed once the child finished on its own.
///
/// **Invariant:** armed only while the child has not been reaped, or while
/// members of its group may still run after a timeout. A group id is not
/// reused while any member of the group lives, so the kill never hits
/// another process.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.and_then(|id| libc::pid_t::try_from(id).ok()) {
            // SAFETY: kill(2) with a negative pid signals the process group
            // our child leads (spawned with process_group(0)); no memory is
            // involved.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::config::{Config, DriverConfig};

    fn config(ssh: Option<&str>) -> UsbPowerConfig {
        UsbPowerConfig {
            location: "1-1.4".into(),
            port: 3,
            ssh: ssh.map(str::to_owned),
            ssh_config: None,
            command: "uhubctl".into(),
        }
    }

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn local_argv_is_uhubctl_itself() {
        assert_eq!(
            command_line(&config(None)),
            [
                "uhubctl", "-l", "1-1.4", "-p", "3", "-a", "cycle", "-d", "2", "-N"
            ]
        );
    }

    #[test]
    fn ssh_argv_quotes_the_remote_command() {
        let mut power = config(Some("pi@usb-hub.lan"));
        power.command = "/opt/my tools/uhubctl".into();
        power.ssh_config = Some(PathBuf::from("/etc/vss/hubd-ssh_config"));
        assert_eq!(
            command_line(&power),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-F",
                "/etc/vss/hubd-ssh_config",
                "--",
                "pi@usb-hub.lan",
                "'/opt/my tools/uhubctl' -l 1-1.4 -p 3 -a cycle -d 2 -N",
            ]
        );
    }

    #[test]
    fn shell_quote_leaves_plain_words_and_quotes_the_rest() {
        for (word, expect) in [
            ("uhubctl", "uhubctl"),
            ("/usr/sbin/uhubctl", "/usr/sbin/uhubctl"),
            ("1-1.4", "1-1.4"),
            ("a,b+c@d:e_f", "a,b+c@d:e_f"),
            ("", "''"),
            ("a b", "'a b'"),
            ("it's", r"'it'\''s'"),
            ("'", r"''\'''"),
            ("$(reboot)", "'$(reboot)'"),
            ("`id`;rm -rf /", "'`id`;rm -rf /'"),
            ("x\ny", "'x\ny'"),
            ("~root", "'~root'"),
            ("=zsh", "'=zsh'"),
            ("50%", "'50%'"),
            ("*", "'*'"),
            ("a\\b", "'a\\b'"),
        ] {
            assert_eq!(shell_quote(word), expect, "{word:?}");
        }
    }

    /// The quoted form, read back by a real `sh`, gives the original words.
    #[test]
    fn a_real_shell_reads_back_the_quoted_words() {
        let words: Vec<String> = [
            "plain",
            "",
            "two words",
            "it's",
            "'''",
            "$HOME",
            "$(echo pwned)",
            "`echo pwned`",
            "a\"b",
            "back\\slash",
            "new\nline",
            "tab\there",
            "glob*?[x]",
            "~",
            "-n",
            "ünïcødé",
        ]
        .iter()
        .map(|w| w.to_string())
        .collect();
        let script = format!(
            "for w in {}; do printf '%s\\0' \"$w\"; done",
            shell_join(&words)
        );
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh runs");
        assert!(out.status.success(), "{script}");
        let back: Vec<String> = out
            .stdout
            .split(|&b| b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        // printf terminates each word with NUL: one empty piece after the last.
        assert_eq!(back[..back.len() - 1], words[..]);
    }

    #[test]
    fn exit_statuses_become_precise_errors() {
        let local = config(None);
        let remote = config(Some("hubpi"));
        assert!(judge(exited(0), "", &local).is_ok());
        assert!(judge(exited(0), "", &remote).is_ok());

        let e = judge(
            exited(1),
            "No compatible devices detected at location 1-1.4!",
            &local,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "uhubctl failed (exit status: 1): No compatible devices detected at location 1-1.4!"
        );
        let e = judge(exited(1), "", &remote).unwrap_err();
        assert_eq!(
            e.to_string(),
            "uhubctl on hubpi failed (exit status: 1): nothing on stderr"
        );
        let e = judge(ExitStatus::from_raw(libc::SIGKILL), "", &local).unwrap_err();
        assert!(matches!(e, PowerError::Failed { .. }), "{e:?}");

        // 255 and 127 mean ssh and the remote shell only over SSH.
        assert!(matches!(
            judge(exited(255), "", &local),
            Err(PowerError::Failed { .. })
        ));
        let e = judge(
            exited(255),
            "root@hubpi: Permission denied (publickey).",
            &remote,
        );
        assert!(
            matches!(
                e,
                Err(PowerError::Ssh {
                    kind: SshFailure::Auth,
                    ..
                })
            ),
            "{e:?}"
        );
        let e = judge(
            exited(127),
            "bash: line 1: uhubctl: command not found",
            &remote,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "uhubctl not found on hubpi: install uhubctl there, or set driver.power.command to \
             its full path (bash: line 1: uhubctl: command not found)"
        );
    }

    #[test]
    fn ssh_messages_are_classified() {
        for (stderr, kind) in [
            (
                "root@127.0.0.1: Permission denied (publickey).",
                SshFailure::Auth,
            ),
            (
                "Received disconnect: Too many authentication failures",
                SshFailure::Auth,
            ),
            (
                "ssh: connect to host 127.0.0.1 port 2222: Connection refused",
                SshFailure::Unreachable,
            ),
            (
                "ssh: connect to host 10.1.1.1 port 22: Connection timed out",
                SshFailure::Unreachable,
            ),
            (
                "ssh: Could not resolve hostname nope: Name or service not known",
                SshFailure::Unreachable,
            ),
            (
                "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@ | Host key verification failed.",
                SshFailure::HostKey,
            ),
            (
                "/etc/vss/x: line 3: Bad configuration option: nope",
                SshFailure::Other,
            ),
        ] {
            assert_eq!(SshFailure::classify(stderr), kind, "{stderr}");
        }
    }

    #[test]
    fn tail_keeps_the_end_and_the_last_lines() {
        let mut tail = Tail::default();
        for i in 0..10_000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert!(tail.bytes.len() <= 2 * TAIL_BYTES);
        assert!(tail.kept().len() <= TAIL_BYTES);
        assert!(tail.text().ends_with("line 9999"));
        assert_eq!(tail.last_lines(3), "line 9997 | line 9998 | line 9999");

        let mut tail = Tail::default();
        tail.push(b"\n  first  \n\n\xff\xfe bad utf-8\n");
        assert_eq!(tail.last_lines(5), "first | \u{fffd}\u{fffd} bad utf-8");
        assert_eq!(Tail::default().last_lines(5), "");
    }

    fn power_config(power: &str) -> Result<UsbPowerConfig, String> {
        let text = format!(
            "[[slots]]\nid = 1\nkind = \"auto\"\ndriver = {{ type = \"at_modem\", imei = \"490154203237518\", power = {{ {power} }} }}\n"
        );
        let config = Config::from_toml(&text, Path::new("hubd.toml"), Vec::new())
            .map_err(|e| e.to_string())?;
        match &config.slots[0].driver {
            DriverConfig::AtModem(modem) => modem.power.clone().ok_or_else(|| "no power".into()),
            other => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn config_fields_are_validated() {
        let power = power_config(
            r#"location = "1-1.4", port = 2, ssh = "pi@usbhub", ssh_config = "/etc/vss/hubd-ssh_config""#,
        )
        .expect("valid");
        assert_eq!(
            power.ssh_config,
            Some(PathBuf::from("/etc/vss/hubd-ssh_config"))
        );
        assert_eq!(power.command, "uhubctl");
        assert_eq!(
            power_config(r#"location = "1-1.4", port = 2"#).map(|p| p.ssh_config),
            Ok(None)
        );

        for (power, expect) in [
            (
                r#"location = "1-1.4", port = 2, ssh_config = "/etc/vss/ssh_config""#,
                "slots[0].driver.power.ssh_config",
            ),
            (
                r#"location = "1-1.4", port = 2, ssh = "pi@usbhub", ssh_config = "ssh_config""#,
                "slots[0].driver.power.ssh_config",
            ),
            (
                r#"location = "1-1.4", port = 2, command = " ""#,
                "slots[0].driver.power.command",
            ),
            (
                r#"location = "1-1.4", port = 0"#,
                "slots[0].driver.power.port",
            ),
            (
                r#"location = "1-1.4", port = 2, ssh = "-oProxyCommand=x""#,
                "slots[0].driver.power.ssh",
            ),
        ] {
            let e = power_config(power).expect_err(power);
            assert!(e.contains(expect), "{power}: {e}");
        }
        let e = power_config(r#"location = "1-1.4", port = 2, ssh_config = "/x""#).unwrap_err();
        assert!(e.contains("only used with ssh"), "{e}");
    }
}
