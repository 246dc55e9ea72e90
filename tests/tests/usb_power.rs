//! The USB power cycle (`hubd::device::at_modem::power`) running real
//! programs: a fake `uhubctl` that records its argv, fails or hangs, run
//! locally and through a real OpenSSH server on loopback
//! ([`vss_tests::sshd`]); the real `uhubctl` where no hub can match; and the
//! ssh failures an operator meets (dead server, refused key, changed host key),
//! each as its precise error.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hubd::config::UsbPowerConfig;
use hubd::device::at_modem::power::{PowerError, SshFailure, power_cycle};
use vss_tests::sshd::Sshd;
use vss_tests::wait_for;

/// Generous: only the hanging script ever reaches it.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The argv every power cycle of [`config`] passes to uhubctl.
const EXPECTED_ARGS: [&str; 9] = ["-l", "1-1.4", "-p", "3", "-a", "cycle", "-d", "2", "-N"];

/// What the recording fake prints, as uhubctl does (status before and after).
const STATUS: &str = "Current status for hub 1-1 [2109:2813 VIA Labs, Inc. USB2.0 Hub, USB 2.10, 4 ports, ppps]\n  Port 3: 0000 off\n";

fn config(command: &Path) -> UsbPowerConfig {
    UsbPowerConfig {
        location: "1-1.4".into(),
        port: 3,
        ssh: None,
        ssh_config: None,
        command: command.to_string_lossy().into_owned(),
    }
}

/// Installs an executable script at `path`. `install` (another process)
/// writes it, so no file descriptor open for writing on it can leak into a
/// process another test thread forks at that moment (exec would then fail
/// with "Text file busy").
fn install_script(path: &Path, body: &str) -> PathBuf {
    let source = path.with_extension("src");
    fs::write(&source, format!("#!/bin/sh\n{body}")).expect("script source written");
    let status = Command::new("install")
        .arg("-m")
        .arg("755")
        .arg(&source)
        .arg(path)
        .status()
        .expect("install runs");
    assert!(status.success(), "install {}", path.display());
    path.to_owned()
}

/// A fake uhubctl in `dir` that writes its arguments, NUL-terminated, to
/// `argv` beside itself and prints [`STATUS`].
fn recording_uhubctl(dir: &Path) -> PathBuf {
    install_script(
        &dir.join("uhubctl"),
        &format!(
            "printf '%s\\0' \"$@\" > \"$(dirname \"$0\")/argv\"\nprintf '%s' '{STATUS}'\nexit 0\n"
        ),
    )
}

/// The arguments the recording fake in `dir` got.
fn recorded_args(dir: &Path) -> Vec<String> {
    let bytes = fs::read(dir.join("argv")).expect("the fake uhubctl ran");
    let mut words: Vec<String> = bytes
        .split(|&b| b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    assert_eq!(words.pop().as_deref(), Some(""), "NUL-terminated words");
    words
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("usb-power-")
        .tempdir()
        .expect("a temp dir")
}

#[tokio::test]
async fn runs_uhubctl_locally_with_the_cycle_arguments() {
    let dir = temp_dir();
    let uhubctl = recording_uhubctl(dir.path());
    let report = power_cycle(&config(&uhubctl), TIMEOUT)
        .await
        .expect("power cycled");
    assert_eq!(recorded_args(dir.path()), EXPECTED_ARGS);
    assert_eq!(report.argv[0], uhubctl.to_string_lossy());
    assert_eq!(report.argv[1..], EXPECTED_ARGS);
    assert_eq!(report.output, STATUS.trim());
}

#[tokio::test]
async fn a_failing_uhubctl_is_reported_with_its_last_stderr_lines() {
    let dir = temp_dir();
    // A megabyte on each stream first: the pipes must be drained while it
    // runs (else it blocks forever) and only their end kept.
    let uhubctl = install_script(
        &dir.path().join("uhubctl"),
        "i=0\nwhile [ $i -lt 20000 ]; do\n  echo \"noise $i: ....................................\"\n  echo \"noise $i: ....................................\" >&2\n  i=$((i + 1))\ndone\n\
         echo 'No compatible devices detected at location 1-1.4!' >&2\necho 'Run with -h to get usage info.' >&2\nexit 1\n",
    );
    let err = power_cycle(&config(&uhubctl), TIMEOUT)
        .await
        .expect_err("uhubctl exited 1");
    let PowerError::Failed {
        program,
        host,
        status,
        stderr,
    } = &err
    else {
        panic!("expected Failed, got {err:?}");
    };
    assert_eq!(program, &uhubctl.to_string_lossy());
    assert_eq!(host, &None);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.ends_with(
            "noise 19999: .................................... | No compatible devices detected at \
             location 1-1.4! | Run with -h to get usage info."
        ),
        "{stderr}"
    );
    assert_eq!(stderr.matches(" | ").count(), 4, "five lines: {stderr}");
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(line.contains("failed (exit status: 1)"), "{line}");
}

#[tokio::test]
async fn a_hanging_uhubctl_is_killed_with_its_children() {
    let dir = temp_dir();
    let d = dir.path();
    // A child of its own too, as a wrapper script would have: the whole
    // process group must die, not only the script.
    let uhubctl = install_script(
        &d.join("uhubctl"),
        "d=$(dirname \"$0\")\nsleep 100000 &\necho $! > \"$d/child.tmp\" && mv \"$d/child.tmp\" \"$d/child\"\n\
         echo $$ > \"$d/pid.tmp\" && mv \"$d/pid.tmp\" \"$d/pid\"\necho 'waiting for the hub' >&2\nwait\n",
    );
    let timeout = Duration::from_secs(3);
    let err = power_cycle(&config(&uhubctl), timeout)
        .await
        .expect_err("it never finishes");
    let PowerError::Timeout {
        timeout: missed,
        host,
        ..
    } = &err
    else {
        panic!("expected Timeout, got {err:?}");
    };
    assert_eq!(*missed, timeout);
    assert_eq!(host, &None);
    assert!(err.to_string().contains("was killed"), "{err}");
    for file in ["pid", "child"] {
        let pid: i32 = fs::read_to_string(d.join(file))
            .unwrap_or_else(|e| panic!("the script wrote {file} before its timeout: {e}"))
            .trim()
            .parse()
            .expect("a pid");
        wait_for(&format!("{file} {pid} to die"), TIMEOUT, || {
            dead(pid).then_some(())
        });
    }
}

/// Whether `pid` has exited (gone, or a zombie waiting for its reaper).
fn dead(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[tokio::test]
async fn a_missing_program_is_named() {
    for command in ["/nonexistent/uhubctl", "uhubctl-not-installed-anywhere"] {
        let err = power_cycle(&config(Path::new(command)), TIMEOUT)
            .await
            .expect_err("no such program");
        assert!(
            matches!(&err, PowerError::NotFound { program } if program == command),
            "{err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!("{command} not found")),
            "{err}"
        );
    }
}

/// The real uhubctl (installed by .ci/run), asked for a hub on USB bus 199,
/// which no machine has: it must fail the way it does in the field when a
/// location is wrong, and nothing is powered off.
#[tokio::test]
async fn the_real_uhubctl_refuses_a_location_without_a_hub() {
    let mut power = config(Path::new("uhubctl"));
    power.location = "199-1".into();
    let err = power_cycle(&power, TIMEOUT)
        .await
        .expect_err("no hub on bus 199");
    match &err {
        PowerError::Failed { stderr, status, .. } => {
            assert_eq!(status.code(), Some(1));
            assert!(
                stderr.contains("No compatible devices detected at location 199-1"),
                "{stderr}"
            );
        }
        PowerError::NotFound { .. } => panic!("uhubctl is not installed: apt-get install uhubctl"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// A directory name no shell may take as it is: every remote word must be
/// quoted, or the remote shell splits, expands or runs it.
const AWKWARD: &str = "it's a $HOME `id` \"dir\"; *";

/// `config` over SSH to `alias` as configured by `ssh_config`.
fn over_ssh(command: &Path, alias: &str, ssh_config: PathBuf) -> UsbPowerConfig {
    UsbPowerConfig {
        ssh: Some(alias.into()),
        ssh_config: Some(ssh_config),
        ..config(command)
    }
}

#[tokio::test]
async fn runs_uhubctl_over_ssh_with_every_word_intact() {
    let sshd = Sshd::start();
    let dir = temp_dir();
    let awkward = dir.path().join(AWKWARD);
    fs::create_dir(&awkward).expect("awkward dir");
    let uhubctl = recording_uhubctl(&awkward);
    let ssh_config = sshd.client_config("usbhub", &sshd.client_key());
    let power = over_ssh(&uhubctl, "usbhub", ssh_config.clone());

    let report = power_cycle(&power, TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("power cycled over ssh: {e}\nsshd log:\n{}", sshd.log()));

    assert_eq!(recorded_args(&awkward), EXPECTED_ARGS);
    assert_eq!(report.output, STATUS.trim());
    assert_eq!(report.argv[0], "ssh");
    assert!(
        report
            .argv
            .windows(2)
            .any(|w| w[0] == "-F" && w[1] == ssh_config.to_string_lossy()),
        "{:?}",
        report.argv
    );
    // accept-new: the unknown host's key was learned on first use.
    let known = fs::read_to_string(sshd.known_hosts("usbhub")).expect("known_hosts written");
    assert!(
        known.contains(&format!("[127.0.0.1]:{}", sshd.port()))
            && known.contains(&sshd.host_public_key()),
        "{known}"
    );
    // And is trusted from then on.
    fs::remove_file(awkward.join("argv")).expect("argv removed");
    power_cycle(&power, TIMEOUT)
        .await
        .expect("power cycled again");
    assert_eq!(recorded_args(&awkward), EXPECTED_ARGS);
}

#[tokio::test]
async fn a_remote_uhubctl_failure_or_absence_is_told_apart_from_ssh_failures() {
    let sshd = Sshd::start();
    let dir = temp_dir();
    let ssh_config = sshd.client_config("usbhub", &sshd.client_key());

    let failing = install_script(
        &dir.path().join("uhubctl"),
        "echo 'No compatible devices detected at location 1-1.4!' >&2\nexit 1\n",
    );
    let err = power_cycle(&over_ssh(&failing, "usbhub", ssh_config.clone()), TIMEOUT)
        .await
        .expect_err("remote uhubctl exits 1");
    assert!(
        matches!(&err, PowerError::Failed { host: Some(h), status, stderr, .. }
            if h == "usbhub" && status.code() == Some(1)
                && stderr.ends_with("No compatible devices detected at location 1-1.4!")),
        "{err:?}"
    );
    assert!(err.to_string().contains(" on usbhub failed"), "{err}");

    let missing = Path::new("/nonexistent/uhubctl");
    let err = power_cycle(&over_ssh(missing, "usbhub", ssh_config), TIMEOUT)
        .await
        .expect_err("no uhubctl there");
    assert!(
        matches!(&err, PowerError::RemoteNotFound { host, program, .. }
            if host == "usbhub" && program == "/nonexistent/uhubctl"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("/nonexistent/uhubctl not found on usbhub: install uhubctl there"),
        "{err}"
    );
}

#[tokio::test]
async fn a_key_the_host_does_not_accept_is_an_auth_error() {
    let sshd = Sshd::start();
    let dir = temp_dir();
    let uhubctl = recording_uhubctl(dir.path());
    let stranger = sshd.stranger_key("stranger_ed25519");
    let ssh_config = sshd.client_config("usbhub", &stranger);

    let err = power_cycle(&over_ssh(&uhubctl, "usbhub", ssh_config), TIMEOUT)
        .await
        .expect_err("the key is refused");
    assert!(
        matches!(&err, PowerError::Ssh { host, kind: SshFailure::Auth, stderr }
            if host == "usbhub" && stderr.contains("Permission denied (publickey)")),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("ssh to usbhub failed, authentication refused"),
        "{err}"
    );
    assert!(!dir.path().join("argv").exists(), "uhubctl never ran");
}

#[tokio::test]
async fn a_dead_server_is_an_unreachable_error() {
    let mut sshd = Sshd::start();
    let dir = temp_dir();
    let uhubctl = recording_uhubctl(dir.path());
    let ssh_config = sshd.client_config("usbhub", &sshd.client_key());
    sshd.stop();

    let err = power_cycle(&over_ssh(&uhubctl, "usbhub", ssh_config), TIMEOUT)
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(&err, PowerError::Ssh { kind: SshFailure::Unreachable, stderr, .. }
            if stderr.contains(&format!("port {}: Connection refused", sshd.port()))),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("cannot connect (is the host up and its sshd running?)"),
        "{err}"
    );
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let sshd = Sshd::start();
    let dir = temp_dir();
    let uhubctl = recording_uhubctl(dir.path());
    let ssh_config = sshd.client_config("usbhub", &sshd.client_key());
    // known_hosts pins another key for this server: a man in the middle.
    let impostor = sshd.stranger_key("impostor_ed25519");
    let impostor_pub = fs::read_to_string(impostor.with_extension("pub")).expect("impostor.pub");
    let key: Vec<&str> = impostor_pub.split_whitespace().take(2).collect();
    fs::write(
        sshd.known_hosts("usbhub"),
        format!("[127.0.0.1]:{} {}\n", sshd.port(), key.join(" ")),
    )
    .expect("known_hosts written");

    let err = power_cycle(&over_ssh(&uhubctl, "usbhub", ssh_config), TIMEOUT)
        .await
        .expect_err("the host key changed");
    assert!(
        matches!(
            &err,
            PowerError::Ssh {
                kind: SshFailure::HostKey,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!dir.path().join("argv").exists(), "uhubctl never ran");
}
