//! Finding modems by identity: which port answers with which IMEI, and which
//! slot holds which port. One directory per hub, shared by every AUTO slot.
//!
//! A slot asks for its IMEI with [`ModemDirectory::claim`]. The directory
//! remembers what earlier probes found; when the IMEI is unknown or its port
//! is gone, it probes every port the `[modems] scan` patterns match that no
//! slot holds (opening a held port fails anyway: ports are opened
//! exclusive), reads each one's IMEI, and hands out the port that answered
//! with the one asked for. Tty names never bind anything: a modem that
//! re-enumerated under new names is found again by the next probe.
//!
//! Invariants:
//! - A port is held by at most one [`ModemClaim`] at a time; the claim
//!   releases it when dropped, whatever the slot's fate.
//! - Probes run one scan at a time (a scan never opens a port another scan
//!   is probing), and only on unheld ports.
//! - The driver re-reads the IMEI after opening a claimed port: a stale
//!   entry (another modem now on that path) is never bound.
//!
//! Also keeps each modem's recovery ladder across slot sessions, so a
//! slot that restarts does not reset the ladder's rate limits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;

use super::engine::EngineConfig;
use super::link::{Link, LinkError};
use super::profile::{ModemProfile, Vendor};
use super::recovery::{RecoveryConfig, RecoveryLadder};
use super::replies;
use crate::config::ModemsSection;

/// What a probe learnt about one modem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundModem {
    /// The AT port, as the scan pattern matched it (a stable link when there is one).
    pub port: PathBuf,
    /// The IMEI.
    pub imei: String,
    /// `huawei`, `quectel` or `generic`.
    pub vendor: String,
    /// The model, as `AT+CGMM` said it.
    pub model: String,
    /// The voice port, when one was found beside the AT port.
    pub voice: Option<PathBuf>,
}

/// The hub's modems and who holds them.
#[derive(Debug)]
pub struct ModemDirectory {
    settings: ModemsSection,
    sysfs: PathBuf,
    recovery: RecoveryConfig,
    scan_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    known: BTreeMap<String, FoundModem>,
    held: BTreeSet<PathBuf>,
    ladders: BTreeMap<String, RecoveryLadder>,
}

/// A slot's hold on one modem's port; dropping it releases the port.
#[derive(Debug)]
pub struct ModemClaim {
    directory: Arc<ModemDirectory>,
    key: PathBuf,
    /// The modem, as discovery found it.
    pub modem: FoundModem,
}

impl Drop for ModemClaim {
    fn drop(&mut self) {
        self.directory.state().held.remove(&self.key);
    }
}

impl ModemDirectory {
    /// A directory that scans as `settings` say.
    pub fn new(settings: ModemsSection, recovery: RecoveryConfig) -> ModemDirectory {
        ModemDirectory {
            settings,
            sysfs: PathBuf::from("/sys/class/tty"),
            recovery,
            scan_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(State::default()),
        }
    }

    /// The settings it scans by.
    pub fn settings(&self) -> &ModemsSection {
        &self.settings
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the modem with `imei`, probing unheld ports when it is not
    /// known or its port is gone.
    pub async fn claim(self: &Arc<Self>, imei: &str) -> Result<ModemClaim, String> {
        let _scan = self.scan_lock.lock().await;
        if let Some(claim) = self.try_claim_known(imei)? {
            return Ok(claim);
        }
        let probed = self.scan_locked().await;
        if let Some(claim) = self.try_claim_known(imei)? {
            return Ok(claim);
        }
        Err(format!(
            "no modem with IMEI {imei} answered on the {probed} free port(s) matching {:?}",
            self.settings.scan
        ))
    }

    fn try_claim_known(self: &Arc<Self>, imei: &str) -> Result<Option<ModemClaim>, String> {
        let mut state = self.state();
        let Some(found) = state.known.get(imei).cloned() else {
            return Ok(None);
        };
        let Ok(key) = std::fs::canonicalize(&found.port) else {
            state.known.remove(imei);
            return Ok(None);
        };
        if state.held.contains(&key) {
            return Err(format!(
                "the modem with IMEI {imei} ({}) is held by another slot",
                found.port.display()
            ));
        }
        state.held.insert(key.clone());
        Ok(Some(ModemClaim {
            directory: Arc::clone(self),
            key,
            modem: found,
        }))
    }

    /// Forgets what is known about `imei` (its port answered with another
    /// IMEI, or vanished): the next claim probes again.
    pub fn forget(&self, imei: &str) {
        self.state().known.remove(imei);
    }

    /// Probes every unheld port now; returns what answers.
    pub async fn scan(&self) -> Vec<FoundModem> {
        let _scan = self.scan_lock.lock().await;
        self.scan_locked().await;
        self.state().known.values().cloned().collect()
    }

    /// Probes every unheld candidate port; returns how many were probed.
    async fn scan_locked(&self) -> usize {
        let candidates = self.candidates();
        let timeout = Duration::from_millis(self.settings.probe_timeout_ms);
        let baud = self.settings.baud_rate;
        let probes = candidates.iter().map(|(port, _)| async move {
            let result = tokio::time::timeout(timeout * 6, probe(port, baud, timeout)).await;
            (port.clone(), result)
        });
        let results = futures::future::join_all(probes).await;
        let mut state = self.state();
        let probed = results.len();
        for (port, result) in results {
            match result {
                Ok(Ok((imei, profile))) => {
                    tracing::info!(port = %port.display(), imei, model = profile.model(), "modem found");
                    let voice = voice_port(&port, &self.sysfs);
                    // A modem seen under two names (a link and its ttyUSB) keeps the first.
                    if state.known.get(&imei).is_some_and(|k| {
                        k.port != port
                            && std::fs::canonicalize(&k.port).ok()
                                == std::fs::canonicalize(&port).ok()
                    }) {
                        continue;
                    }
                    state.known.insert(
                        imei.clone(),
                        FoundModem {
                            port,
                            imei,
                            vendor: vendor_name(profile.vendor()).to_owned(),
                            model: profile.model().to_owned(),
                            voice,
                        },
                    );
                }
                Ok(Err(why)) => tracing::debug!(port = %port.display(), why, "not a modem"),
                Err(_) => tracing::debug!(port = %port.display(), "probe timed out"),
            }
        }
        probed
    }

    /// Ports matching the scan patterns, deduplicated by their real path,
    /// without those a slot holds.
    fn candidates(&self) -> Vec<(PathBuf, PathBuf)> {
        let held = self.state().held.clone();
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for pattern in &self.settings.scan {
            for path in glob(pattern) {
                let Ok(real) = std::fs::canonicalize(&path) else {
                    continue;
                };
                if held.contains(&real) || !seen.insert(real.clone()) {
                    continue;
                }
                out.push((path, real));
            }
        }
        out
    }

    /// The recovery ladder of `imei`, kept across sessions.
    pub fn take_ladder(&self, imei: &str) -> RecoveryLadder {
        self.state()
            .ladders
            .remove(imei)
            .unwrap_or_else(|| RecoveryLadder::new(self.recovery))
    }

    /// Gives the ladder back at the end of a session.
    pub fn return_ladder(&self, imei: &str, ladder: RecoveryLadder) {
        self.state().ladders.insert(imei.to_owned(), ladder);
    }
}

/// Opens `port`, identifies the modem, reads its IMEI.
async fn probe(
    port: &Path,
    baud: u32,
    timeout: Duration,
) -> Result<(String, ModemProfile), String> {
    let config = EngineConfig {
        probe_timeout: timeout,
        ..EngineConfig::default()
    };
    let mut link = Link::open(port, baud, config).map_err(|e| e.to_string())?;
    let fail = |e: LinkError| e.to_string();
    if !link.settle(timeout * 2).await.map_err(fail)? {
        return Err("no answer to AT".into());
    }
    let identify = super::command::Command::trusted;
    let _ = link.exchange(identify("ATE0".into())).await.map_err(fail)?;
    let maker = link
        .expect_ok(identify("AT+CGMI".into()))
        .await
        .map_err(fail)?;
    let model = link
        .expect_ok(identify("AT+CGMM".into()))
        .await
        .map_err(fail)?;
    let imei = link
        .expect_ok(identify("AT+CGSN".into()))
        .await
        .map_err(fail)?;
    let imei = replies::parse_imei(&imei.info).map_err(|e| e.to_string())?;
    let profile = ModemProfile::detect(
        &replies::parse_identity(&maker.info, "+CGMI").unwrap_or_default(),
        &replies::parse_identity(&model.info, "+CGMM").unwrap_or_default(),
    );
    Ok((imei.as_str().to_owned(), profile))
}

fn vendor_name(vendor: Vendor) -> &'static str {
    match vendor {
        Vendor::Huawei => "huawei",
        Vendor::Quectel => "quectel",
        Vendor::Generic => "generic",
    }
}

/// The voice port of the modem whose AT port is `at`:
/// - a stable link `…/<name>-at` has its voice port at `…/<name>-voice`
///   (what `firmware-scripts/udev` writes);
/// - a `/dev/ttyUSBn` has it on interface 1 of the same USB device
///   (Huawei's audio port, Quectel's with `AT+QPCMV=1,0`), found in sysfs.
pub fn voice_port(at: &Path, sysfs_tty: &Path) -> Option<PathBuf> {
    let name = at.file_name()?.to_str()?;
    if let Some(stem) = name.strip_suffix("-at") {
        let voice = at.with_file_name(format!("{stem}-voice"));
        return voice.exists().then_some(voice);
    }
    let real = std::fs::canonicalize(at).ok()?;
    let tty = real.file_name()?.to_str()?;
    // /sys/class/tty/ttyUSB2/device -> …/1-1.2/1-1.2:1.2/ttyUSB2
    let device = std::fs::canonicalize(sysfs_tty.join(tty).join("device")).ok()?;
    let interface = device.parent()?;
    let usb_device = interface.parent()?;
    let interface_name = interface.file_name()?.to_str()?;
    let (prefix, _) = interface_name.rsplit_once('.')?;
    let voice_interface = usb_device.join(format!("{prefix}.1"));
    let entries = std::fs::read_dir(&voice_interface).ok()?;
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .find(|n| n.starts_with("ttyUSB"))
        .map(|n| Path::new("/dev").join(n))
}

/// Paths matching `pattern`, whose wildcards (`*`, `?`) may only be in its
/// last component; sorted.
pub fn glob(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(name, n))
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("ttyUSB*", "ttyUSB0"));
        assert!(wildcard_match("ttyUSB*", "ttyUSB"));
        assert!(wildcard_match("*-at", "356938035643809-at"));
        assert!(!wildcard_match("*-at", "356938035643809-voice"));
        assert!(wildcard_match("tty?SB1", "ttyUSB1"));
        assert!(!wildcard_match("ttyUSB?", "ttyUSB12"));
        assert!(!wildcard_match("ttyACM*", "ttyUSB0"));
    }

    #[test]
    fn glob_lists_matches_in_order_and_ignores_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ttyUSB10", "ttyUSB2", "other"] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let pattern = format!("{}/ttyUSB*", dir.path().display());
        let found: Vec<_> = glob(&pattern)
            .into_iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(found, ["ttyUSB10", "ttyUSB2"]);
        assert!(glob("/no/such/dir/ttyUSB*").is_empty());
    }

    #[test]
    fn a_stable_link_has_its_voice_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("356938035643809-at");
        std::fs::write(&at, b"").unwrap();
        assert_eq!(voice_port(&at, dir.path()), None, "no voice link yet");
        let voice = dir.path().join("356938035643809-voice");
        std::fs::write(&voice, b"").unwrap();
        assert_eq!(voice_port(&at, dir.path()), Some(voice));
    }

    #[test]
    fn a_ttyusb_finds_interface_one_of_its_usb_device_in_sysfs() {
        // A fake sysfs: USB device 1-1.2 with interfaces 1.0 (ttyUSB0),
        // 1.1 (ttyUSB1, voice) and 1.2 (ttyUSB2, AT); /dev is faked too.
        let root = tempfile::tempdir().unwrap();
        let usb = root.path().join("devices/usb1/1-1/1-1.2");
        for (interface, tty) in [("1.0", "ttyUSB0"), ("1.1", "ttyUSB1"), ("1.2", "ttyUSB2")] {
            std::fs::create_dir_all(usb.join(format!("1-1.2:{interface}")).join(tty)).unwrap();
        }
        let class = root.path().join("class/tty/ttyUSB2");
        std::fs::create_dir_all(&class).unwrap();
        std::os::unix::fs::symlink(usb.join("1-1.2:1.2/ttyUSB2"), class.join("device")).unwrap();
        let dev = root.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        let at = dev.join("ttyUSB2");
        std::fs::write(&at, b"").unwrap();
        assert_eq!(
            voice_port(&at, &root.path().join("class/tty")),
            Some(PathBuf::from("/dev/ttyUSB1"))
        );
    }
}
