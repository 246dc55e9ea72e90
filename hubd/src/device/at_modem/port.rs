//! A serial port of a modem (its AT port or its voice port), opened raw and
//! exclusive by `serialport`, then driven non-blocking through tokio's
//! reactor: no thread per port, so 30 modems cost 60 descriptors, not 60
//! threads.
//!
//! Owns one descriptor. Exclusive means `TIOCEXCL` plus an exclusive
//! `flock`: while a slot holds a port, discovery cannot probe it and no
//! other program (or second hubd) can write into the middle of a reply.
//! Never interprets a byte.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;

/// An open serial port.
#[derive(Debug)]
pub struct SerialPort {
    fd: AsyncFd<File>,
    path: PathBuf,
}

/// Why a port could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The path does not exist (the modem was unplugged or renumbered).
    #[error("{path}: no such port")]
    Missing {
        /// The port.
        path: PathBuf,
    },
    /// Another slot, program or hubd holds the port.
    #[error("{path}: port is busy (held by another slot or program)")]
    Busy {
        /// The port.
        path: PathBuf,
    },
    /// Anything else the system said.
    #[error("{path}: {source}")]
    Io {
        /// The port.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl SerialPort {
    /// Opens `path` raw (8N1, no flow control, no echo), exclusive, non-blocking.
    pub fn open(path: &Path, baud_rate: u32) -> Result<SerialPort, PortError> {
        let path = path.to_owned();
        let file = open_file(&path, baud_rate)?;
        // SAFETY: the File owns its descriptor, which stays open and the
        // same for as long as the AsyncFd lives (it owns the File).
        let fd = unsafe { AsyncFd::register(file) }.map_err(|e| PortError::Io {
            path: path.clone(),
            source: e.into_parts().1,
        })?;
        Ok(SerialPort { fd, path })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what is available into `buf` (waits until something is).
    /// `Ok(0)` means the port is gone (hang-up).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| inner.get_ref().read(buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|inner| inner.get_ref().write(bytes)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Discards whatever the port has buffered in both directions (stale
    /// replies from before we opened it).
    pub fn flush_stale(&self) {
        // SAFETY: tcflush on a descriptor we own; failure is harmless.
        unsafe {
            libc::tcflush(self.fd.get_ref().as_raw_fd(), libc::TCIOFLUSH);
        }
    }
}

impl Drop for SerialPort {
    fn drop(&mut self) {
        // A tty stays exclusive until its last close; a pty whose other side
        // keeps a descriptor open would refuse the next open for non-root.
        // SAFETY: ioctl without arguments on a descriptor we own.
        unsafe {
            libc::ioctl(self.fd.get_ref().as_raw_fd(), libc::TIOCNXCL);
        }
    }
}

/// Opens `path` raw, exclusive and non-blocking, without registering it
/// with the async runtime: for a voice port, which only the voice clock
/// thread reads and writes (a registered port would wake the runtime on
/// every frame the modem sends).
pub fn open_raw(path: &Path, baud_rate: u32) -> Result<RawPort, PortError> {
    open_file(path, baud_rate).map(RawPort)
}

/// A port opened by [`open_raw`]; like [`SerialPort`], it gives up its
/// exclusivity when dropped.
#[derive(Debug)]
pub struct RawPort(File);

impl std::os::fd::AsFd for RawPort {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for RawPort {
    fn drop(&mut self) {
        // SAFETY: ioctl without arguments on a descriptor we own.
        unsafe {
            libc::ioctl(self.0.as_raw_fd(), libc::TIOCNXCL);
        }
    }
}

fn open_file(path: &Path, baud_rate: u32) -> Result<File, PortError> {
    let native = serialport::new(path.to_string_lossy(), baud_rate)
        .flow_control(serialport::FlowControl::None)
        .open_native()
        .map_err(|e| open_error(path, e))?;
    let raw = native.into_raw_fd();
    // SAFETY: `into_raw_fd` handed us sole ownership of a valid descriptor.
    let file = unsafe { File::from_raw_fd(raw) };
    set_nonblocking(&file).map_err(|source| PortError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(file)
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn open_error(path: &Path, e: serialport::Error) -> PortError {
    let path = path.to_owned();
    match e.kind() {
        // serialport reports a failed TIOCEXCL (EBUSY) and a held flock as NoDevice.
        serialport::ErrorKind::NoDevice => PortError::Busy { path },
        serialport::ErrorKind::Io(io::ErrorKind::NotFound) => PortError::Missing { path },
        // A tty whose USB device just went away: ENODEV or ENXIO.
        _ if e.description.contains("No such device") => PortError::Missing { path },
        _ => PortError::Io {
            source: io::Error::other(e.description),
            path,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_port_is_named_missing() {
        let err = SerialPort::open(Path::new("/dev/vss-test-no-such-port"), 115_200).unwrap_err();
        assert!(matches!(err, PortError::Missing { .. }), "{err:?}");
        assert!(err.to_string().contains("no such port"));
    }

    #[tokio::test]
    async fn a_regular_file_is_not_a_port() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-a-tty");
        std::fs::write(&path, b"x").unwrap();
        let err = SerialPort::open(&path, 115_200).unwrap_err();
        assert!(matches!(err, PortError::Io { .. }), "{err:?}");
    }
}
