//! Pseudo-terminal plumbing: one [`PtyPort`] is a pty pair whose slave path
//! (`/dev/pts/N`) a driver opens as if it were `/dev/ttyUSB2`, while the
//! emulator reads and writes the master. Both sides are raw (no echo, no
//! line discipline, no CR/LF translation), the master is non-blocking, and
//! every descriptor is close-on-exec so child processes (socat, hubd) never
//! hold a port open behind the emulator's back. Also the udev-like stable
//! symlinks (`<dir>/by-imei/<IMEI>-at`).
//!
//! Owns file descriptors and their flags. Never interprets a byte.
//!
//! The emulator keeps its own slave descriptor open, so the master never
//! sees a hang-up when a driver closes and reopens the port; the price is
//! that bytes written while no driver has the port open wait in the pty
//! (a real ttyUSB drops them).

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// One pty pair: the master the emulator uses, the slave path for drivers.
#[derive(Debug)]
pub struct PtyPort {
    master: File,
    /// Held so the line stays up while no driver has it open.
    _slave: OwnedFd,
    path: PathBuf,
}

impl PtyPort {
    /// Opens a new pty pair, raw on both sides, master non-blocking.
    pub fn open() -> io::Result<PtyPort> {
        let mut master: RawFd = -1;
        let mut slave: RawFd = -1;
        // SAFETY: openpty writes two descriptors into the out-pointers; the
        // name, termios and winsize pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: openpty succeeded, so both are open descriptors that
        // nothing else owns.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        set_cloexec(master.as_raw_fd())?;
        set_cloexec(slave.as_raw_fd())?;
        make_raw(slave.as_raw_fd())?;
        make_raw(master.as_raw_fd())?;
        set_nonblocking(master.as_raw_fd())?;
        let path = slave_path(slave.as_raw_fd())?;
        Ok(PtyPort {
            master: File::from(master),
            _slave: slave,
            path,
        })
    }

    /// The slave path a driver opens (`/dev/pts/N`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The master, for reading and writing (non-blocking).
    pub fn master(&self) -> &File {
        &self.master
    }

    /// The master's descriptor, for poll(2).
    pub fn master_fd(&self) -> RawFd {
        self.master.as_raw_fd()
    }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFD/F_SETFD take ints.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFD))?;
        check(libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
    }
    Ok(())
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; F_GETFL/F_SETFL take ints.
    unsafe {
        let flags = check(libc::fcntl(fd, libc::F_GETFL))?;
        check(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK))?;
    }
    Ok(())
}

/// cfmakeraw on the terminal behind `fd`.
fn make_raw(fd: RawFd) -> io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it before cfmakeraw
    // and tcsetattr read it; fd is a terminal we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        check(libc::tcgetattr(fd, &mut t))?;
        libc::cfmakeraw(&mut t);
        check(libc::tcsetattr(fd, libc::TCSANOW, &t))?;
    }
    Ok(())
}

fn slave_path(fd: RawFd) -> io::Result<PathBuf> {
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: ttyname_r writes a NUL-terminated name of at most buf.len()
    // bytes into buf, or returns an error number.
    let rc = unsafe { libc::ttyname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: on success buf holds a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Ok(PathBuf::from(name.to_string_lossy().into_owned()))
}

/// The udev-like links of one modem: `<dir>/by-imei/<IMEI>-at` and `-voice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableLinks {
    /// `<dir>/by-imei/<IMEI>-at`.
    pub at: PathBuf,
    /// `<dir>/by-imei/<IMEI>-voice`.
    pub voice: PathBuf,
}

impl StableLinks {
    /// The link paths for `imei` under `dir` (nothing is created).
    pub fn new(dir: &Path, imei: &str) -> StableLinks {
        let by_imei = dir.join("by-imei");
        StableLinks {
            at: by_imei.join(format!("{imei}-at")),
            voice: by_imei.join(format!("{imei}-voice")),
        }
    }

    /// Points the links at `at` and `voice`, replacing old ones atomically.
    pub fn install(&self, at: &Path, voice: &Path) -> io::Result<()> {
        for (link, target) in [(&self.at, at), (&self.voice, voice)] {
            if let Some(parent) = link.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = link.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(target, &tmp)?;
            std::fs::rename(&tmp, link)?;
        }
        Ok(())
    }

    /// Removes the links (as udev does when the device goes away).
    pub fn remove(&self) -> io::Result<()> {
        for link in [&self.at, &self.voice] {
            match std::fs::remove_file(link) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
