//! Checks that need more than one field, or more than a type, to judge.

use std::collections::BTreeMap;

use vss_shared::{NumberClass, NumberingPlan, SipNumber, SlotId, SlotKind};

use super::{Config, ConfigError, DriverConfig};

/// Validates `config`; `origin` names it in errors (usually the file path).
pub fn validate(config: &Config, origin: &str) -> Result<(), ConfigError> {
    let invalid = |field: String, value: String, why: String| ConfigError::Invalid {
        origin: origin.to_owned(),
        field,
        value,
        why,
    };
    if config.hub.name.trim().is_empty() {
        return Err(invalid(
            "hub.name".into(),
            format!("{:?}", config.hub.name),
            "must not be empty".into(),
        ));
    }
    if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&config.log.level) {
        return Err(invalid(
            "log.level".into(),
            format!("{:?}", config.log.level),
            format!("not a log filter ({e}); use e.g. \"info\" or \"info,hubd::store=debug\""),
        ));
    }
    let store = &config.store;
    if !(1..=65_536).contains(&store.batch_max) {
        return Err(invalid(
            "store.batch_max".into(),
            store.batch_max.to_string(),
            "must be between 1 and 65536".into(),
        ));
    }
    let sup = &config.supervisor;
    for (field, value) in [
        (
            "supervisor.restart_backoff_initial_ms",
            sup.restart_backoff_initial_ms,
        ),
        (
            "supervisor.restart_backoff_max_ms",
            sup.restart_backoff_max_ms,
        ),
        (
            "supervisor.health_check_interval_ms",
            sup.health_check_interval_ms,
        ),
        ("supervisor.device_timeout_ms", sup.device_timeout_ms),
    ] {
        if value == 0 {
            return Err(invalid(
                field.into(),
                "0".into(),
                "must be greater than 0".into(),
            ));
        }
    }
    if sup.restart_backoff_initial_ms > sup.restart_backoff_max_ms {
        return Err(invalid(
            "supervisor.restart_backoff_initial_ms".into(),
            sup.restart_backoff_initial_ms.to_string(),
            format!(
                "must not exceed supervisor.restart_backoff_max_ms ({})",
                sup.restart_backoff_max_ms
            ),
        ));
    }
    let mut seen: BTreeMap<SlotId, usize> = BTreeMap::new();
    let mut imeis: BTreeMap<String, usize> = BTreeMap::new();
    for (i, slot) in config.slots.iter().enumerate() {
        if let Some(first) = seen.insert(slot.id, i) {
            return Err(invalid(
                format!("slots[{i}].id"),
                slot.id.to_string(),
                format!("duplicate slot id, already used by slots[{first}]"),
            ));
        }
        match &slot.driver {
            DriverConfig::Sim(sim) => {
                if !(0.0..=1.0).contains(&sim.failure_rate) {
                    return Err(invalid(
                        format!("slots[{i}].driver.failure_rate"),
                        sim.failure_rate.to_string(),
                        "must be between 0 and 1".into(),
                    ));
                }
            }
            DriverConfig::AtModem(modem) => {
                if slot.kind != SlotKind::Auto {
                    return Err(invalid(
                        format!("slots[{i}].driver.type"),
                        "\"at_modem\"".into(),
                        format!(
                            "an at_modem driver needs kind = \"auto\", not {:?}",
                            slot.kind.to_string()
                        ),
                    ));
                }
                if let Err(e) = crate::device::at_modem::replies::Imei::parse(&modem.imei) {
                    return Err(invalid(
                        format!("slots[{i}].driver.imei"),
                        format!("{:?}", modem.imei),
                        e.to_string(),
                    ));
                }
                if let Some(first) = imeis.insert(modem.imei.clone(), i) {
                    return Err(invalid(
                        format!("slots[{i}].driver.imei"),
                        format!("{:?}", modem.imei),
                        format!("IMEI already bound to slots[{first}]"),
                    ));
                }
                if let Some(iccid) = &modem.iccid
                    && (iccid.len() < 18
                        || iccid.len() > 22
                        || !iccid.bytes().all(|b| b.is_ascii_digit()))
                {
                    return Err(invalid(
                        format!("slots[{i}].driver.iccid"),
                        format!("{iccid:?}"),
                        "an ICCID is 18 to 22 digits".into(),
                    ));
                }
                if let Some(power) = &modem.power {
                    if power.location.is_empty()
                        || !power
                            .location
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b))
                    {
                        return Err(invalid(
                            format!("slots[{i}].driver.power.location"),
                            format!("{:?}", power.location),
                            "a uhubctl location looks like 1-1.4 (digits, '-', '.')".into(),
                        ));
                    }
                    if !(1..=255).contains(&power.port) {
                        return Err(invalid(
                            format!("slots[{i}].driver.power.port"),
                            power.port.to_string(),
                            "must be between 1 and 255".into(),
                        ));
                    }
                    if let Some(host) = &power.ssh
                        && (host.is_empty()
                            || host.starts_with('-')
                            || host.chars().any(char::is_whitespace))
                    {
                        return Err(invalid(
                            format!("slots[{i}].driver.power.ssh"),
                            format!("{host:?}"),
                            "must be host or user@host".into(),
                        ));
                    }
                    if let Some(file) = &power.ssh_config {
                        let field = format!("slots[{i}].driver.power.ssh_config");
                        if power.ssh.is_none() {
                            return Err(invalid(
                                field,
                                format!("{:?}", file.display().to_string()),
                                "only used with ssh: set ssh = \"host\" too, or remove it".into(),
                            ));
                        }
                        if !file.is_absolute() {
                            return Err(invalid(
                                field,
                                format!("{:?}", file.display().to_string()),
                                "must be an absolute path, e.g. /etc/vss/hubd-ssh_config".into(),
                            ));
                        }
                    }
                    if power.command.trim().is_empty() || power.command.contains('\0') {
                        return Err(invalid(
                            format!("slots[{i}].driver.power.command"),
                            format!("{:?}", power.command),
                            "must name the uhubctl program, e.g. uhubctl or /usr/sbin/uhubctl"
                                .into(),
                        ));
                    }
                }
            }
        }
    }
    let modems = &config.modems;
    for (field, value) in [
        ("modems.probe_timeout_ms", modems.probe_timeout_ms),
        ("modems.poll_interval_ms", modems.poll_interval_ms),
        ("modems.baud_rate", u64::from(modems.baud_rate)),
        ("modems.rebind_timeout_ms", modems.rebind_timeout_ms),
    ] {
        if value == 0 {
            return Err(invalid(
                field.into(),
                "0".into(),
                "must be greater than 0".into(),
            ));
        }
    }
    if let Some((j, pattern)) = modems
        .scan
        .iter()
        .enumerate()
        .find(|(_, p)| !p.starts_with('/'))
    {
        return Err(invalid(
            format!("modems.scan[{j}]"),
            format!("{pattern:?}"),
            "must be an absolute path pattern, e.g. /dev/ttyUSB*".into(),
        ));
    }
    if let Some(sip) = &config.sip {
        validate_sip(sip, &invalid)?;
    }
    validate_media(&config.media, &invalid)?;
    for (i, slot) in config.slots.iter().enumerate() {
        if let Some(password) = config.sip_passwords.get(&slot.id)
            && (password.is_empty() || password.chars().any(char::is_control))
        {
            return Err(invalid(
                format!("slots[{i}].sip_password"),
                "(hidden)".into(),
                "must not be empty or contain control characters".into(),
            ));
        }
        if let Some(server) = config.audiosocket_servers.get(&slot.id)
            && let Err(why) = audiosocket_address(server)
        {
            return Err(invalid(
                format!("slots[{i}].audiosocket"),
                format!("{server:?}"),
                format!(
                    "slot {}: {why}; write host:port, e.g. \"127.0.0.1:9092\" or \"ai.example.com:9092\"",
                    slot.id
                ),
            ));
        }
    }
    slot_numbers(config).map_err(|(i, number, e)| {
        invalid(format!("slots[{i}].sip_number"), number, e.to_string())
    })?;
    Ok(())
}

/// Checks an AudioSocket server address, `host:port` (an IPv6 host in
/// brackets); the host is resolved only when a call connects.
pub fn audiosocket_address(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not an address (empty, or with spaces)");
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("no port");
    };
    if !matches!(port.parse::<u16>(), Ok(1..)) {
        return Err("the port must be 1-65535");
    }
    let host = match host.strip_prefix('[') {
        Some(inner) => match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => return Ok(()),
            _ => return Err("not an IPv6 address in brackets"),
        },
        None => host,
    };
    if host.is_empty() {
        return Err("no host");
    }
    if host.contains([':', '/', '[', ']', '@']) {
        return Err("not a host name or IP address (an IPv6 address goes in brackets)");
    }
    Ok(())
}

/// Checks `[sip]`.
fn validate_sip(
    sip: &super::SipSection,
    invalid: &impl Fn(String, String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if sip.registrars.is_empty() {
        return Err(invalid(
            "sip.registrars".into(),
            "[]".into(),
            "must list at least one registrar, e.g. [\"192.0.2.10:5060\"]".into(),
        ));
    }
    if let Some((j, addr)) = sip
        .registrars
        .iter()
        .enumerate()
        .find(|(_, a)| a.port() == 0 || a.ip().is_unspecified())
    {
        return Err(invalid(
            format!("sip.registrars[{j}]"),
            format!("\"{addr}\""),
            "must be a reachable IP and a port other than 0".into(),
        ));
    }
    if let Some(domain) = &sip.domain
        && (domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c)))
    {
        return Err(invalid(
            "sip.domain".into(),
            format!("{domain:?}"),
            "must be a host name or IP, e.g. pbx.example.com".into(),
        ));
    }
    if let Some(addr) = sip.advertised_address
        && (addr.port() == 0 || addr.ip().is_unspecified())
    {
        return Err(invalid(
            "sip.advertised_address".into(),
            format!("\"{addr}\""),
            "must be an IP and port the registrar can reach".into(),
        ));
    }
    if !(10..=86_400).contains(&sip.expires_s) {
        return Err(invalid(
            "sip.expires_s".into(),
            sip.expires_s.to_string(),
            "must be between 10 and 86400 seconds".into(),
        ));
    }
    if !(10..=5_000).contains(&sip.t1_ms) {
        return Err(invalid(
            "sip.t1_ms".into(),
            sip.t1_ms.to_string(),
            "must be between 10 and 5000 ms (RFC 3261 default 500)".into(),
        ));
    }
    if !(1..=100).contains(&sip.max_auth_failures) {
        return Err(invalid(
            "sip.max_auth_failures".into(),
            sip.max_auth_failures.to_string(),
            "must be between 1 and 100".into(),
        ));
    }
    if sip.keepalive_s != 0 && !(5..=3_600).contains(&sip.keepalive_s) {
        return Err(invalid(
            "sip.keepalive_s".into(),
            sip.keepalive_s.to_string(),
            "must be 0 (never) or 5 to 3600 seconds (NATs forget idle UDP mappings after 30 s to a few minutes)".into(),
        ));
    }
    if let Some(destination) = &sip.incoming_destination
        && !valid_sip_uri(destination)
    {
        return Err(invalid(
            "sip.incoming_destination".into(),
            format!("{destination:?}"),
            "must be a SIP URI with a user and a host, e.g. \"sip:queue@pbx.example.com\"".into(),
        ));
    }
    Ok(())
}

/// `sip:user@host` (or `sips:`), with no spaces, quotes or angle brackets.
fn valid_sip_uri(uri: &str) -> bool {
    let Some(rest) = uri
        .strip_prefix("sip:")
        .or_else(|| uri.strip_prefix("sips:"))
    else {
        return false;
    };
    let Some((user, host)) = rest.split_once('@') else {
        return false;
    };
    !user.is_empty()
        && !host.is_empty()
        && !uri
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"<>".contains(c))
}

/// Checks `[media]`.
fn validate_media(
    media: &super::MediaSection,
    invalid: &impl Fn(String, String, String) -> ConfigError,
) -> Result<(), ConfigError> {
    if let Err(why) = media.port_range() {
        return Err(invalid(
            "media.rtp_ports".into(),
            format!("{:?}", media.rtp_ports),
            why,
        ));
    }
    if !(20..=180).contains(&media.jitter_ms) || !media.jitter_ms.is_multiple_of(20) {
        return Err(invalid(
            "media.jitter_ms".into(),
            media.jitter_ms.to_string(),
            "must be a multiple of 20 (one RTP packet) between 20 and 180".into(),
        ));
    }
    if media.rtp_timeout_s != 0 && !(5..=3_600).contains(&media.rtp_timeout_s) {
        return Err(invalid(
            "media.rtp_timeout_s".into(),
            media.rtp_timeout_s.to_string(),
            "must be 0 (never) or 5 to 3600 seconds: shorter ends calls over a moment of packet loss".into(),
        ));
    }
    if media.rtp_hold_timeout_s != 0 && !(5..=86_400).contains(&media.rtp_hold_timeout_s) {
        return Err(invalid(
            "media.rtp_hold_timeout_s".into(),
            media.rtp_hold_timeout_s.to_string(),
            "must be 0 (never) or 5 to 86400 seconds".into(),
        ));
    }
    if let Some(dir) = &media.recordings_dir
        && dir.as_os_str().is_empty()
    {
        return Err(invalid(
            "media.recordings_dir".into(),
            "\"\"".into(),
            "must be a directory path, e.g. /var/lib/hubd/recordings, or be left out".into(),
        ));
    }
    if !(6..=510).contains(&media.recording_bitrate_kbps) {
        return Err(invalid(
            "media.recording_bitrate_kbps".into(),
            media.recording_bitrate_kbps.to_string(),
            "must be between 6 and 510 kbit/s (Opus's range)".into(),
        ));
    }
    if media.recording_complexity > 10 {
        return Err(invalid(
            "media.recording_complexity".into(),
            media.recording_complexity.to_string(),
            "must be between 0 (cheapest) and 10".into(),
        ));
    }
    let health = &media.health;
    let threshold = health.silence_threshold_dbfs;
    if !threshold.is_finite() || !(-90.0..=-10.0).contains(&threshold) {
        return Err(invalid(
            "media.health.silence_threshold_dbfs".into(),
            threshold.to_string(),
            "must be between -90 and -10 dBFS (speech sits around -35 to -15)".into(),
        ));
    }
    for (field, value, range) in [
        ("hangover_ms", health.hangover_ms, 0..=5_000),
        (
            "one_way_min_speech_ms",
            health.one_way_min_speech_ms,
            20..=600_000,
        ),
        (
            "one_way_max_other_ms",
            health.one_way_max_other_ms,
            0..=600_000,
        ),
        ("long_silence_ms", health.long_silence_ms, 20..=3_600_000),
    ] {
        if !range.contains(&value) {
            return Err(invalid(
                format!("media.health.{field}"),
                value.to_string(),
                format!("must be between {} and {} ms", range.start(), range.end()),
            ));
        }
    }
    if health.one_way_max_other_ms >= health.one_way_min_speech_ms {
        return Err(invalid(
            "media.health.one_way_max_other_ms".into(),
            health.one_way_max_other_ms.to_string(),
            format!(
                "must be below media.health.one_way_min_speech_ms ({}), or every call is one-way",
                health.one_way_min_speech_ms
            ),
        ));
    }
    Ok(())
}

/// The SIP number of every slot, in config order: explicit numbers first, then
/// the lowest free number of each remaining slot's range, in slot order.
/// On error: the slot's index, the number as written, and why.
pub(crate) fn slot_numbers(
    config: &Config,
) -> Result<Vec<SipNumber>, (usize, String, vss_shared::NumberError)> {
    let mut plan = NumberingPlan::new();
    for (i, slot) in config.slots.iter().enumerate() {
        if let Some(number) = slot.sip_number {
            plan.assign(number, NumberClass::of(slot.kind), format!("slots[{i}]"))
                .map_err(|e| (i, format!("\"{number}\""), e))?;
        }
    }
    config
        .slots
        .iter()
        .enumerate()
        .map(|(i, slot)| match slot.sip_number {
            Some(number) => Ok(number),
            None => plan
                .allocate(NumberClass::of(slot.kind), format!("slots[{i}]"))
                .map_err(|e| (i, "(none)".to_owned(), e)),
        })
        .collect()
}
