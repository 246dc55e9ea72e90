//! One AT port and its [`Engine`]: the only place where the engine meets
//! real bytes and real time.
//!
//! [`Link::exchange`] runs one command to its end (reply, timeout or
//! abandon), keeping every URC that arrives meanwhile; [`Link::pump`] waits
//! for input or a deadline and handles it. Both leave URCs in
//! [`Link::take_urcs`] and count failed resync probes, so the driver can
//! climb the recovery ladder. `pump` is cancel-safe: bytes read are fed to
//! the engine before it returns, and a dropped wait loses nothing.
//!
//! Owns the port and the engine. Never decides what to do about a failure.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use super::engine::{Engine, EngineConfig, EngineEvent};
use super::parser::FinalResult;
use super::port::{PortError, SerialPort};
use super::urc::Urc;
use super::{Command, CommandId};

/// A command's information lines and final result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Information lines, URCs excluded.
    pub info: Vec<String>,
    /// The final result (`OK` or an error).
    pub result: FinalResult,
}

impl Reply {
    /// Whether the command ended with `OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self.result, FinalResult::Ok)
    }
}

/// Why a command got no final result.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The modem did not finish the command in time.
    #[error("no final result to {command} in time")]
    Timeout {
        /// The command text.
        command: String,
    },
    /// The command was given up (garbage, unexpected prompt, reset).
    #[error("{command} abandoned: {reason}")]
    Abandoned {
        /// The command text.
        command: String,
        /// Why.
        reason: String,
    },
    /// The port closed or failed: the modem is gone.
    #[error("port gone: {0}")]
    Gone(String),
}

/// An open AT port driven by an engine.
#[derive(Debug)]
pub struct Link {
    port: SerialPort,
    engine: Engine,
    urcs: VecDeque<Urc>,
    done: VecDeque<(CommandId, Result<Reply, LinkError>)>,
    failed_probes: u32,
    garbage: u64,
    buf: Box<[u8; 4096]>,
}

impl Link {
    /// Opens the AT port at `path` and starts with a resync (ESC + `AT`),
    /// so a half-typed command or stuck prompt left by a previous owner is
    /// cleared before the first real command.
    pub fn open(path: &Path, baud_rate: u32, config: EngineConfig) -> Result<Link, PortError> {
        let port = SerialPort::open(path, baud_rate)?;
        port.flush_stale();
        let mut engine = Engine::new(config);
        let _ = engine.resync(Instant::now().into_std());
        Ok(Link {
            port,
            engine,
            urcs: VecDeque::new(),
            done: VecDeque::new(),
            failed_probes: 0,
            garbage: 0,
            buf: Box::new([0; 4096]),
        })
    }

    /// The port's path.
    pub fn path(&self) -> &Path {
        self.port.path()
    }

    /// Runs `command` to its end.
    pub async fn exchange(&mut self, command: Command) -> Result<Reply, LinkError> {
        let text = command.text().to_owned();
        let id = self.engine.submit(command);
        loop {
            if let Some(pos) = self.done.iter().position(|(done, _)| *done == id) {
                let (_, result) = self.done.remove(pos).unwrap_or_else(|| unreachable!());
                return result.map_err(|e| match e {
                    LinkError::Timeout { .. } => LinkError::Timeout { command: text },
                    LinkError::Abandoned { reason, .. } => LinkError::Abandoned {
                        command: text,
                        reason,
                    },
                    gone => gone,
                });
            }
            self.pump().await?;
        }
    }

    /// Like [`Link::exchange`], failing on anything but `OK`.
    pub async fn expect_ok(&mut self, command: Command) -> Result<Reply, LinkError> {
        let text = command.text().to_owned();
        let reply = self.exchange(command).await?;
        if reply.is_ok() {
            Ok(reply)
        } else {
            Err(LinkError::Abandoned {
                command: text,
                reason: format!("the modem answered {:?}", reply.result),
            })
        }
    }

    /// Writes what the engine has to send, then waits for input or the
    /// engine's next deadline and handles it. Cancel-safe.
    pub async fn pump(&mut self) -> Result<(), LinkError> {
        self.transmit().await?;
        let deadline = self.engine.next_deadline().map(Instant::from_std);
        let read = tokio::select! {
            read = self.port.read(&mut self.buf[..]) => Some(read),
            _ = sleep_until(deadline) => None,
        };
        match read {
            Some(Ok(0)) => return Err(LinkError::Gone("the port hung up".into())),
            Some(Ok(n)) => {
                let events = self
                    .engine
                    .handle_input(&self.buf[..n], Instant::now().into_std());
                self.absorb(events);
            }
            Some(Err(e)) => return Err(LinkError::Gone(e.to_string())),
            None => {
                let events = self.engine.poll_timeout(Instant::now().into_std());
                self.absorb(events);
            }
        }
        self.transmit().await
    }

    async fn transmit(&mut self) -> Result<(), LinkError> {
        while let Some(bytes) = self.engine.poll_transmit(Instant::now().into_std()) {
            self.port
                .write_all(&bytes)
                .await
                .map_err(|e| LinkError::Gone(e.to_string()))?;
        }
        Ok(())
    }

    fn absorb(&mut self, events: Vec<EngineEvent>) {
        for event in events {
            match event {
                EngineEvent::Response { id, info, result } => {
                    self.failed_probes = 0;
                    self.done.push_back((id, Ok(Reply { info, result })));
                }
                EngineEvent::Urc(urc) => self.urcs.push_back(urc),
                EngineEvent::Garbage(garbage) => {
                    self.garbage += 1;
                    tracing::warn!(?garbage, "garbage from the modem; resyncing");
                }
                EngineEvent::Timeout { id } => {
                    self.done.push_back((
                        id,
                        Err(LinkError::Timeout {
                            command: String::new(),
                        }),
                    ));
                }
                EngineEvent::Abandoned { id, reason } => {
                    self.done.push_back((
                        id,
                        Err(LinkError::Abandoned {
                            command: String::new(),
                            reason: format!("{reason:?}"),
                        }),
                    ));
                }
                EngineEvent::Discarded(line) => tracing::debug!(line, "discarded line"),
                EngineEvent::ResyncFailed { attempts } => {
                    self.failed_probes = attempts;
                    tracing::warn!(attempts, "resync probe failed");
                }
                EngineEvent::Resynced { failed_attempts } => {
                    self.failed_probes = 0;
                    if failed_attempts > 0 {
                        tracing::info!(failed_attempts, "modem answers again");
                    }
                }
            }
        }
        // Results nobody waits for any more (a cancelled exchange) must not pile up.
        while self.done.len() > 64 {
            self.done.pop_front();
        }
        while self.urcs.len() > 1024 {
            self.urcs.pop_front();
        }
    }

    /// The URCs received so far, oldest first.
    pub fn take_urcs(&mut self) -> Vec<Urc> {
        self.urcs.drain(..).collect()
    }

    /// Resync probes that failed in a row (0 once the modem answers).
    pub fn failed_probes(&self) -> u32 {
        self.failed_probes
    }

    /// Whether the engine is resyncing (the modem has not answered cleanly yet).
    pub fn is_resyncing(&self) -> bool {
        self.engine.is_resyncing()
    }

    /// Garbage bursts seen since the link opened.
    pub fn garbage_count(&self) -> u64 {
        self.garbage
    }

    /// Sends `command` ahead of everything queued, ending a resync (the
    /// ladder's `ATZ` and `AT+CFUN=1,1`), and waits for its end.
    pub async fn force(&mut self, command: Command) -> Result<Reply, LinkError> {
        let id = self.engine.force(command);
        loop {
            if let Some(pos) = self.done.iter().position(|(done, _)| *done == id) {
                let (_, result) = self.done.remove(pos).unwrap_or_else(|| unreachable!());
                return result;
            }
            self.pump().await?;
        }
    }

    /// Waits until the engine is idle (a resync finished) or `limit` passes.
    pub async fn settle(&mut self, limit: Duration) -> Result<bool, LinkError> {
        let until = Instant::now() + limit;
        while self.engine.is_resyncing() {
            if Instant::now() >= until {
                return Ok(false);
            }
            tokio::select! {
                result = self.pump() => result?,
                _ = tokio::time::sleep_until(until) => return Ok(false),
            }
        }
        Ok(true)
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
