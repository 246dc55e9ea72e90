//! Process-wide counters and histograms, rendered as Prometheus text by the
//! local API. Plain atomics: recording never blocks, allocates or fails.
//! Per-slot figures (state, restarts) live with the slots and are rendered
//! from there; this module owns only what no single slot owns.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use vss_shared::SlotState;

/// Counters and histograms shared by the store and the supervisors.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Accepted slot transitions, by destination state (index: `SlotState::ALL`).
    pub transitions: [AtomicU64; 8],
    /// Events the slot state machine rejected.
    pub invalid_transitions: AtomicU64,
    /// Outbox entries not yet acknowledged by the control plane.
    pub outbox_depth: AtomicU64,
    /// Outbox entries appended since start.
    pub outbox_appended: AtomicU64,
    /// Writes the store writer committed.
    pub store_writes: AtomicU64,
    /// Writes that failed (their callers got the error).
    pub store_write_errors: AtomicU64,
    /// Latency of a group commit, from the batch's first write to its commit.
    pub store_commit: Histogram,
    /// Voice frames and their pacing (AT modems).
    pub voice: std::sync::Arc<crate::device::at_modem::voice::VoiceMetrics>,
    /// Recovery ladder steps, faults and rebinds (AT modems).
    pub modem_recovery: crate::device::at_modem::driver::RecoveryMetrics,
    /// REGISTERs, auth failures, timeouts and each slot's registration.
    pub sip: std::sync::Arc<crate::sip::endpoint::SipMetrics>,
    /// What the start-up repair of the recordings directory found.
    pub recordings_repair: RecordingsRepairMetrics,
    /// Bridged calls and their media.
    pub calls: CallMetrics,
}

/// What a slot's call was bridged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    /// An INVITE for the slot, dialled on the device (F-09).
    SipIncoming,
    /// A call ringing on the device, sent to the agents' queue (F-03).
    SipOutgoing,
    /// Streamed to an AudioSocket server.
    AudioSocket,
}

impl BridgeKind {
    const ALL: [BridgeKind; 3] = [Self::SipIncoming, Self::SipOutgoing, Self::AudioSocket];

    fn as_str(self) -> &'static str {
        match self {
            Self::SipIncoming => "sip_incoming",
            Self::SipOutgoing => "sip_outgoing",
            Self::AudioSocket => "audiosocket",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Bridged calls, by kind, and what their media did: what an operator
/// alerts on (one-way audio, spoofed RTP) before agents complain.
#[derive(Debug, Default)]
pub struct CallMetrics {
    started: [AtomicU64; 3],
    answered: [AtomicU64; 3],
    active: AtomicU64,
    verdicts: [AtomicU64; 5],
    rtp_dropped: [AtomicU64; 3],
}

const VERDICTS: [vss_shared::media::Verdict; 5] = [
    vss_shared::media::Verdict::NoMedia,
    vss_shared::media::Verdict::OneWayAudio,
    vss_shared::media::Verdict::LongSilence,
    vss_shared::media::Verdict::NoSpeech,
    vss_shared::media::Verdict::Healthy,
];

impl CallMetrics {
    /// A bridge of `kind` started.
    pub fn started(&self, kind: BridgeKind) {
        self.started[kind.index()].fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// A bridge of `kind` ended with `outcome` (`None`: it failed).
    pub fn finished(&self, kind: BridgeKind, outcome: Option<&crate::sip::bridge::CallOutcome>) {
        let _ = self
            .active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        let Some(outcome) = outcome else {
            return;
        };
        if outcome.answered {
            self.answered[kind.index()].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(health) = &outcome.health
            && let Some(i) = VERDICTS.iter().position(|v| *v == health.verdict)
        {
            self.verdicts[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(rtp) = &outcome.rtp {
            for (counter, n) in self.rtp_dropped.iter().zip([
                rtp.dropped_wrong_source,
                rtp.dropped_wrong_payload_type,
                rtp.dropped_malformed,
            ]) {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    fn render(&self, out: &mut String) {
        for (name, help, values) in [
            (
                "hubd_bridged_calls_total",
                "Calls bridged, by what the slot's call was bridged to.",
                &self.started,
            ),
            (
                "hubd_bridged_calls_answered_total",
                "Bridged calls answered on both sides, by kind.",
                &self.answered,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for kind in BridgeKind::ALL {
                let _ = writeln!(
                    out,
                    "{name}{{kind=\"{}\"}} {}",
                    kind.as_str(),
                    values[kind.index()].load(Ordering::Relaxed)
                );
            }
        }
        gauge(
            out,
            "hubd_bridged_calls_active",
            "Bridged calls in progress.",
            self.active.load(Ordering::Relaxed),
        );
        let name = "hubd_call_media_verdicts_total";
        let _ = writeln!(
            out,
            "# HELP {name} Bridged calls by media health verdict (one_way_audio, long_silence …).\n# TYPE {name} counter"
        );
        for (verdict, count) in VERDICTS.iter().zip(&self.verdicts) {
            let _ = writeln!(
                out,
                "{name}{{verdict=\"{}\"}} {}",
                verdict.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        let name = "hubd_rtp_packets_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} RTP packets of ended calls dropped, by reason.\n# TYPE {name} counter"
        );
        for (reason, count) in ["wrong_source", "wrong_payload_type", "malformed"]
            .iter()
            .zip(&self.rtp_dropped)
        {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{reason}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
    }
}

/// Outcomes of [`crate::media::recording::repair_dir`] at start, by kind.
#[derive(Debug, Default)]
pub struct RecordingsRepairMetrics {
    /// Finished recordings left untouched.
    pub complete: AtomicU64,
    /// Interrupted recordings cut after their last valid page.
    pub repaired: AtomicU64,
    /// Unrecoverable files renamed `*.broken`.
    pub broken: AtomicU64,
    /// Files or directories that could not be read or written.
    pub failed: AtomicU64,
}

impl RecordingsRepairMetrics {
    /// Counts one outcome.
    pub fn count(&self, outcome: &crate::media::recording::RepairOutcome) {
        use crate::media::recording::RepairOutcome;
        let counter = match outcome {
            RepairOutcome::Complete { .. } => &self.complete,
            RepairOutcome::Repaired { .. } => &self.repaired,
            RepairOutcome::Broken { .. } => &self.broken,
            RepairOutcome::Failed { .. } => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "hubd_recordings_repaired_total";
        let _ = writeln!(
            out,
            "# HELP {name} Recordings checked by the start-up repair, by outcome.\n# TYPE {name} counter"
        );
        for (outcome, count) in [
            ("complete", &self.complete),
            ("repaired", &self.repaired),
            ("broken", &self.broken),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                out,
                "{name}{{outcome=\"{outcome}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
    }
}

impl Metrics {
    /// Counts an accepted transition into `to`.
    pub fn transition(&self, to: SlotState) {
        let index = SlotState::ALL.iter().position(|s| *s == to).unwrap_or(0);
        self.transitions[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Appends this registry's series to `out` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP hubd_slot_transitions_total Slot state machine transitions accepted, by destination state.\n# TYPE hubd_slot_transitions_total counter"
        );
        for (state, count) in SlotState::ALL.iter().zip(&self.transitions) {
            let _ = writeln!(
                out,
                "hubd_slot_transitions_total{{to=\"{}\"}} {}",
                state.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        counter(
            out,
            "hubd_slot_invalid_transitions_total",
            "Events rejected by the slot state machine.",
            &self.invalid_transitions,
        );
        gauge(
            out,
            "hubd_outbox_depth",
            "Outbox entries not yet acknowledged by the control plane.",
            self.outbox_depth.load(Ordering::Relaxed),
        );
        counter(
            out,
            "hubd_outbox_appended_total",
            "Outbox entries appended since start.",
            &self.outbox_appended,
        );
        counter(
            out,
            "hubd_store_writes_total",
            "Writes committed by the store writer.",
            &self.store_writes,
        );
        counter(
            out,
            "hubd_store_write_errors_total",
            "Writes that failed and were reported to their callers.",
            &self.store_write_errors,
        );
        self.store_commit.render(
            out,
            "hubd_store_commit_seconds",
            "Group commit latency: first write of a batch queued to its commit.",
        );
        self.voice.render(out);
        self.modem_recovery.render(out);
        self.sip.render(out);
        self.recordings_repair.render(out);
        self.calls.render(out);
        let pool = crate::media::recording::RecorderPool::shared_if_started();
        gauge(
            out,
            "hubd_recordings_active",
            "Call recordings in progress on the recorder threads.",
            pool.as_ref().map_or(0, |pool| pool.active()),
        );
        let name = "hubd_recording_ticks_dropped_total";
        let _ = writeln!(
            out,
            "# HELP {name} 20 ms recording ticks dropped because a recorder thread fell behind (recorded as lost packets).\n# TYPE {name} counter\n{name} {}",
            pool.as_ref().map_or(0, |pool| pool.dropped_ticks())
        );
    }
}

/// Appends a Prometheus gauge.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

fn counter(out: &mut String, name: &str, help: &str, value: &AtomicU64) {
    let value = value.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

const BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; 12],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, bucket) in BUCKETS_SECONDS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, bucket) in BUCKETS_SECONDS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}
