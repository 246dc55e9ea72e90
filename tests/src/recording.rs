//! Reading hub call recordings back with the real decoder: `opusdec` (Debian's
//! `opus-tools`) turns an Ogg Opus recording into raw PCM, split here into the
//! recording's two legs (channel 0: the SIP leg, channel 1: the device leg;
//! `docs/recordings.md`).

use std::path::Path;
use std::process::Command;

/// The rate recordings are decoded at (the rate they are encoded at).
pub const DECODE_HZ: u32 = 16_000;

/// A recording decoded by `opusdec`.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The SIP leg's samples (channel 0) at [`DECODE_HZ`].
    pub sip: Vec<i16>,
    /// The device leg's samples (channel 1) at [`DECODE_HZ`].
    pub device: Vec<i16>,
}

impl Decoded {
    /// The audio's length in ms.
    pub fn duration_ms(&self) -> u64 {
        self.sip.len() as u64 * 1_000 / u64::from(DECODE_HZ)
    }
}

/// Decodes `path` with `opusdec` at [`DECODE_HZ`]; panics with opusdec's
/// own error when it refuses the file.
pub fn opusdec(path: &Path) -> Decoded {
    let dir = tempfile::tempdir().expect("a temp dir");
    let raw = dir.path().join("decoded.raw");
    let output = Command::new("opusdec")
        .args(["--quiet", "--rate", &DECODE_HZ.to_string()])
        .arg(path)
        .arg(&raw)
        .output()
        .expect("run opusdec (Debian package opus-tools)");
    assert!(
        output.status.success(),
        "opusdec {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&raw).expect("decoded audio");
    let mut decoded = Decoded {
        sip: Vec::with_capacity(bytes.len() / 4),
        device: Vec::with_capacity(bytes.len() / 4),
    };
    for frame in bytes.chunks_exact(4) {
        decoded.sip.push(i16::from_le_bytes([frame[0], frame[1]]));
        decoded
            .device
            .push(i16::from_le_bytes([frame[2], frame[3]]));
    }
    decoded
}
