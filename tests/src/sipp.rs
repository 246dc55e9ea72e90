//! sipp (Debian's `sip-tester`) as a SIP peer for cross-process tests: a
//! UAC or UAS run in the foreground from a scenario in `tests/sipp/`, in a
//! temporary working directory that holds its statistics, error log,
//! messages and the RTP it plays; read back as an exit status and the
//! successful/failed call counters. Also writes the pcap sipp's
//! `play_pcap_audio` plays: RTP G.711 packets of a tone.
//!
//! It must never: wait without a deadline (sipp gets `-timeout`, and the
//! harness kills it a little after), or outlive its [`Sipp`] (it runs in
//! its own process group, which drop kills).

use std::fs::File;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hubd::media::g711::Codec;

use crate::tone;
use crate::wait_for;

/// What the harness adds to sipp's own `-timeout` before killing it.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How many times sipp is started when a port the harness chose was taken
/// before sipp bound it.
pub const BIND_ATTEMPTS: u32 = 3;

/// The name of the tone pcap in sipp's working directory, as the call
/// scenarios' `play_pcap_audio` refer to it.
pub const TONE_PCAP: &str = "tone.pcap";

/// A scenario of `tests/sipp/` by file name (`uac_call.xml`).
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// `sipp`: Debian installs it in `/usr/bin`.
fn program() -> PathBuf {
    PathBuf::from("sipp")
}

/// A free loopback UDP port `p` such that `p..p+4` are free too (sipp's
/// media sockets use the port and the next even one).
pub fn free_udp_port() -> u16 {
    loop {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("a free UDP port");
        let port = socket.local_addr().expect("bound").port();
        if !port.is_multiple_of(2) || port > 65_000 {
            continue;
        }
        let others: Vec<_> = (1..4)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", port + i)).ok())
            .collect();
        if others.len() == 3 {
            return port;
        }
    }
}

/// A tone to write as RTP into [`TONE_PCAP`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tone {
    /// Hz.
    pub frequency: f64,
    /// Length in seconds (whole 20 ms packets).
    pub seconds: f64,
    /// PCMU (payload type 0) or PCMA (8).
    pub codec: Codec,
}

impl Default for Tone {
    /// 1 kHz PCMU, 2 s.
    fn default() -> Self {
        Tone {
            frequency: 1000.0,
            seconds: 2.0,
            codec: Codec::Pcmu,
        }
    }
}

/// How to run sipp once.
#[derive(Debug, Clone)]
pub struct SippConfig {
    /// The scenario file (`-sf`).
    pub scenario: PathBuf,
    /// The peer (`host:port` after the options): Kamailio for a UAC or a
    /// REGISTER; `None` for a UAS.
    pub remote: Option<SocketAddr>,
    /// SIP port (`-p`), on 127.0.0.1 (`-i`); 0 picks a free one.
    pub port: u16,
    /// Media port (`-mp`); 0 picks a free one.
    pub media_port: u16,
    /// Calls before exiting (`-m`).
    pub calls: u32,
    /// `-s`: `[service]`, the callee (UAC) or the registered user.
    pub service: String,
    /// `-au`/`-ap`, answering 401/407 challenges.
    pub auth: Option<(String, String)>,
    /// `-key NAME VALUE`: `[NAME]` in the scenario.
    pub keys: Vec<(String, String)>,
    /// `-d`: what a bare `<pause/>` waits, in ms.
    pub pause_ms: u64,
    /// `-rtp_echo`: echo the RTP received on the media port.
    pub rtp_echo: bool,
    /// Written into the working directory as [`TONE_PCAP`].
    pub tone: Option<Tone>,
    /// sipp's `-timeout` (with `-timeout_error`); the harness kills it
    /// [`KILL_GRACE`] later.
    pub timeout: Duration,
}

impl SippConfig {
    /// A UAC running `scenario` (a file of `tests/sipp/`) once towards
    /// `remote`, calling `service`.
    pub fn uac(scenario_name: &str, remote: SocketAddr, service: &str) -> SippConfig {
        SippConfig {
            scenario: scenario(scenario_name),
            remote: Some(remote),
            port: 0,
            media_port: 0,
            calls: 1,
            service: service.to_owned(),
            auth: None,
            keys: Vec::new(),
            pause_ms: 1000,
            rtp_echo: false,
            tone: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// A UAS running `scenario` for one call, on a free port.
    pub fn uas(scenario_name: &str) -> SippConfig {
        SippConfig {
            remote: None,
            service: "uas".to_owned(),
            ..SippConfig::uac(scenario_name, SocketAddr::from(([127, 0, 0, 1], 0)), "")
        }
    }

    /// Answers challenges as `user`/`password`; for the call scenarios it is
    /// also the caller (`[caller]`, the From user).
    pub fn auth(mut self, user: &str, password: &str) -> SippConfig {
        self.auth = Some((user.to_owned(), password.to_owned()));
        self.key("caller", user)
    }

    /// Sets `[name]` to `value`.
    pub fn key(mut self, name: &str, value: &str) -> SippConfig {
        self.keys.retain(|(k, _)| k != name);
        self.keys.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Plays `tone` (the call scenarios' `play_pcap_audio`).
    pub fn tone(mut self, tone: Tone) -> SippConfig {
        self.tone = Some(tone);
        self
    }

    /// `<pause/>` waits `ms`.
    pub fn pause_ms(mut self, ms: u64) -> SippConfig {
        self.pause_ms = ms;
        self
    }

    /// Echoes the RTP received on its media port to its sender (`-rtp_echo`).
    pub fn rtp_echo(mut self) -> SippConfig {
        self.rtp_echo = true;
        self
    }
}

/// How a sipp run ended.
#[derive(Debug, Clone)]
pub struct SippOutcome {
    /// sipp's exit status: 0 all calls succeeded, 1 some failed, 97 stopped
    /// by a command, 99 no call processed, 255/254 fatal.
    pub status: ExitStatus,
    /// `SuccessfulCall(C)` of the last statistics line.
    pub successful: u64,
    /// `FailedCall(C)` of the last statistics line.
    pub failed: u64,
    /// The error log (`-trace_err`), empty when none.
    pub errors: String,
    /// sipp's screen output (stdout and stderr).
    pub output: String,
    /// The SIP messages sipp sent and received (`-trace_msg`).
    pub messages: String,
}

impl SippOutcome {
    /// Exit 0 with exactly `calls` successful calls and no failed ones.
    pub fn succeeded(&self, calls: u64) -> bool {
        self.status.success() && self.successful == calls && self.failed == 0
    }

    /// sipp could not bind a port the harness had chosen for it (exit 254,
    /// "Unable to bind"): another process took it in between.
    fn lost_a_chosen_port(&self, config: &SippConfig) -> bool {
        self.status.code() == Some(254)
            && (config.port == 0 || config.media_port == 0)
            && self.output.contains("Unable to bind")
    }

    /// Panics with sipp's logs unless [`SippOutcome::succeeded`].
    pub fn assert_succeeded(&self, calls: u64, what: &str) {
        assert!(
            self.succeeded(calls),
            "{what}: sipp {} (successful {}, failed {}); errors:\n{}\noutput:\n{}\nmessages:\n{}",
            self.status,
            self.successful,
            self.failed,
            self.errors,
            self.output,
            self.messages
        );
    }
}

/// A running sipp.
pub struct Sipp {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: SippConfig,
    started: Instant,
}

impl Sipp {
    /// Starts sipp with `config` (free ports filled in); it may not be
    /// listening yet: [`Sipp::listen`] waits for that.
    pub fn spawn(mut config: SippConfig) -> Sipp {
        let dir = tempfile::tempdir().expect("a temp dir");
        if config.port == 0 {
            config.port = free_udp_port();
        }
        if config.media_port == 0 {
            config.media_port = free_udp_port();
        }
        if let Some(tone) = config.tone {
            write_tone_pcap(&dir.path().join(TONE_PCAP), &tone).expect("tone pcap written");
        }
        let output = File::create(dir.path().join("output.log")).expect("a log file");
        let mut command = Command::new(program());
        command
            .arg("-sf")
            .arg(&config.scenario)
            .args(["-i", "127.0.0.1", "-t", "u1", "-nostdin"])
            .arg("-p")
            .arg(config.port.to_string())
            .arg("-mp")
            .arg(config.media_port.to_string())
            .arg("-m")
            .arg(config.calls.to_string())
            .arg("-s")
            .arg(&config.service)
            .arg("-d")
            .arg(config.pause_ms.to_string())
            .args(["-trace_err", "-error_file"])
            .arg(dir.path().join("errors.log"))
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(dir.path().join("stat.csv"))
            .args(["-trace_msg", "-message_file"])
            .arg(dir.path().join("messages.log"))
            .arg("-timeout")
            .arg(format!("{}s", config.timeout.as_secs().max(1)))
            .arg("-timeout_error");
        if let Some((user, password)) = &config.auth {
            command.arg("-au").arg(user).arg("-ap").arg(password);
        }
        for (name, value) in &config.keys {
            command.arg("-key").arg(name).arg(value);
        }
        if config.rtp_echo {
            command.arg("-rtp_echo");
        }
        if let Some(remote) = config.remote {
            command.arg(remote.to_string());
        }
        let child = command
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("log file cloned"))
            .stderr(output)
            .process_group(0)
            .spawn()
            .expect("sipp starts (Debian package sip-tester)");
        Sipp {
            child: Some(child),
            dir,
            config,
            started: Instant::now(),
        }
    }

    /// Runs sipp with `config` to its end. When sipp could not bind a port
    /// the harness chose (another process took it meanwhile), it runs again
    /// on fresh ports, at most [`BIND_ATTEMPTS`] times.
    pub fn run(config: SippConfig) -> SippOutcome {
        let mut attempt = 1;
        loop {
            let outcome = Sipp::spawn(config.clone()).wait();
            if attempt >= BIND_ATTEMPTS || !outcome.lost_a_chosen_port(&config) {
                return outcome;
            }
            attempt += 1;
        }
    }

    /// Starts a sipp (a UAS) with `config` and waits until its SIP socket
    /// is bound; retries on fresh ports as [`Sipp::run`] does.
    pub fn listen(config: SippConfig) -> Sipp {
        let mut attempt = 1;
        loop {
            match Sipp::spawn(config.clone()).wait_listening() {
                Ok(sipp) => return sipp,
                Err(outcome) => {
                    assert!(
                        attempt < BIND_ATTEMPTS && outcome.lost_a_chosen_port(&config),
                        "sipp exited ({}) before listening: {}",
                        outcome.status,
                        outcome.output
                    );
                }
            }
            attempt += 1;
        }
    }

    /// Registers `user` (password `password`) with the registrar at
    /// `registrar` for `expires` seconds, its contact
    /// `sip:USER@127.0.0.1:contact_port` (a sipp UAS, or any UA there), with
    /// `tests/sipp/register.xml`; panics unless the registrar said 200.
    pub fn register(
        registrar: SocketAddr,
        user: &str,
        password: &str,
        contact_port: u16,
        expires: u32,
    ) {
        let config = SippConfig::uac("register.xml", registrar, user)
            .auth(user, password)
            .key("contact_port", &contact_port.to_string())
            .key("expires", &expires.to_string());
        Sipp::run(config).assert_succeeded(1, &format!("REGISTER {user}"));
    }

    /// The SIP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.config.port))
    }

    /// The SIP messages sipp sent and received so far (its `-trace_msg`
    /// log), for waiting on a step of a running scenario.
    pub fn messages_so_far(&self) -> String {
        self.read("messages.log")
    }

    /// Its media port (`-mp`).
    pub fn media_port(&self) -> u16 {
        self.config.media_port
    }

    /// Waits until its SIP socket is bound (the port can no longer be
    /// bound by anyone else); if sipp exits first, how it ended.
    fn wait_listening(mut self) -> Result<Sipp, SippOutcome> {
        let addr = self.addr();
        let exited = wait_for(&format!("sipp listening on {addr}"), KILL_GRACE, || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(_)) = child.try_wait()
            {
                return Some(true);
            }
            UdpSocket::bind(addr).is_err().then_some(false)
        });
        if exited { Err(self.wait()) } else { Ok(self) }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// Waits for sipp to exit (at most its `-timeout` and a grace; then it
    /// is killed and the status says so) and reads its counters and logs.
    pub fn wait(mut self) -> SippOutcome {
        let mut child = self.child.take().expect("sipp was started");
        let deadline = self.started + self.config.timeout + KILL_GRACE;
        let status = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if Instant::now() >= deadline {
                kill_group(&child);
                break child.wait().expect("sipp reaped");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (successful, failed) = parse_stat_counters(&self.read("stat.csv"));
        SippOutcome {
            status,
            successful,
            failed,
            errors: self.read("errors.log"),
            output: self.read("output.log"),
            messages: self.read("messages.log"),
        }
    }
}

fn kill_group(child: &Child) {
    if let Ok(group) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the process group this harness created.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&child);
            let _ = child.wait();
        }
    }
}

/// `SuccessfulCall(C)` and `FailedCall(C)` of the last line of a sipp
/// statistics file (`-trace_stat`: `;`-separated, a header line first);
/// zeros when absent.
pub fn parse_stat_counters(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return (0, 0);
    };
    let names: Vec<&str> = header.split(';').collect();
    let Some(last) = lines.next_back() else {
        return (0, 0);
    };
    let values: Vec<&str> = last.split(';').collect();
    let column = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (column("SuccessfulCall(C)"), column("FailedCall(C)"))
}

/// `tone` as RTP packets of 20 ms G.711 frames (payload type of the codec,
/// sequence from 1, timestamp +160, marker on the first) from `ssrc`: what
/// [`tone_pcap`] carries, and what a test sends from its own socket.
pub fn tone_rtp(tone: &Tone, ssrc: u32) -> Vec<Vec<u8>> {
    let samples = tone::sine(tone.frequency, 8000, 8000, tone.seconds);
    samples
        .chunks_exact(160)
        .enumerate()
        .map(|(i, frame)| {
            let index = u32::try_from(i).expect("a short tone");
            let mut rtp = Vec::with_capacity(172);
            rtp.push(0x80);
            rtp.push(tone.codec.payload_type() | if i == 0 { 0x80 } else { 0 });
            rtp.extend_from_slice(&(index as u16).wrapping_add(1).to_be_bytes());
            rtp.extend_from_slice(&index.wrapping_mul(160).to_be_bytes());
            rtp.extend_from_slice(&ssrc.to_be_bytes());
            rtp.extend(frame.iter().map(|&s| tone.codec.encode(s)));
            rtp
        })
        .collect()
}

/// RTP of `tone` as a pcap sipp's `play_pcap_audio` plays: Ethernet, IPv4
/// (127.0.0.1:6000 → 127.0.0.1:6002; sipp rewrites both), UDP with its
/// checksum, RTP (payload type of the codec, sequence from 1, timestamp +160,
/// marker on the first) of 20 ms G.711 frames, 20 ms apart.
pub fn tone_pcap(tone: &Tone) -> Vec<u8> {
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset 0, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, rtp) in tone_rtp(tone, 0x5653_5301).iter().enumerate() {
        let index = u32::try_from(i).expect("a short tone");
        let frame_bytes = ethernet_ipv4_udp([127, 0, 0, 1], 6000, [127, 0, 0, 1], 6002, rtp);
        let micros = u64::from(index) * 20_000;
        let length = u32::try_from(frame_bytes.len()).expect("a small frame");
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(&frame_bytes);
    }
    out
}

/// Writes [`tone_pcap`] to `path`.
pub fn write_tone_pcap(path: &Path, tone: &Tone) -> std::io::Result<()> {
    std::fs::write(path, tone_pcap(tone))
}

/// The one's-complement sum of `bytes` (16-bit big-endian words), folded.
fn ones_complement_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// An Ethernet II frame with an IPv4 header (no options, checksum set) and
/// a UDP datagram (checksum over the pseudo-header set) carrying `payload`.
fn ethernet_ipv4_udp(
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = u16::try_from(8 + payload.len()).expect("a small datagram");
    let ip_len = 20 + udp_len;
    let mut frame = Vec::with_capacity(14 + usize::from(ip_len));
    frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let checksum = !(ones_complement_sum(0, &ip) as u16);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&ip);
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&udp_len.to_be_bytes());
    let sum = ones_complement_sum(ones_complement_sum(0, &pseudo), &udp);
    let checksum = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    frame.extend_from_slice(&udp);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sipp_statistics() {
        let csv = "StartTime;LastResetTime;CurrentTime;SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);\n\
                   a;b;c;0;0;0;0;\n\
                   a;b;c;1;1;0;2;\n";
        assert_eq!(parse_stat_counters(csv), (1, 2));
        assert_eq!(parse_stat_counters(""), (0, 0));
    }

    #[test]
    fn tone_pcap_has_valid_checksums_and_lengths() {
        let pcap = tone_pcap(&Tone {
            seconds: 0.1,
            ..Tone::default()
        });
        assert_eq!(&pcap[..4], &0xa1b2_c3d4u32.to_le_bytes());
        let mut at = 24;
        let mut packets = 0;
        while at < pcap.len() {
            let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
            let frame = &pcap[at + 16..at + 16 + caplen];
            assert_eq!(caplen, 14 + 20 + 8 + 12 + 160);
            let ip = &frame[14..34];
            assert_eq!(ones_complement_sum(0, ip), 0xffff, "IPv4 header checksum");
            let udp = &frame[34..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&ip[12..20]);
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&udp[4..6]);
            assert_eq!(
                ones_complement_sum(ones_complement_sum(0, &pseudo), udp),
                0xffff,
                "UDP checksum"
            );
            let rtp = hubd::media::rtp::parse(&udp[8..]).expect("RTP");
            assert_eq!(rtp.header.payload_type, 0);
            assert_eq!(rtp.header.sequence, packets + 1);
            at += 16 + caplen;
            packets += 1;
        }
        assert_eq!(packets, 5);
    }
}
