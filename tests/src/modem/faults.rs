//! The shapes of the faults a test can script into a modem at runtime:
//! garbage on the AT port and URCs interleaved inside command replies. The
//! other faults (silence, the `AT+CHLD` hang, reset, vanish) are states of
//! [`super::model::ModemModel`] and the runner.
//!
//! Owns plain data only. Never emits anything itself.

/// Bytes that are not a clean AT line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Garbage {
    /// A line of bytes that are not UTF-8 (and a control byte).
    InvalidUtf8,
    /// One line of this many printable bytes (10 KB overflows most framers).
    LongLine(usize),
    /// Exactly these bytes.
    Bytes(Vec<u8>),
}

impl Garbage {
    /// The bytes written to the AT port.
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Garbage::InvalidUtf8 => b"\r\n\xff\xfe\xfd garbage \xc3\x28\x01\x80\x81\r\n".to_vec(),
            Garbage::LongLine(n) => {
                let mut out = b"\r\n".to_vec();
                out.extend(b"^DSFLOWRPT:0000,0,0,".iter().copied().cycle().take(*n));
                out.extend_from_slice(b"\r\n");
                out
            }
            Garbage::Bytes(b) => b.clone(),
        }
    }
}

/// Where inside a reply interleaved bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InReply {
    /// After the information lines, before the final result code (`OK`).
    BeforeFinal,
    /// After the first information line (the middle of a multi-line
    /// reply); waits for a reply that has one.
    AfterFirstLine,
}

/// Bytes slipped into the next matching command reply, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interleave {
    /// What is inserted.
    pub bytes: Vec<u8>,
    /// Where.
    pub at: InReply,
    /// Only a reply to a command line starting with this (upper-case,
    /// e.g. `AT+CLCC`); `None`: the next reply.
    pub command: Option<String>,
}

impl Interleave {
    /// The URC line `line` (framed `\r\n…\r\n`) before the next final result code.
    pub fn urc(line: &str) -> Interleave {
        Interleave {
            bytes: format!("\r\n{line}\r\n").into_bytes(),
            at: InReply::BeforeFinal,
            command: None,
        }
    }

    /// The same, placed at `at`.
    pub fn at(mut self, at: InReply) -> Interleave {
        self.at = at;
        self
    }

    /// The same, only in the reply to a command starting with `prefix`.
    pub fn in_reply_to(mut self, prefix: &str) -> Interleave {
        self.command = Some(prefix.to_ascii_uppercase());
        self
    }
}
