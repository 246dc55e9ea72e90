//! SMS and USSD of the model: `AT+CMGS=<len>` with its `> ` prompt, the PDU
//! and Ctrl-Z (or ESC); the SIM store (`+CMTI`, `AT+CMGR`, `AT+CMGL`,
//! `AT+CMGD`, `AT+CPMS`); `AT+CUSD` requests and their `+CUSD` answers.
//!
//! Owns PDU-mode only (`AT+CMGF=0`); text mode answers `+CMS ERROR: 303`.
//! Never decodes a submitted PDU beyond checking its length: the test gets
//! the hex and decodes it with whatever it trusts.

use std::time::Instant;

use super::{InjectError, ModemModel, SmsInput, TimerEvent};
use crate::modem::codec;
use crate::modem::config::{UssdAlphabet, UssdAnswer};
use crate::modem::profile::Vendor;

/// The longest PDU body accepted after the prompt, in bytes of hex.
const MAX_PDU_HEX: usize = 2 * 200;

/// An SMS the driver submitted with `AT+CMGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentSms {
    /// The `<length>` of `AT+CMGS=<length>` (TPDU octets).
    pub tpdu_len: usize,
    /// The PDU as the driver wrote it (hex, SMSC prefix included).
    pub pdu: String,
    /// The message reference answered in `+CMGS: <mr>`.
    pub mr: u8,
}

/// An SMS on the SIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSms {
    /// 0 received unread, 1 received read.
    pub status: u8,
    /// TPDU octets.
    pub tpdu_len: usize,
    /// The PDU as hex, SMSC prefix included.
    pub pdu: String,
}

/// A USSD request the driver sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdRequest {
    /// The string as sent (packed hex, UCS-2 hex or plain).
    pub raw: String,
    /// The data coding scheme given (15 when omitted).
    pub dcs: u8,
    /// The request decoded as the make would (`*100#`), when it decodes.
    pub decoded: Option<String>,
}

impl ModemModel {
    /// `AT+CMGS=<len>`: the prompt, then PDU input.
    pub(super) fn cmgs(&mut self, params: &[String]) {
        if self.settings.cmgf != 0 {
            self.cms(303);
            return;
        }
        let Some(len) = params
            .first()
            .and_then(|p| p.parse::<usize>().ok())
            .filter(|l| (7..=176).contains(l))
        else {
            self.cms(304);
            return;
        };
        self.sms_input = Some(SmsInput {
            tpdu_len: len,
            body: Vec::new(),
        });
        self.emit_raw(b"\r\n> ");
    }

    /// One byte after the prompt.
    pub(super) fn sms_byte(&mut self, b: u8) {
        if self.settings.echo {
            self.emit_raw(&[b]);
        }
        match b {
            0x1A => {
                if let Some(input) = self.sms_input.take() {
                    self.submit(input);
                }
            }
            0x1B => {
                self.sms_input = None;
                self.ok();
            }
            _ => {
                if let Some(input) = self.sms_input.as_mut()
                    && input.body.len() < MAX_PDU_HEX + 16
                {
                    input.body.push(b);
                }
            }
        }
    }

    fn submit(&mut self, input: SmsInput) {
        let hex: String = String::from_utf8_lossy(&input.body)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if codec::tpdu_len(&hex) != Some(input.tpdu_len) {
            self.cms(304);
            return;
        }
        let mr = self.next_mr;
        self.next_mr = self.next_mr.wrapping_add(1);
        self.log.sent_sms.push(SentSms {
            tpdu_len: input.tpdu_len,
            pdu: hex.to_ascii_uppercase(),
            mr,
        });
        self.info_ok(vec![format!("+CMGS: {mr}")]);
    }

    /// An SMS from the network (see [`ModemModel::incoming_sms`]).
    pub(super) fn deliver_sms(&mut self, pdu_hex: &str) -> Result<Option<u32>, InjectError> {
        if !self.reachable() {
            return Err(InjectError::Unreachable);
        }
        let pdu = pdu_hex.trim().to_ascii_uppercase();
        let tpdu_len = codec::tpdu_len(&pdu).ok_or_else(|| {
            InjectError::BadPdu("not hex, or shorter than its SMSC prefix says".to_owned())
        })?;
        if self.settings.cnmi_mt == 2 {
            self.emit_line(&format!("+CMT: ,{tpdu_len}\r\n{pdu}"));
            return Ok(None);
        }
        let index = (1..=self.config.sms_capacity)
            .find(|i| !self.store.contains_key(i))
            .ok_or(InjectError::StorageFull)?;
        self.store.insert(
            index,
            StoredSms {
                status: 0,
                tpdu_len,
                pdu,
            },
        );
        if self.settings.cnmi_mt == 1 {
            self.emit_line(&format!("+CMTI: \"SM\",{index}"));
        }
        Ok(Some(index))
    }

    /// `AT+CMGR=<index>`.
    pub(super) fn cmgr(&mut self, params: &[String]) {
        if self.settings.cmgf != 0 {
            self.cms(303);
            return;
        }
        let Some(index) = params.first().and_then(|p| p.parse::<u32>().ok()) else {
            self.cms(321);
            return;
        };
        let Some(sms) = self.store.get_mut(&index) else {
            self.cms(321);
            return;
        };
        let block = format!("+CMGR: {},,{}\r\n{}", sms.status, sms.tpdu_len, sms.pdu);
        sms.status = 1;
        self.info_ok(vec![block]);
    }

    /// `AT+CMGL=<stat>` (4: all).
    pub(super) fn cmgl(&mut self, params: &[String]) {
        if self.settings.cmgf != 0 {
            self.cms(303);
            return;
        }
        let wanted = params
            .first()
            .and_then(|p| p.parse::<u8>().ok())
            .unwrap_or(4);
        let mut info = Vec::new();
        for (index, sms) in self.store.iter_mut() {
            if wanted == 4 || wanted == sms.status {
                info.push(format!(
                    "+CMGL: {index},{},,{}\r\n{}",
                    sms.status, sms.tpdu_len, sms.pdu
                ));
                sms.status = 1;
            }
        }
        self.info_ok(info);
    }

    /// `AT+CMGD=<index>[,<delflag>]`.
    pub(super) fn cmgd(&mut self, params: &[String]) {
        let index = params.first().and_then(|p| p.parse::<u32>().ok());
        let flag = params
            .get(1)
            .and_then(|p| p.parse::<u8>().ok())
            .unwrap_or(0);
        match (index, flag) {
            (_, 4) => self.store.clear(),
            (_, 1..=3) => self.store.retain(|_, s| s.status == 0),
            (Some(i), 0) => {
                self.store.remove(&i);
            }
            _ => {
                self.cms(321);
                return;
            }
        }
        self.ok();
    }

    /// `AT+CPMS=…` / `AT+CPMS?`.
    pub(super) fn cpms(&mut self, read: bool) {
        let used = self.store.len();
        let cap = self.config.sms_capacity;
        let line = if read {
            format!("+CPMS: \"SM\",{used},{cap},\"SM\",{used},{cap},\"SM\",{used},{cap}")
        } else {
            format!("+CPMS: {used},{cap},{used},{cap},{used},{cap}")
        };
        self.info_ok(vec![line]);
    }

    /// `AT+CUSD=<n>[,<str>[,<dcs>]]`.
    pub(super) fn cusd(&mut self, params: &[String], now: Instant) {
        let n = params.first().map(String::as_str).unwrap_or("0");
        let Some(raw) = params.get(1).filter(|s| !s.is_empty()) else {
            if matches!(n, "0" | "1" | "2") {
                self.ok();
            } else {
                self.bad_params();
            }
            return;
        };
        if n != "1" && n != "0" {
            self.bad_params();
            return;
        }
        if !self.reachable() {
            self.cme(30, "no network service");
            return;
        }
        let dcs = params
            .get(2)
            .and_then(|d| d.parse::<u8>().ok())
            .unwrap_or(15);
        let decoded = match self.config.profile.vendor() {
            Vendor::Huawei => codec::gsm7_unpack_hex(raw),
            Vendor::Quectel if self.settings.cscs == "UCS2" => codec::ucs2_from_hex(raw),
            Vendor::Quectel => Some(raw.clone()),
        };
        self.log.ussd_requests.push(UssdRequest {
            raw: raw.clone(),
            dcs,
            decoded: decoded.clone(),
        });
        self.ok();
        let answer = decoded
            .and_then(|d| {
                self.config
                    .ussd_answers
                    .iter()
                    .find(|(req, _)| *req == d)
                    .map(|(_, a)| a.clone())
            })
            .unwrap_or_else(|| self.config.ussd_answer.clone());
        let line = match answer {
            UssdAnswer::Silence => return,
            UssdAnswer::RawLine(line) => line,
            UssdAnswer::Text { text, alphabet } => {
                let ucs2_charset = self.settings.cscs == "UCS2";
                let (body, dcs) = match (self.config.profile.vendor(), alphabet) {
                    (_, UssdAlphabet::Ucs2) => (codec::ucs2_hex(&text), 72),
                    (Vendor::Huawei, UssdAlphabet::Gsm7) => (codec::gsm7_pack_hex(&text), 15),
                    (Vendor::Quectel, UssdAlphabet::Gsm7) if ucs2_charset => {
                        (codec::ucs2_hex(&text), 15)
                    }
                    (Vendor::Quectel, UssdAlphabet::Gsm7) => (text, 15),
                };
                format!("+CUSD: 0,\"{body}\",{dcs}")
            }
        };
        let at = now + self.config.timings.ussd;
        self.schedule(at, TimerEvent::Ussd(line));
    }
}
