//! hubd configuration: one TOML file, overridden by `HUBD__SECTION__KEY`
//! environment variables, with every default in [`Config::default`]. The
//! layering itself (file, environment, error lines) is
//! [`vss_shared::config`]; this module owns hubd's fields and rules.
//!
//! Loading never touches the data directory or any device; it only reads the
//! file and the environment and validates them. Every error names where the bad
//! value came from (file and line, or environment variable), the field, the
//! value, and why it is wrong, on one line.

mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vss_shared::{HubId, SipNumber, SlotId, SlotKind};

pub use vss_shared::config::ConfigError;

/// Prefix of every hubd environment override.
pub const ENV_PREFIX: &str = "HUBD__";

/// The process's `HUBD__…` variables (see [`vss_shared::config::prefixed_env`]).
pub fn hub_env() -> Result<Vec<(String, String)>, ConfigError> {
    vss_shared::config::prefixed_env(ENV_PREFIX)
}
pub use validate::validate;

/// The whole hubd configuration.
///
/// Read through [`ConfigFile`], which takes each slot's `sip_password`,
/// `recording` and `audiosocket` out of `[[slots]]` into
/// [`Config::sip_passwords`], [`Config::recording_policies`] and
/// [`Config::audiosocket_servers`] (so [`SlotConfig`] stays what the control
/// plane pushes and compares).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "ConfigFile")]
pub struct Config {
    /// Who this hub is and where it keeps its state.
    pub hub: HubSection,
    /// The local HTTP API.
    pub api: ApiSection,
    /// Logging.
    pub log: LogSection,
    /// The local SQLite store.
    pub store: StoreSection,
    /// Slot supervision: restarts and health checks.
    pub supervisor: SupervisorSection,
    /// How AT modems (AUTO slots) are found and polled.
    pub modems: ModemsSection,
    /// The SIP user agent; absent: no slot registers anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sip: Option<SipSection>,
    /// Call media: RTP ports, jitter buffer, recordings.
    pub media: MediaSection,
    /// The slots this hub owns.
    pub slots: Vec<SlotConfig>,
    /// Each slot's SIP password from the file (`sip_password` in its
    /// `[[slots]]` entry), by slot id. Never written back out.
    #[serde(skip)]
    pub sip_passwords: BTreeMap<SlotId, String>,
    /// Each slot's recording policy from the file (`recording` in its
    /// `[[slots]]` entry), by slot id; a slot not listed records
    /// [`RecordingPolicy::Never`]. See [`Config::recording_policy`].
    #[serde(skip)]
    pub recording_policies: BTreeMap<SlotId, RecordingPolicy>,
    /// Each slot's AudioSocket server from the file (`audiosocket =
    /// "host:port"` in its `[[slots]]` entry), by slot id: the slot's calls
    /// are streamed there instead of being bridged to SIP. See
    /// [`Config::audiosocket_server`].
    #[serde(skip)]
    pub audiosocket_servers: BTreeMap<SlotId, String>,
}

/// The file's shape of [`Config`]: the same sections, with `[[slots]]`
/// entries that may carry a `sip_password`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    hub: HubSection,
    api: ApiSection,
    log: LogSection,
    store: StoreSection,
    supervisor: SupervisorSection,
    modems: ModemsSection,
    sip: Option<SipSection>,
    media: MediaSection,
    slots: Vec<SlotEntry>,
}

/// A `[[slots]]` entry as written: [`SlotConfig`] plus `sip_password`,
/// `recording` and `audiosocket`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotEntry {
    id: SlotId,
    #[serde(default)]
    name: Option<String>,
    kind: SlotKind,
    #[serde(default)]
    sip_number: Option<SipNumber>,
    #[serde(default = "default_true")]
    enabled: bool,
    driver: DriverConfig,
    #[serde(default)]
    sip_password: Option<String>,
    #[serde(default)]
    recording: Option<RecordingPolicy>,
    #[serde(default)]
    audiosocket: Option<String>,
}

impl From<ConfigFile> for Config {
    fn from(file: ConfigFile) -> Config {
        let mut sip_passwords = BTreeMap::new();
        let mut recording_policies = BTreeMap::new();
        let mut audiosocket_servers = BTreeMap::new();
        let slots = file
            .slots
            .into_iter()
            .map(|slot| {
                if let Some(password) = slot.sip_password {
                    sip_passwords.insert(slot.id, password);
                }
                if let Some(policy) = slot.recording {
                    recording_policies.insert(slot.id, policy);
                }
                if let Some(server) = slot.audiosocket {
                    audiosocket_servers.insert(slot.id, server);
                }
                SlotConfig {
                    id: slot.id,
                    name: slot.name,
                    kind: slot.kind,
                    sip_number: slot.sip_number,
                    enabled: slot.enabled,
                    driver: slot.driver,
                }
            })
            .collect();
        Config {
            hub: file.hub,
            api: file.api,
            log: file.log,
            store: file.store,
            supervisor: file.supervisor,
            modems: file.modems,
            sip: file.sip,
            media: file.media,
            slots,
            sip_passwords,
            recording_policies,
            audiosocket_servers,
        }
    }
}

/// `[sip]`: every slot registers its SIP number with the PBX.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// Registrars as `IP:port`, in order of preference: a slot fails over to
    /// the next when one does not answer or answers with an error.
    pub registrars: Vec<SocketAddr>,
    /// The AOR domain (`sip:6001@DOMAIN`) and usual realm; absent: the first
    /// registrar's IP.
    pub domain: Option<String>,
    /// The UDP address of the hub's one SIP socket (port 0: any free port).
    pub listen: SocketAddr,
    /// The address put in Via and Contact, when the registrar must reach the
    /// hub at another address than the bound one (NAT).
    pub advertised_address: Option<SocketAddr>,
    /// Registration expiry asked for, in seconds (refreshed at half of what
    /// the registrar grants). At least 10.
    pub expires_s: u32,
    /// SIP timer T1 (round-trip estimate), ms: retransmissions start at T1,
    /// a request times out after 64·T1.
    pub t1_ms: u64,
    /// Refused credentials in a row before the slot goes to FAULT.
    pub max_auth_failures: u32,
    /// While a slot is registered, a keep-alive (double CRLF) goes to its
    /// registrar this often, so a NAT between the hub and the PBX keeps the
    /// mapping the PBX's INVITEs come back through. Seconds, 0 (never) or
    /// 5–3600.
    pub keepalive_s: u32,
    /// When a registrar's answer shows it saw the hub at another address
    /// (Via `received`/`rport`: a NAT), register that address as the
    /// Contact and offer it in calls, so the PBX's requests come back
    /// through the NAT.
    pub follow_nat: bool,
    /// Where a call ringing on a slot's device goes (F-03): a SIP URI
    /// (`sip:queue@pbx.example.com`), sent through the first registrar.
    /// Absent: calls ringing on the device are not bridged to SIP.
    pub incoming_destination: Option<String>,
}

impl Default for SipSection {
    fn default() -> Self {
        SipSection {
            registrars: Vec::new(),
            domain: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 5070)),
            advertised_address: None,
            expires_s: 300,
            t1_ms: 500,
            max_auth_failures: 3,
            keepalive_s: 25,
            follow_nat: true,
            incoming_destination: None,
        }
    }
}

impl SipSection {
    /// The AOR domain: `domain`, else the first registrar's IP.
    pub fn domain(&self) -> String {
        match (&self.domain, self.registrars.first()) {
            (Some(domain), _) => domain.clone(),
            (None, Some(registrar)) => registrar.ip().to_string(),
            (None, None) => "localhost".to_owned(),
        }
    }
}

/// `[media]`: the media of bridged calls (RTP, jitter buffer, recordings).
///
/// Read by the call bridge through [`crate::supervisor::MediaContext`],
/// built once at start from this section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// UDP ports RTP sessions take, as `FIRST-LAST` (inclusive): an even
    /// first port (RTP on even ports, RTCP on the odd one above), at least
    /// two ports, all within 1024–65535.
    pub rtp_ports: String,
    /// Audio the jitter buffer holds before playout starts, ms: a multiple
    /// of 20 (one RTP packet), 20–180.
    pub jitter_ms: u32,
    /// A call whose SIP side sends no RTP for this long is ended (BYE and
    /// device hang-up, CDR `sip_cause = "rtp_timeout"`): a PBX that died
    /// without a BYE must not keep a GSM call up. Seconds, 5–3600; 0: never.
    pub rtp_timeout_s: u32,
    /// The same while the SIP side holds the call (its SDP `recvonly` or
    /// `inactive`, so it sends nothing). Seconds, 0 (never) or 5–86400.
    pub rtp_hold_timeout_s: u32,
    /// Where call recordings are written; absent: `<hub.data_dir>/recordings`.
    /// Created (mode 0750) at start when missing; interrupted recordings in
    /// it are repaired at start.
    pub recordings_dir: Option<PathBuf>,
    /// Target bitrate of a recording (both legs together), kbit/s, 6–510.
    pub recording_bitrate_kbps: u32,
    /// libopus complexity of recordings, 0 (cheapest) to 10.
    pub recording_complexity: u8,
    /// `[media.health]`: thresholds of the per-call media health in the CDR
    /// (silence level, one-way audio, long silence).
    pub health: crate::media::health::HealthConfig,
}

impl Default for MediaSection {
    fn default() -> Self {
        let rtp = crate::media::rtp_session::RtpConfig::default();
        let recording = crate::media::recording::RecordingConfig::default();
        MediaSection {
            rtp_ports: "16384-32767".to_owned(),
            jitter_ms: u32::from(rtp.jitter.target_depth) * FRAME_MS,
            rtp_timeout_s: seconds(rtp.peer_timeout),
            rtp_hold_timeout_s: seconds(rtp.hold_timeout),
            recordings_dir: None,
            recording_bitrate_kbps: u32::try_from(recording.bitrate_bps / 1_000).unwrap_or(24),
            recording_complexity: u8::try_from(recording.complexity).unwrap_or(3),
            health: crate::media::health::HealthConfig::default(),
        }
    }
}

/// One RTP packet's audio, ms.
const FRAME_MS: u32 = 20;

/// A timeout as whole seconds, 0 for none.
fn seconds(timeout: Option<std::time::Duration>) -> u32 {
    timeout.map_or(0, |t| u32::try_from(t.as_secs()).unwrap_or(u32::MAX))
}

/// Whole seconds as a timeout, none for 0.
fn timeout(seconds: u32) -> Option<std::time::Duration> {
    (seconds > 0).then(|| std::time::Duration::from_secs(u64::from(seconds)))
}

impl MediaSection {
    /// `rtp_ports` as its first and last port, or why it is not a usable range.
    pub fn rtp_port_bounds(&self) -> Result<(u16, u16), String> {
        let (first, last) = self
            .rtp_ports
            .split_once('-')
            .ok_or_else(|| "must be FIRST-LAST, e.g. \"16384-32767\"".to_owned())?;
        let port = |text: &str| {
            text.trim()
                .parse::<u16>()
                .map_err(|_| format!("{:?} is not a port number", text.trim()))
        };
        let (first, last) = (port(first)?, port(last)?);
        if first < 1024 {
            return Err(format!(
                "ports must be within 1024-65535 (first is {first})"
            ));
        }
        if !first.is_multiple_of(2) {
            return Err(format!(
                "the first port must be even (RTP on even ports), not {first}"
            ));
        }
        if last < first {
            return Err(format!(
                "the last port ({last}) is below the first ({first})"
            ));
        }
        if last == first {
            return Err("must hold at least 2 ports (RTP and RTCP)".to_owned());
        }
        Ok((first, last))
    }

    /// The shared pool of RTP ports, or why `rtp_ports` is not a usable range.
    pub fn port_range(
        &self,
    ) -> Result<std::sync::Arc<crate::media::rtp_session::PortRange>, String> {
        let (first, last) = self.rtp_port_bounds()?;
        crate::media::rtp_session::PortRange::new(first, last).map_err(|e| e.to_string())
    }

    /// RTP session settings: [`RtpConfig`](crate::media::rtp_session::RtpConfig)'s
    /// defaults with this section's jitter buffer depth and peer timeouts.
    pub fn rtp_config(&self) -> crate::media::rtp_session::RtpConfig {
        let mut config = crate::media::rtp_session::RtpConfig {
            peer_timeout: timeout(self.rtp_timeout_s),
            hold_timeout: timeout(self.rtp_hold_timeout_s),
            ..crate::media::rtp_session::RtpConfig::default()
        };
        let depth = u16::try_from(self.jitter_ms / FRAME_MS).unwrap_or(u16::MAX);
        config.jitter.target_depth = depth.max(1);
        config.jitter.max_depth = config.jitter.max_depth.max(config.jitter.target_depth + 1);
        config
    }

    /// Recording encoder settings: the defaults with this section's bitrate
    /// and complexity.
    pub fn recording_config(&self) -> crate::media::recording::RecordingConfig {
        crate::media::recording::RecordingConfig {
            bitrate_bps: i32::try_from(self.recording_bitrate_kbps.saturating_mul(1_000))
                .unwrap_or(i32::MAX),
            complexity: i32::from(self.recording_complexity),
            ..crate::media::recording::RecordingConfig::default()
        }
    }

    /// Where recordings go: `recordings_dir`, else `<data_dir>/recordings`.
    pub fn recordings_dir(&self, hub: &HubSection) -> PathBuf {
        self.recordings_dir
            .clone()
            .unwrap_or_else(|| hub.data_dir.join("recordings"))
    }
}

/// Which of a slot's calls are recorded (`recording` in `[[slots]]`; per
/// campaign later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingPolicy {
    /// No call is recorded.
    #[default]
    Never,
    /// Every call is recorded.
    All,
}

/// `[hub]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// The hub's id: a slug, unique in the fleet.
    pub id: HubId,
    /// Human name shown to operators.
    pub name: String,
    /// Where the store (`hub.db`) lives. Must exist or be creatable, and be writable.
    pub data_dir: PathBuf,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Address the local API listens on. Loopback unless you mean it.
    pub listen: SocketAddr,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (readable) or `json` (one object per line).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,hubd::store=debug`.
    pub level: String,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Most writes the writer task commits in one transaction (group commit).
    pub batch_max: usize,
    /// `full` (fsync at every commit: survives power loss) or `normal`
    /// (survives a process crash; the last commits may be lost on power loss).
    pub synchronous: Synchronous,
}

/// SQLite's `synchronous` setting for the hub store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL at every commit.
    Full,
    /// fsync only at checkpoints.
    Normal,
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisorSection {
    /// First delay before restarting a faulted slot.
    pub restart_backoff_initial_ms: u64,
    /// Longest delay between restarts; the backoff doubles up to this.
    pub restart_backoff_max_ms: u64,
    /// A slot READY this long has its backoff reset to the initial delay.
    pub stable_after_ms: u64,
    /// How often a READY slot's device is health-checked.
    pub health_check_interval_ms: u64,
    /// Longest a single device operation (bind, register, health check) may take.
    pub device_timeout_ms: u64,
    /// How long a slot stays in POSTCALL (wrap-up) before it is READY again.
    pub wrap_up_ms: u64,
}

/// `[modems]`: discovery and polling of the GSM modems of AUTO slots.
///
/// Modems are bound by IMEI, never by tty name: discovery opens every port
/// the `scan` patterns match that no slot holds, asks its IMEI, and binds
/// each configured slot to the port that answered with its IMEI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModemsSection {
    /// Glob patterns (`*`, `?`) of candidate AT ports, probed in order.
    pub scan: Vec<String>,
    /// How long a probed port may take to answer `AT+CGSN`.
    pub probe_timeout_ms: u64,
    /// Line speed of AT and voice ports (USB modems ignore it; real UARTs do not).
    pub baud_rate: u32,
    /// How often a READY modem's signal, operator and registration are read.
    pub poll_interval_ms: u64,
    /// How long a modem whose ttys vanished (reboot, power cycle, unplug) is
    /// looked for by IMEI before the next recovery step.
    pub rebind_timeout_ms: u64,
    /// The least time between two `ATZ` soft resets of one modem.
    pub soft_reset_interval_ms: u64,
    /// The least time between two `AT+CFUN=1,1` reboots of one modem.
    pub reboot_interval_ms: u64,
    /// The least time between two USB power cycles of one modem.
    pub power_cycle_interval_ms: u64,
}

/// One `[[slots]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    /// The slot's id on this hub (1–9999).
    pub id: SlotId,
    /// Human name; defaults to `Slot NN`.
    #[serde(default)]
    pub name: Option<String>,
    /// `auto`, `mf` or `ls`.
    pub kind: SlotKind,
    /// Internal SIP extension; allocated from the kind's range when absent.
    #[serde(default)]
    pub sip_number: Option<SipNumber>,
    /// A disabled slot is kept in the store but never started.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The device driver and its settings.
    pub driver: DriverConfig,
}

fn default_true() -> bool {
    true
}

/// Which driver runs a slot's device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DriverConfig {
    /// A simulated device: no hardware, seeded behaviour.
    Sim(SimConfig),
    /// A GSM USB modem driven by AT commands (AUTO slots).
    AtModem(AtModemConfig),
}

/// Settings of the `at_modem` driver: which modem is this slot's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AtModemConfig {
    /// The modem's IMEI (15 digits): the only thing a slot binds by.
    pub imei: String,
    /// When set, a modem whose SIM reports another ICCID is refused (the SIM
    /// was swapped; calls would go out on the wrong number).
    #[serde(default)]
    pub iccid: Option<String>,
    /// How to cut and restore the modem's USB power, the last step of the
    /// recovery ladder before FAULT. Without it the ladder skips that step.
    #[serde(default)]
    pub power: Option<UsbPowerConfig>,
}

/// A modem's USB port as `uhubctl` addresses it, and where to run `uhubctl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbPowerConfig {
    /// The USB hub's location (`uhubctl -l`), e.g. `1-1.4`.
    pub location: String,
    /// The port on that hub (`uhubctl -p`), 1–255.
    pub port: u32,
    /// Run `uhubctl` over SSH on this host (`user@host` or `host`) instead of
    /// locally: for modems hung on a USB hub of another machine.
    #[serde(default)]
    pub ssh: Option<String>,
    /// The OpenSSH client configuration file for that connection (`ssh -F`),
    /// an absolute path: `IdentityFile`, `UserKnownHostsFile`, `User`, `Port`.
    /// Absent: the `hubd` user's `~/.ssh/config` (none under the systemd
    /// unit, whose user has no home). Only with `ssh`.
    #[serde(default)]
    pub ssh_config: Option<PathBuf>,
    /// The `uhubctl` program (a path or a name looked up in `PATH`; on the
    /// `ssh` host when set).
    #[serde(default = "default_uhubctl")]
    pub command: String,
}

fn default_uhubctl() -> String {
    "uhubctl".to_owned()
}

/// Settings of the simulated driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of the device's randomness; 0 means "use the slot id".
    pub seed: u64,
    /// Typical latency of a device operation; actual latency varies ±50%.
    pub latency_ms: u64,
    /// Probability (0–1) that an operation fails, and per health check that the device hangs.
    pub failure_rate: f64,
    /// Mean time between simulated calls while READY; 0 disables calls.
    pub call_every_ms: u64,
    /// Mean length of a simulated call.
    pub call_duration_ms: u64,
    /// Test hook: the driver panics this long after reaching READY.
    pub panic_after_ms: Option<u64>,
}

impl Default for HubSection {
    fn default() -> Self {
        HubSection {
            id: HubId::new("hub-local").unwrap_or_else(|_| unreachable!("a valid literal slug")),
            name: "Local hub".to_owned(),
            data_dir: PathBuf::from("/var/lib/hubd"),
        }
    }
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 8790)),
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            batch_max: 1024,
            synchronous: Synchronous::Full,
        }
    }
}

impl Default for SupervisorSection {
    fn default() -> Self {
        SupervisorSection {
            restart_backoff_initial_ms: 500,
            restart_backoff_max_ms: 30_000,
            stable_after_ms: 60_000,
            health_check_interval_ms: 10_000,
            device_timeout_ms: 15_000,
            wrap_up_ms: 2_000,
        }
    }
}

impl Default for ModemsSection {
    fn default() -> Self {
        ModemsSection {
            scan: vec![
                "/dev/vss/by-imei/*-at".to_owned(),
                "/dev/ttyUSB*".to_owned(),
            ],
            probe_timeout_ms: 1_500,
            baud_rate: 115_200,
            poll_interval_ms: 30_000,
            rebind_timeout_ms: 60_000,
            soft_reset_interval_ms: 60_000,
            reboot_interval_ms: 600_000,
            power_cycle_interval_ms: 900_000,
        }
    }
}

impl ModemsSection {
    /// The recovery ladder's policy: resync 3 times, then `ATZ`, a reboot,
    /// and two USB power cycles, each no more often than configured.
    pub fn recovery_config(&self) -> crate::device::at_modem::recovery::RecoveryConfig {
        use crate::device::at_modem::recovery::{RecoveryConfig, StepPolicy};
        let step = |attempts, ms| StepPolicy {
            attempts,
            min_interval: std::time::Duration::from_millis(ms),
        };
        RecoveryConfig {
            steps: [
                step(3, 0),
                step(1, self.soft_reset_interval_ms),
                step(1, self.reboot_interval_ms),
                step(2, self.power_cycle_interval_ms),
            ],
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency_ms: 50,
            failure_rate: 0.0,
            call_every_ms: 0,
            call_duration_ms: 20_000,
            panic_after_ms: None,
        }
    }
}

impl SlotConfig {
    /// The slot's display name.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("Slot {:02}", self.id.get()))
    }
}

impl Config {
    /// The recording policy of slot `id`: its `recording`, else `never`.
    pub fn recording_policy(&self, id: SlotId) -> RecordingPolicy {
        self.recording_policies
            .get(&id)
            .copied()
            .unwrap_or_default()
    }

    /// The AudioSocket server (`host:port`) slot `id`'s calls are streamed
    /// to, if its `[[slots]]` entry has `audiosocket`.
    pub fn audiosocket_server(&self, id: SlotId) -> Option<&str> {
        self.audiosocket_servers.get(&id).map(String::as_str)
    }

    /// Loads `path`, applies `HUBD__…` overrides from `vars`, and validates.
    pub fn load(
        path: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path, vars)
    }

    /// Parses `text` (named `origin` in errors), applies overrides, validates.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        vss_shared::config::load(text, origin, ENV_PREFIX, vars, validate)
    }
}

/// The SIP number of every slot in config order (explicit, else allocated).
pub fn slot_numbers_checked(config: &Config) -> Result<Vec<SipNumber>, ConfigError> {
    validate::slot_numbers(config).map_err(|(i, value, e)| ConfigError::Invalid {
        origin: "config".into(),
        field: format!("slots[{i}].sip_number"),
        value,
        why: e.to_string(),
    })
}

#[cfg(test)]
mod sip_tests {
    use super::*;

    const SLOTS: &str = "[[slots]]\nid = 1\nkind = \"auto\"\nsip_password = \"pw\"\ndriver = { type = \"sim\" }\n\n\
                         [[slots]]\nid = 2\nkind = \"mf\"\ndriver = { type = \"sim\" }\n";

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, String> {
        let vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Config::from_toml(text, Path::new("hubd.toml"), vars).map_err(|e| e.to_string())
    }

    #[test]
    fn sip_section_and_slot_passwords() {
        let text =
            format!("[sip]\nregistrars = [\"192.0.2.1:5060\", \"192.0.2.2:5060\"]\n\n{SLOTS}");
        let config = load(&text, &[]).expect("valid");
        let sip = config.sip.as_ref().expect("[sip]");
        assert_eq!(sip.domain(), "192.0.2.1");
        assert_eq!(
            (
                sip.expires_s,
                sip.t1_ms,
                sip.max_auth_failures,
                sip.keepalive_s
            ),
            (300, 500, 3, 25)
        );
        assert!(sip.follow_nat, "on by default");
        assert_eq!(sip.listen, SocketAddr::from(([0, 0, 0, 0], 5070)));
        let id = SlotId::new(1).expect("id");
        assert_eq!(
            config.sip_passwords.get(&id).map(String::as_str),
            Some("pw")
        );
        assert_eq!(config.sip_passwords.len(), 1);
        assert!(load(SLOTS, &[]).expect("valid").sip.is_none());
    }

    #[test]
    fn sip_errors_name_the_field() {
        for (text, field) in [
            ("[sip]\n", "sip.registrars"),
            (
                "[sip]\nregistrars = [\"0.0.0.0:5060\"]\n",
                "sip.registrars[0]",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\nexpires_s = 5\n",
                "sip.expires_s",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\nt1_ms = 0\n",
                "sip.t1_ms",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\nmax_auth_failures = 0\n",
                "sip.max_auth_failures",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\nkeepalive_s = 1\n",
                "sip.keepalive_s",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\ndomain = \"a b\"\n",
                "sip.domain",
            ),
            (
                "[sip]\nregistrars = [\"192.0.2.1:5060\"]\nincoming_destination = \"queue\"\n",
                "sip.incoming_destination",
            ),
            (
                "[[slots]]\nid = 1\nkind = \"auto\"\nsip_password = \"\"\ndriver = { type = \"sim\" }\n",
                "slots[0].sip_password",
            ),
        ] {
            let error = load(text, &[]).expect_err(text);
            assert!(error.contains(field), "{text}: {error}");
        }
        let error = load("[sip]\nregistrars = [\"192.0.2.1:5060\"]\nbogus = 1\n", &[])
            .expect_err("unknown");
        assert!(error.contains("bogus"), "{error}");
    }
}

#[cfg(test)]
mod audiosocket_tests {
    use super::*;

    fn slot(audiosocket: &str) -> String {
        format!(
            "[[slots]]\nid = 3\nkind = \"auto\"\naudiosocket = {audiosocket:?}\ndriver = {{ type = \"sim\" }}\n"
        )
    }

    fn load(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("hubd.toml"), Vec::new()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_slot_names_its_audiosocket_server() {
        for server in [
            "127.0.0.1:9092",
            "ai.example.com:9092",
            "[::1]:9092",
            "ai:1",
        ] {
            let config = load(&slot(server)).expect(server);
            let id = SlotId::new(3).expect("id");
            assert_eq!(config.audiosocket_server(id), Some(server));
            assert_eq!(config.audiosocket_server(SlotId::new(4).expect("id")), None);
        }
    }

    #[test]
    fn a_bad_audiosocket_address_is_one_line_naming_the_slot_and_value() {
        for server in [
            "",
            "ai.example.com",
            "ai.example.com:0",
            "ai.example.com:65536",
            ":9092",
            "::1:9092",
            "[::1:9092",
            "a b:9092",
            "http://ai:9092",
        ] {
            let error = load(&slot(server)).expect_err(server);
            assert!(!error.contains('\n'), "{error}");
            assert!(error.contains("slots[0].audiosocket"), "{error}");
            assert!(error.contains("slot 3"), "{error}");
            assert!(error.contains(&format!("{server:?}")), "{error}");
        }
    }
}
