//! The jitter buffer of one call leg's incoming audio: G.711 packets in, in
//! any order; one packet (or "missing") out per pop — one pop per 20 ms tick
//! for the 20 ms packets we ask for (the session pops more rarely for
//! longer packets, see `rtp_session`). Depths count packets.
//!
//! Packets are ordered by RTP sequence number (wrapping at 65535), so
//! timestamps play no part in playout and a timestamp jump (silence
//! suppression, a paused sender) changes nothing. The buffer:
//! - waits until it holds `target_depth` frames (or `target_depth` ticks
//!   passed since the first packet) before playing, and again after every
//!   underrun, so the delay returns to the target after a pause;
//! - drops duplicates and packets older than what it already played (late);
//! - holds at most `max_depth` frames: a burst pushes the oldest out, and
//!   while playing, frames beyond `target_depth + 2` are discarded so a
//!   stall never leaves the call with a long delay;
//! - starts again on a new SSRC, or on a sequence jump confirmed by two
//!   consecutive packets (a sender that restarted), as RFC 3550 A.1 does.
//!
//! Sans-IO, no clock: the caller pops once per tick. Every slot is allocated
//! at construction; nothing is allocated per packet. Never panics.

use crate::media::g711::FRAME_SAMPLES;

/// Largest payload kept: 60 ms of G.711. Peers that ignore our
/// `a=ptime:20` send 30 or 40 ms packets; the session cuts them into frames.
pub const MAX_PAYLOAD: usize = 3 * FRAME_SAMPLES;

/// Packets this far behind the playout point are late, not a restart.
const MAX_MISORDER: u16 = 100;
/// Packets this far ahead are a jump, not a loss.
const MAX_DROPOUT: u16 = 3000;
/// Frames tolerated above the target while playing before trimming.
const TRIM_SLACK: u16 = 2;

/// Sizes of the buffer, in 20 ms frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Frames held before playout starts: the added delay (default 3 = 60 ms).
    pub target_depth: u16,
    /// Frames held at most (default 10 = 200 ms).
    pub max_depth: u16,
}

impl Default for JitterConfig {
    fn default() -> Self {
        JitterConfig {
            target_depth: 3,
            max_depth: 10,
        }
    }
}

/// What became of a pushed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// Stored for playout.
    Accepted,
    /// Stored, after the buffer started again (new SSRC or confirmed jump).
    Reset,
    /// Already held: dropped.
    Duplicate,
    /// Its turn has passed: dropped.
    Late,
    /// Far outside the window and not (yet) confirmed as a jump: dropped.
    OutOfRange,
}

/// Why a tick has no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Nothing received yet, or filling up to the target depth.
    Buffering,
    /// The frame due now never arrived (later ones did).
    Lost,
    /// The buffer ran empty.
    Underrun,
}

/// One tick's output.
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The frame to play.
    Frame {
        /// Its sequence number.
        sequence: u16,
        /// Its payload (at most [`MAX_PAYLOAD`] bytes).
        payload: &'a [u8],
    },
    /// Nothing to play: the caller plays silence or repeats the last frame.
    Missing(Missing),
}

/// Running totals of one buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Frames played.
    pub played: u64,
    /// Frames due that never arrived.
    pub lost: u64,
    /// Packets that arrived after their turn.
    pub late: u64,
    /// Packets received twice.
    pub duplicates: u64,
    /// Frames discarded to keep the delay bounded.
    pub discarded: u64,
    /// Ticks where the buffer ran empty.
    pub underruns: u64,
    /// Restarts (new SSRC, sequence jump).
    pub resets: u64,
    /// Packets far outside the window, dropped.
    pub out_of_range: u64,
}

#[derive(Debug, Clone)]
struct Slot {
    sequence: u16,
    filled: bool,
    len: u16,
    data: [u8; MAX_PAYLOAD],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Filling: `waited` ticks since the first packet of this fill.
    Buffering {
        waited: u16,
    },
    Playing,
}

/// A jitter buffer for one incoming stream.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    config: JitterConfig,
    slots: Box<[Slot]>,
    mask: usize,
    ssrc: Option<u32>,
    /// The next sequence number to play.
    next: u16,
    /// The newest sequence number held (valid while `held > 0`).
    newest: u16,
    held: u16,
    state: State,
    /// A far packet's successor: if it comes next, the jump is real.
    probe: Option<u16>,
    epoch: u64,
    stats: JitterStats,
}

impl JitterBuffer {
    /// An empty buffer. Depths are clamped to 1 ≤ target ≤ max ≤ 64.
    pub fn new(config: JitterConfig) -> JitterBuffer {
        let max_depth = config.max_depth.clamp(1, 64);
        let target_depth = config.target_depth.clamp(1, max_depth);
        let ring = usize::from(max_depth).next_power_of_two();
        let empty = Slot {
            sequence: 0,
            filled: false,
            len: 0,
            data: [0; MAX_PAYLOAD],
        };
        JitterBuffer {
            config: JitterConfig {
                target_depth,
                max_depth,
            },
            slots: vec![empty; ring].into_boxed_slice(),
            mask: ring - 1,
            ssrc: None,
            next: 0,
            newest: 0,
            held: 0,
            state: State::Buffering { waited: 0 },
            probe: None,
            epoch: 0,
            stats: JitterStats::default(),
        }
    }

    /// The depths in use (after clamping).
    pub fn config(&self) -> JitterConfig {
        self.config
    }

    /// Running totals.
    pub fn stats(&self) -> &JitterStats {
        &self.stats
    }

    /// Increments at every restart: sequence numbers played are strictly
    /// increasing (mod 2^16) within one epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        usize::from(self.held)
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Takes one packet (its SSRC, sequence number and G.711 payload; bytes
    /// beyond [`MAX_PAYLOAD`] are ignored).
    pub fn push(&mut self, ssrc: u32, sequence: u16, payload: &[u8]) -> Push {
        if self.ssrc != Some(ssrc) {
            let first = self.ssrc.is_none();
            self.restart(ssrc, sequence);
            self.store(sequence, payload);
            return if first { Push::Accepted } else { Push::Reset };
        }
        let offset = sequence.wrapping_sub(self.next);
        if offset >= 0x8000 {
            // Behind the playout point.
            if offset.wrapping_neg() <= MAX_MISORDER {
                self.stats.late += 1;
                return Push::Late;
            }
            return self.far(ssrc, sequence, payload);
        }
        if offset > MAX_DROPOUT {
            return self.far(ssrc, sequence, payload);
        }
        self.probe = None;
        if offset >= self.config.max_depth {
            // Make room: everything older than the window goes.
            let new_next = sequence.wrapping_sub(self.config.max_depth - 1);
            while self.next != new_next {
                self.drop_next(false);
            }
        }
        if self.store(sequence, payload) {
            Push::Accepted
        } else {
            self.stats.duplicates += 1;
            Push::Duplicate
        }
    }

    /// The output of one 20 ms tick.
    pub fn pop(&mut self) -> Playout<'_> {
        if self.ssrc.is_none() {
            return Playout::Missing(Missing::Buffering);
        }
        if let State::Buffering { waited } = self.state {
            if self.held == 0 {
                return Playout::Missing(Missing::Buffering);
            }
            let waited = waited + 1;
            if self.span() >= self.config.target_depth || waited >= self.config.target_depth {
                self.state = State::Playing;
            } else {
                self.state = State::Buffering { waited };
                return Playout::Missing(Missing::Buffering);
            }
        }
        if self.held == 0 {
            self.stats.underruns += 1;
            self.state = State::Buffering { waited: 0 };
            return Playout::Missing(Missing::Underrun);
        }
        while self.span() > self.config.target_depth + TRIM_SLACK {
            self.drop_next(true);
        }
        let sequence = self.next;
        self.next = self.next.wrapping_add(1);
        let idx = usize::from(sequence) & self.mask;
        let slot = &mut self.slots[idx];
        if slot.filled && slot.sequence == sequence {
            slot.filled = false;
            self.held -= 1;
            self.stats.played += 1;
            let len = usize::from(slot.len);
            Playout::Frame {
                sequence,
                payload: &self.slots[idx].data[..len],
            }
        } else {
            self.stats.lost += 1;
            Playout::Missing(Missing::Lost)
        }
    }

    /// Frames from the playout point to the newest held, both included.
    fn span(&self) -> u16 {
        if self.held == 0 {
            0
        } else {
            self.newest.wrapping_sub(self.next).wrapping_add(1)
        }
    }

    fn restart(&mut self, ssrc: u32, sequence: u16) {
        if self.ssrc.is_some() {
            self.stats.resets += 1;
            self.epoch += 1;
        }
        for s in self.slots.iter_mut() {
            s.filled = false;
        }
        self.ssrc = Some(ssrc);
        self.next = sequence;
        self.newest = sequence;
        self.held = 0;
        self.state = State::Buffering { waited: 0 };
        self.probe = None;
    }

    /// A packet far from the window: a restart if its predecessor was too.
    fn far(&mut self, ssrc: u32, sequence: u16, payload: &[u8]) -> Push {
        if self.probe == Some(sequence) {
            self.restart(ssrc, sequence);
            self.store(sequence, payload);
            return Push::Reset;
        }
        self.probe = Some(sequence.wrapping_add(1));
        self.stats.out_of_range += 1;
        Push::OutOfRange
    }

    /// Stores a packet within the window; false if it is already held.
    fn store(&mut self, sequence: u16, payload: &[u8]) -> bool {
        let slot = &mut self.slots[usize::from(sequence) & self.mask];
        if slot.filled && slot.sequence == sequence {
            return false;
        }
        // The window is never wider than the ring, so the slot is free.
        let len = payload.len().min(MAX_PAYLOAD);
        slot.data[..len].copy_from_slice(&payload[..len]);
        slot.len = len as u16;
        slot.sequence = sequence;
        slot.filled = true;
        if self.held == 0 || sequence.wrapping_sub(self.newest) < 0x8000 {
            self.newest = sequence;
        }
        self.held += 1;
        true
    }

    /// Gives up the frame at the playout point (discarded if held, else
    /// counted lost when `count_lost`).
    fn drop_next(&mut self, count_lost: bool) {
        let slot = &mut self.slots[usize::from(self.next) & self.mask];
        if slot.filled && slot.sequence == self.next {
            slot.filled = false;
            self.held -= 1;
            self.stats.discarded += 1;
        } else if count_lost {
            self.stats.lost += 1;
        }
        self.next = self.next.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One packet (sequence, first payload byte) or one pop per step.
    enum Step {
        In(u32, u16),
        Out,
    }
    use Step::{In, Out};

    /// Runs `steps` through a buffer of `config`; returns what each pop gave
    /// (`Some(seq)` or `None`) and what each push gave.
    fn run(config: JitterConfig, steps: &[Step]) -> (Vec<Option<u16>>, Vec<Push>, JitterStats) {
        let mut jb = JitterBuffer::new(config);
        let mut out = Vec::new();
        let mut pushes = Vec::new();
        for step in steps {
            match *step {
                In(ssrc, seq) => pushes.push(jb.push(ssrc, seq, &[seq as u8; FRAME_SAMPLES])),
                Out => out.push(match jb.pop() {
                    Playout::Frame { sequence, payload } => {
                        assert_eq!(payload, &[sequence as u8; FRAME_SAMPLES][..]);
                        Some(sequence)
                    }
                    Playout::Missing(_) => None,
                }),
            }
        }
        (out, pushes, *jb.stats())
    }

    fn depth(target: u16) -> JitterConfig {
        JitterConfig {
            target_depth: target,
            max_depth: 10,
        }
    }

    #[test]
    fn waits_for_the_target_depth_then_plays_in_order() {
        let (out, _, stats) = run(
            depth(3),
            &[
                Out,
                In(1, 10),
                Out,
                In(1, 11),
                Out,
                In(1, 12),
                Out,
                Out,
                Out,
                Out,
            ],
        );
        assert_eq!(
            out,
            vec![None, None, None, Some(10), Some(11), Some(12), None]
        );
        assert_eq!(stats.played, 3);
        assert_eq!(stats.underruns, 1);
    }

    #[test]
    fn reorders() {
        let (out, _, stats) = run(
            depth(3),
            &[
                In(1, 5),
                In(1, 7),
                In(1, 6),
                Out,
                In(1, 9),
                In(1, 8),
                Out,
                Out,
                Out,
            ],
        );
        assert_eq!(out, vec![Some(5), Some(6), Some(7), Some(8)]);
        assert_eq!(stats.lost, 0);
    }

    #[test]
    fn loss_yields_missing_and_is_counted() {
        let (out, _, stats) = run(
            depth(2),
            &[In(1, 1), In(1, 2), Out, In(1, 4), Out, In(1, 5), Out, Out],
        );
        assert_eq!(out, vec![Some(1), Some(2), None, Some(4)]);
        assert_eq!(stats.lost, 1);
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let (out, pushes, stats) = run(
            depth(2),
            &[
                In(1, 1),
                In(1, 2),
                In(1, 2),
                Out,
                Out,
                In(1, 1),
                In(1, 3),
                Out,
            ],
        );
        assert_eq!(out, vec![Some(1), Some(2), Some(3)]);
        assert_eq!(
            pushes,
            vec![
                Push::Accepted,
                Push::Accepted,
                Push::Duplicate,
                Push::Late,
                Push::Accepted
            ]
        );
        assert_eq!((stats.duplicates, stats.late), (1, 1));
    }

    #[test]
    fn sequence_wraps_at_65535() {
        let (out, _, stats) = run(
            depth(2),
            &[
                In(1, 65_534),
                In(1, 0),
                In(1, 65_535),
                Out,
                In(1, 1),
                Out,
                Out,
                Out,
            ],
        );
        assert_eq!(out, vec![Some(65_534), Some(65_535), Some(0), Some(1)]);
        assert_eq!((stats.lost, stats.late), (0, 0));
    }

    #[test]
    fn a_new_ssrc_starts_again() {
        let (out, pushes, stats) = run(
            depth(2),
            &[In(1, 100), In(1, 101), Out, In(2, 7), In(2, 8), Out, Out],
        );
        assert_eq!(out, vec![Some(100), Some(7), Some(8)]);
        assert_eq!(pushes[2], Push::Reset);
        assert_eq!(stats.resets, 1);
    }

    #[test]
    fn a_sequence_jump_is_confirmed_by_two_packets() {
        let (out, pushes, _) = run(
            depth(1),
            &[
                In(1, 10),
                Out,
                In(1, 40_000),
                In(1, 40_001),
                Out,
                In(1, 11),
                Out,
            ],
        );
        assert_eq!(pushes[1], Push::OutOfRange);
        assert_eq!(pushes[2], Push::Reset);
        // After the reset the old stream's packet is far away again.
        assert_eq!(pushes[3], Push::OutOfRange);
        assert_eq!(out, vec![Some(10), Some(40_001), None]);
    }

    /// A pause (nothing sent, timestamps jump) then a burst: the buffer
    /// re-buffers, keeps at most `max_depth`, and trims to the target.
    #[test]
    fn burst_after_a_pause_is_bounded() {
        let mut steps = vec![In(1, 1), In(1, 2), Out, Out, Out, Out, Out];
        steps.extend((3..=20).map(|s| In(1, s)));
        steps.extend((0..6).map(|_| Out));
        let (out, _, stats) = run(depth(2), &steps);
        // 1, 2, underrun, then 10 held of 18 (3..=10 pushed out), trimmed to
        // target + 2 = 4 frames: 17, 18, 19, 20.
        assert_eq!(
            out,
            vec![
                Some(1),
                Some(2),
                None,
                None,
                None,
                Some(17),
                Some(18),
                Some(19),
                Some(20),
                None,
                None
            ]
        );
        assert_eq!(stats.discarded, 14);
        assert_eq!(stats.lost, 0);
    }

    #[test]
    fn payloads_beyond_the_maximum_are_cut() {
        let mut jb = JitterBuffer::new(depth(1));
        assert_eq!(jb.push(9, 1, &[1u8; 1000]), Push::Accepted);
        assert_eq!(jb.push(9, 2, &[2u8; 80]), Push::Accepted);
        assert!(
            matches!(jb.pop(), Playout::Frame { sequence: 1, payload } if payload.len() == MAX_PAYLOAD)
        );
        assert!(matches!(jb.pop(), Playout::Frame { sequence: 2, payload } if payload.len() == 80));
        assert!(jb.is_empty());
    }

    /// Random reordering, loss, duplication and SSRC changes (seeded): the
    /// played sequence numbers rise strictly within an epoch, each frame is
    /// the one pushed for it, and the bound holds.
    #[test]
    fn random_network_keeps_the_invariants() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let (mut ssrc, mut sent) = (1u32, 65_000u16);
        let mut last: Option<(u64, u16)> = None;
        let mut played = 0;
        for _ in 0..20_000 {
            match rnd() % 10 {
                0..=4 => {
                    // Mostly in order, sometimes a few back or ahead.
                    let jitter = (rnd() % 7) as u16;
                    let seq = sent.wrapping_add(jitter).wrapping_sub(3);
                    sent = sent.wrapping_add(1);
                    jb.push(ssrc, seq, &seq.to_be_bytes().repeat(80));
                    if rnd() % 50 == 0 {
                        jb.push(ssrc, seq, &seq.to_be_bytes().repeat(80));
                    }
                    if rnd() % 2000 == 0 {
                        ssrc += 1;
                        sent = rnd() as u16;
                    }
                }
                _ => {
                    let epoch = jb.epoch();
                    if let Playout::Frame { sequence, payload } = jb.pop() {
                        assert_eq!(payload[..2], sequence.to_be_bytes());
                        if let Some((e, prev)) = last
                            && e == epoch
                        {
                            let step = sequence.wrapping_sub(prev);
                            assert!(step != 0 && step < 0x8000, "{prev} then {sequence}");
                        }
                        last = Some((epoch, sequence));
                        played += 1;
                    }
                }
            }
            assert!(jb.len() <= usize::from(jb.config().max_depth));
        }
        assert!(played > 3_000, "{played} played, {:?}", jb.stats());
    }
}
