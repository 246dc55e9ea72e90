//! The answer to each command line: basic commands (`ATZ`, `ATE0`, `ATD`,
//! `ATA`, `ATH`, `ATI`) and extended ones (`+…`, `^…`), per make.
//!
//! Owns the command table: which make knows which command, each reply's
//! exact text, and errors (`ERROR` / `+CME ERROR` as `AT+CMEE` says) for
//! unknown commands and bad parameters. One command per line (no `;`
//! concatenation). Never emits while not speaking (the model's output
//! helpers enforce it).

use std::time::Instant;

use super::ModemModel;
use crate::modem::codec;
use crate::modem::profile::Vendor;

/// The form of an extended command.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// `AT+X`.
    Exec,
    /// `AT+X?`.
    Read,
    /// `AT+X=?`.
    Test,
    /// `AT+X=<params>`, parameters unquoted.
    Set(Vec<String>),
}

/// Extended commands either make answers to `=?` with a bare `OK`.
const COMMON: &[&str] = &[
    "+CGMI", "+GMI", "+CGMM", "+GMM", "+CGMR", "+GMR", "+CGSN", "+GSN", "+CIMI", "+CCID", "+CMEE",
    "+CPIN", "+COPS", "+CREG", "+CNUM", "+CSCA", "+CSSN", "+CMGF", "+CSCS", "+CPMS", "+CNMI",
    "+CSQ", "+CLIP", "+CLCC", "+CHUP", "+CHLD", "+CFUN", "+CMGS", "+CMGR", "+CMGL", "+CMGD",
    "+CUSD", "+GCAP",
];
/// Huawei-only extended commands.
const HUAWEI: &[&str] = &["^ICCID", "^CVOICE", "^DDSETEX", "^DTMF", "^CURC"];
/// Quectel-only extended commands.
const QUECTEL: &[&str] = &["+QCCID", "+QPCMV", "+QHUP", "+VTS"];

/// Splits `+NAME[?|=?|=params]` into its upper-case name and form.
fn split_extended(body: &str) -> Option<(String, Form)> {
    let first = body.chars().next()?;
    if first != '+' && first != '^' {
        return None;
    }
    let end = body.find(['=', '?']).unwrap_or(body.len());
    let name = body.get(..end)?.trim().to_ascii_uppercase();
    let rest = body.get(end..)?;
    let form = if rest.is_empty() {
        Form::Exec
    } else if rest == "?" {
        Form::Read
    } else if rest == "=?" {
        Form::Test
    } else if let Some(params) = rest.strip_prefix('=') {
        Form::Set(
            codec::split_params(params)
                .into_iter()
                .map(|p| p.text)
                .collect(),
        )
    } else {
        return None;
    };
    Some((name, form))
}

fn num(params: &[String], i: usize) -> Option<u8> {
    params.get(i).and_then(|p| p.parse().ok())
}

impl ModemModel {
    fn knows(&self, name: &str) -> bool {
        COMMON.contains(&name)
            || match self.config.profile.vendor() {
                Vendor::Huawei => HUAWEI.contains(&name),
                Vendor::Quectel => QUECTEL.contains(&name),
            }
    }

    fn is_huawei(&self) -> bool {
        self.config.profile.is_huawei()
    }

    /// Answers the command line `AT<body>`.
    pub(super) fn dispatch(&mut self, body: &str, now: Instant) {
        let upper = body.to_ascii_uppercase();
        if upper.starts_with('D') {
            return self.dial(body.get(1..).unwrap_or(""), now);
        }
        match upper.as_str() {
            "" | "V1" | "Q0" | "&W" | "&W0" | "X4" => return self.ok(),
            "A" => return self.answer(now),
            "H" | "H0" => {
                if self.is_huawei() {
                    // Huawei's ATH does not end voice calls (use AT+CHUP).
                    return self.ok();
                }
                return self.hang_up(now);
            }
            "Z" | "Z0" | "&F" | "&F0" => return self.soft_reset(now),
            "E0" | "E" => {
                self.settings.echo = false;
                return self.ok();
            }
            "E1" => {
                self.settings.echo = true;
                return self.ok();
            }
            "I" | "I0" => return self.ati(),
            _ => {}
        }
        let Some((name, form)) = split_extended(body) else {
            return self.unknown();
        };
        if !self.knows(&name) {
            return self.unknown();
        }
        if form == Form::Test {
            return match name.as_str() {
                "+CMEE" => self.info_ok(vec!["+CMEE: (0-2)".to_owned()]),
                "+CHLD" => self.info_ok(vec!["+CHLD: (0,1,1x,2,2x,3,4)".to_owned()]),
                _ => self.ok(),
            };
        }
        self.extended(&name, form, now);
    }

    fn extended(&mut self, name: &str, form: Form, now: Instant) {
        let profile = self.config.profile;
        let id = self.config.identity.clone();
        let sim = self.config.sim_present;
        match (name, form) {
            ("+CGMI" | "+GMI", Form::Exec) => {
                self.info_ok(vec![profile.manufacturer().to_owned()]);
            }
            ("+CGMM" | "+GMM", Form::Exec) => self.info_ok(vec![profile.model().to_owned()]),
            ("+CGMR" | "+GMR", Form::Exec) => {
                self.info_ok(vec![profile.revision().to_owned()]);
            }
            ("+CGSN" | "+GSN", Form::Exec) => self.info_ok(vec![id.imei]),
            ("+GCAP", Form::Exec) => self.info_ok(vec!["+GCAP: +CGSM,+DS,+ES".to_owned()]),
            ("+CIMI", Form::Exec) => {
                if sim {
                    self.info_ok(vec![id.imsi]);
                } else {
                    self.cme(10, "SIM not inserted");
                }
            }
            ("^ICCID", Form::Read)
            | ("+QCCID", Form::Exec)
            | ("+CCID", Form::Exec | Form::Read) => {
                if !sim {
                    return self.cme(10, "SIM not inserted");
                }
                let line = match name {
                    "^ICCID" => format!("^ICCID: {}", id.iccid_swapped()),
                    "+QCCID" => format!("+QCCID: {}", id.iccid),
                    _ => format!("+CCID: \"{}\"", id.iccid),
                };
                self.info_ok(vec![line]);
            }
            ("+CMEE", Form::Set(p)) => match num(&p, 0) {
                Some(n @ 0..=2) => {
                    self.settings.cmee = n;
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+CMEE", Form::Read) => {
                let n = self.settings.cmee;
                self.info_ok(vec![format!("+CMEE: {n}")]);
            }
            ("+CPIN", Form::Read) => {
                if sim {
                    self.info_ok(vec!["+CPIN: READY".to_owned()]);
                } else {
                    self.cme(10, "SIM not inserted");
                }
            }
            ("+CFUN", Form::Set(p)) => match (num(&p, 0), num(&p, 1)) {
                (Some(1), Some(1)) => {
                    self.ok();
                    self.reboot(now);
                }
                (Some(f @ (0 | 1 | 4)), None | Some(0)) => {
                    if f != 1 && self.call.is_some() {
                        self.drop_call(super::EndCause::Reset, now);
                    }
                    self.settings.cfun = f;
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+CFUN", Form::Read) => {
                let f = self.settings.cfun;
                self.info_ok(vec![format!("+CFUN: {f}")]);
            }
            ("+COPS", Form::Set(p)) => match (num(&p, 0), num(&p, 1)) {
                (Some(0 | 3), format) => {
                    if let Some(f @ 0..=2) = format {
                        self.settings.cops_format = f;
                    }
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+COPS", Form::Read) => {
                let line = if self.reachable() {
                    let op = &self.config.operator;
                    let (format, name) = match self.settings.cops_format {
                        1 => (1, op.short_name.clone()),
                        2 => (2, op.numeric.clone()),
                        _ => (0, op.long_name.clone()),
                    };
                    format!(
                        "+COPS: 0,{format},\"{name}\",{}",
                        profile.access_technology()
                    )
                } else {
                    "+COPS: 0".to_owned()
                };
                self.info_ok(vec![line]);
            }
            ("+CREG", Form::Set(p)) => match num(&p, 0) {
                Some(n @ 0..=2) => {
                    self.settings.creg_n = n;
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+CREG", Form::Read) => {
                let n = self.settings.creg_n;
                let stat = if self.reachable() { 1 } else { 0 };
                let line = if n == 2 && stat == 1 {
                    format!("+CREG: 2,1,\"{:04X}\",\"{:04X}\"", id.lac, id.cell_id)
                } else {
                    format!("+CREG: {n},{stat}")
                };
                self.info_ok(vec![line]);
            }
            ("+CNUM", Form::Exec) => {
                let info = id
                    .own_number
                    .iter()
                    .filter(|_| sim)
                    .map(|n| {
                        let toa = if n.starts_with('+') { 145 } else { 129 };
                        format!("+CNUM: \"\",\"{n}\",{toa}")
                    })
                    .collect();
                self.info_ok(info);
            }
            ("+CSCA", Form::Read) => {
                // Strings follow the TE character set: UCS-2 hex after
                // AT+CSCS="UCS2" (a classic chan_dongle surprise).
                let sca = if self.settings.cscs == "UCS2" {
                    codec::ucs2_hex(&id.smsc)
                } else {
                    id.smsc.clone()
                };
                self.info_ok(vec![format!("+CSCA: \"{sca}\",145")]);
            }
            ("+CSCA", Form::Set(_)) | ("+CSSN", Form::Set(_)) | ("^CURC", Form::Set(_)) => {
                self.ok();
            }
            ("+CMGF", Form::Set(p)) => match num(&p, 0) {
                Some(m @ 0..=1) => {
                    self.settings.cmgf = m;
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+CMGF", Form::Read) => {
                let m = self.settings.cmgf;
                self.info_ok(vec![format!("+CMGF: {m}")]);
            }
            ("+CSCS", Form::Set(p)) => {
                let cs = p
                    .first()
                    .map(|s| s.to_ascii_uppercase())
                    .unwrap_or_default();
                if ["UCS2", "GSM", "IRA"].contains(&cs.as_str()) {
                    self.settings.cscs = cs;
                    self.ok();
                } else {
                    self.bad_params();
                }
            }
            ("+CSCS", Form::Read) => {
                let cs = self.settings.cscs.clone();
                self.info_ok(vec![format!("+CSCS: \"{cs}\"")]);
            }
            ("+CPMS", Form::Set(_)) => self.cpms(false),
            ("+CPMS", Form::Read) => self.cpms(true),
            ("+CNMI", Form::Set(p)) => {
                if let Some(mt @ 0..=3) = num(&p, 1) {
                    self.settings.cnmi_mt = mt;
                }
                self.ok();
            }
            ("+CNMI", Form::Read) => {
                let mt = self.settings.cnmi_mt;
                self.info_ok(vec![format!("+CNMI: 2,{mt},0,0,0")]);
            }
            ("+CSQ", Form::Exec) => {
                let rssi = if self.reachable() { self.rssi } else { 99 };
                self.info_ok(vec![format!("+CSQ: {rssi},99")]);
            }
            ("+CLIP", Form::Set(p)) => {
                self.settings.clip = num(&p, 0) == Some(1);
                self.ok();
            }
            ("+CLIP", Form::Read) => {
                let n = u8::from(self.settings.clip);
                self.info_ok(vec![format!("+CLIP: {n},1")]);
            }
            ("^CVOICE", Form::Read) => self.info_ok(vec!["^CVOICE:0,8000,16,20".to_owned()]),
            ("^CVOICE", Form::Set(p)) => match num(&p, 0) {
                Some(0) => self.ok(),
                _ => self.bad_params(),
            },
            ("^DDSETEX", Form::Set(p)) => match num(&p, 0) {
                Some(2) => {
                    self.ddsetex = true;
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("^DTMF", Form::Set(p)) => {
                let index = p.first().cloned();
                let digit = p.get(1).cloned().unwrap_or_default();
                self.dtmf(index.as_deref(), &digit);
            }
            ("+VTS", Form::Set(p)) => {
                let digit = p.first().cloned().unwrap_or_default();
                self.dtmf(None, &digit);
            }
            ("+QPCMV", Form::Set(p)) => match (num(&p, 0), num(&p, 1)) {
                (Some(0), _) => {
                    self.settings.qpcmv = None;
                    self.ok();
                }
                (Some(1), Some(port @ 0..=2)) => {
                    self.settings.qpcmv = Some(port);
                    self.ok();
                }
                _ => self.bad_params(),
            },
            ("+QPCMV", Form::Read) => {
                let line = match self.settings.qpcmv {
                    Some(port) => format!("+QPCMV: 1,{port}"),
                    None => "+QPCMV: 0".to_owned(),
                };
                self.info_ok(vec![line]);
            }
            ("+CLCC", Form::Exec) => self.clcc(),
            ("+CHUP", Form::Exec) => self.hang_up(now),
            ("+CHLD", Form::Set(p)) => {
                let arg = p.first().cloned().unwrap_or_default();
                self.chld(&arg, now);
            }
            ("+QHUP", Form::Set(p)) => self.qhup(&p, now),
            ("+CMGS", Form::Set(p)) => self.cmgs(&p),
            ("+CMGR", Form::Set(p)) => self.cmgr(&p),
            ("+CMGL", Form::Set(p)) => self.cmgl(&p),
            ("+CMGL", Form::Exec) => self.cmgl(&[]),
            ("+CMGD", Form::Set(p)) => self.cmgd(&p),
            ("+CUSD", Form::Set(p)) => self.cusd(&p, now),
            ("+CUSD", Form::Read) => self.info_ok(vec!["+CUSD: 1".to_owned()]),
            _ => self.bad_params(),
        }
    }

    /// `ATI`.
    fn ati(&mut self) {
        let p = self.config.profile;
        let info = match p.vendor() {
            Vendor::Huawei => vec![
                format!("Manufacturer: {}", p.manufacturer()),
                format!("Model: {}", p.model()),
                format!("Revision: {}", p.revision()),
                format!("IMEI: {}", self.config.identity.imei),
                "+GCAP: +CGSM,+DS,+ES".to_owned(),
            ],
            Vendor::Quectel => vec![
                p.manufacturer().to_owned(),
                p.model().to_owned(),
                format!("Revision: {}", p.revision()),
            ],
        };
        self.info_ok(info);
    }

    /// `ATZ`: the call ends, settings go back to power-on values, `OK`.
    fn soft_reset(&mut self, now: Instant) {
        self.end_call(super::EndCause::Reset, now);
        self.settings = super::Settings::power_on(self.config.profile);
        self.ok();
    }
}
