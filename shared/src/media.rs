//! What a call detail record says about a call's media: the health of each
//! direction (energy, voice activity, one-way audio, long silence), the RTP
//! leg's counters and the AudioSocket session, when there was one.
//!
//! Pure data, as the CDR carries it through the outbox to the control plane;
//! hubd's media modules measure it. Like every outbox payload it only grows.

use serde::{Deserialize, Serialize};

/// One direction of a bridged call's audio, named from the hub's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Audio from the SIP leg (or AudioSocket server), played toward the device.
    SipToDevice,
    /// Audio from the device, sent toward the SIP leg (or AudioSocket server).
    DeviceToSip,
}

/// Figures of one direction over the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LegStats {
    /// Audio observed, in milliseconds (20 per frame).
    pub duration_ms: u64,
    /// Voice activity (including hangover), in milliseconds.
    pub speech_ms: u64,
    /// Level of active speech: the RMS over every frame above the silence
    /// threshold, in dBFS; `None` if there was none.
    pub speech_mean_dbfs: Option<f32>,
    /// The loudest frame's RMS, in dBFS; `None` if every frame was digital
    /// silence.
    pub peak_dbfs: Option<f32>,
    /// The RMS over the whole direction, in dBFS; `None` if it was all
    /// digital silence.
    pub mean_dbfs: Option<f32>,
}

/// One-way audio: one direction carried speech, the other stayed silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneWay {
    /// The direction that stayed silent.
    pub silent: Direction,
    /// Speech heard in the other direction, in milliseconds.
    pub speech_ms: u64,
}

/// The call's media in one word, worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No frame was observed (the call was never bridged).
    NoMedia,
    /// One direction had speech, the other none.
    OneWayAudio,
    /// Both directions were silent at once for at least the long-silence
    /// threshold.
    LongSilence,
    /// Neither direction ever had speech, over less than the long-silence
    /// threshold.
    NoSpeech,
    /// Speech both ways, no long silence.
    Healthy,
}

impl Verdict {
    /// The verdict's word, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoMedia => "no_media",
            Self::OneWayAudio => "one_way_audio",
            Self::LongSilence => "long_silence",
            Self::NoSpeech => "no_speech",
            Self::Healthy => "healthy",
        }
    }
}

/// The media health of one call, as written into the CDR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaHealth {
    /// The SIP leg's audio toward the device.
    pub sip_to_device: LegStats,
    /// The device's audio toward SIP.
    pub device_to_sip: LegStats,
    /// Set when the audio was one-way.
    pub one_way_audio: Option<OneWay>,
    /// The longest stretch with both directions silent, in milliseconds.
    pub longest_silence_ms: u32,
    /// Where that stretch began, in milliseconds from the first frame.
    pub longest_silence_at_ms: u64,
    /// The summary.
    pub verdict: Verdict,
}

/// The RTP leg's counters over the call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RtpCounters {
    /// RTP packets accepted (audio and telephone-events).
    pub packets_in: u64,
    /// RTP packets sent (audio and telephone-events).
    pub packets_out: u64,
    /// Frames due that never arrived.
    pub lost: u64,
    /// Packets that arrived after their turn to play.
    pub late: u64,
    /// Packets from an unexpected source, dropped.
    pub dropped_wrong_source: u64,
    /// Packets of a payload type not negotiated, dropped.
    pub dropped_wrong_payload_type: u64,
    /// Datagrams that are not valid RTP, dropped.
    pub dropped_malformed: u64,
    /// DTMF digits received (RFC 4733).
    pub dtmf_in: u64,
    /// DTMF digits sent (RFC 4733).
    pub dtmf_out: u64,
}

/// A call's AudioSocket session (the AI call processor's leg).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioSocketSession {
    /// The server, as configured (`host:port`).
    pub server: String,
    /// The UUID sent in the first frame, hyphenated.
    pub uuid: String,
    /// How the session ended (`server_hangup`, `call_ended`, `error: …`).
    pub end: String,
    /// Audio frames received from the server.
    pub frames_in: u64,
    /// Audio frames sent to the server.
    pub frames_out: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_words_are_their_serialized_form() {
        for verdict in [
            Verdict::NoMedia,
            Verdict::OneWayAudio,
            Verdict::LongSilence,
            Verdict::NoSpeech,
            Verdict::Healthy,
        ] {
            let json = serde_json::to_string(&verdict).expect("serializes");
            assert_eq!(json, format!("\"{}\"", verdict.as_str()));
        }
    }
}
