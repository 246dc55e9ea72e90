//! A minimal AT client for tests and for checking the emulator by hand: it
//! opens a port path like any driver would (`std::fs::OpenOptions`,
//! non-blocking, no controlling terminal), writes command lines and waits,
//! with a deadline, for what comes back.
//!
//! Owns nothing but its descriptor and the bytes read but not yet consumed.
//! Never parses replies beyond "does the text contain this".

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How a wait on a port ended without what was wanted.
#[derive(Debug)]
pub enum PortError {
    /// The deadline passed; `got` is what arrived meanwhile.
    Timeout {
        /// The text read (lossy).
        got: String,
    },
    /// The port closed (EOF, or EIO once the pty master is gone).
    Closed {
        /// The text read before it closed (lossy).
        got: String,
    },
    /// Any other I/O error.
    Io(io::Error),
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Timeout { got } => write!(f, "timed out; got {got:?}"),
            PortError::Closed { got } => write!(f, "port closed; got {got:?}"),
            PortError::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for PortError {}

impl From<io::Error> for PortError {
    fn from(e: io::Error) -> PortError {
        PortError::Io(e)
    }
}

/// An open AT (or voice) port.
#[derive(Debug)]
pub struct PortClient {
    file: File,
    buf: Vec<u8>,
}

impl PortClient {
    /// Opens `path` read-write, non-blocking, without making it the
    /// controlling terminal.
    pub fn open(path: &Path) -> io::Result<PortClient> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        Ok(PortClient {
            file,
            buf: Vec::new(),
        })
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut rest = bytes;
        while !rest.is_empty() {
            match self.file.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "port does not drain",
                        ));
                    }
                    self.poll(libc::POLLOUT, Duration::from_millis(50))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes `command` and a CR.
    pub fn command(&mut self, command: &str) -> io::Result<()> {
        self.send(format!("{command}\r").as_bytes())
    }

    /// Reads until the text read so far (since the last consumed part)
    /// contains `needle`; returns that text up to and including `needle`
    /// and keeps the rest for the next wait.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String, PortError> {
        let needle_bytes = needle.as_bytes();
        self.fill_until(timeout, |buf| {
            find(buf, needle_bytes).map(|i| i + needle_bytes.len())
        })
        .map(lossy)
    }

    /// Sends `command` and waits for its final result code (`OK`, `ERROR`,
    /// `+CME ERROR…`, `+CMS ERROR…`, `NO CARRIER`) or the `> ` prompt;
    /// returns everything up to it (echo included).
    pub fn exchange(&mut self, command: &str, timeout: Duration) -> Result<String, PortError> {
        self.command(command)?;
        self.fill_until(timeout, final_result_end).map(lossy)
    }

    /// Reads until at least `n` bytes are buffered and returns exactly `n`
    /// (raw: for the voice port).
    pub fn read_exact_bytes(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, PortError> {
        self.fill_until(timeout, |buf| (buf.len() >= n).then_some(n))
    }

    /// Waits until the port reports EOF or EIO (the device vanished).
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(), PortError> {
        match self.fill_until(timeout, |_| None) {
            Err(PortError::Closed { .. }) => Ok(()),
            Err(e) => Err(e),
            Ok(_) => Err(PortError::Io(io::Error::other(
                "the port gave data, not EOF",
            ))),
        }
    }

    /// Everything buffered and not consumed, as text (lossy); consumes it.
    pub fn take_buffered(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    fn poll(&self, events: libc::c_short, timeout: Duration) -> io::Result<libc::c_short> {
        let mut fd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll(2) on one live pollfd.
        let rc = unsafe { libc::poll(&mut fd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e);
        }
        Ok(fd.revents)
    }

    /// Reads until `done(buf)` gives the length of a prefix to consume.
    fn fill_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[u8]) -> Option<usize>,
    ) -> Result<Vec<u8>, PortError> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = done(&self.buf) {
                return Ok(self.buf.drain(..end).collect());
            }
            match self.file.read(&mut chunk) {
                Ok(0) => {
                    return Err(PortError::Closed {
                        got: self.take_buffered(),
                    });
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    return Err(PortError::Closed {
                        got: self.take_buffered(),
                    });
                }
                Err(e) => return Err(PortError::Io(e)),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PortError::Timeout {
                    got: self.take_buffered(),
                });
            }
            self.poll(libc::POLLIN, left.min(Duration::from_millis(200)))
                .map_err(PortError::Io)?;
        }
    }
}

fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The end of the first final result code line (or `> ` prompt) in `buf`.
fn final_result_end(buf: &[u8]) -> Option<usize> {
    if let Some(i) = find(buf, b"\r\n> ") {
        return Some(i + 4);
    }
    let mut start = 0;
    while let Some(rel) = find(&buf[start..], b"\r\n") {
        let end = start + rel;
        let line = &buf[start..end];
        let is_final = line == b"OK"
            || line == b"ERROR"
            || line == b"NO CARRIER"
            || line == b"BUSY"
            || line.starts_with(b"+CME ERROR")
            || line.starts_with(b"+CMS ERROR");
        if is_final {
            return Some(end + 2);
        }
        start = end + 2;
    }
    None
}
