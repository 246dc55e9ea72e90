//! The real `hubd` with one AUTO slot (slot 1) on an emulated GSM modem: the
//! bed of the call tests (`sip_calls`, `audiosocket_calls`). The modem's AT
//! and voice ports are linked as `port0-at`/`port0-voice` in a directory the
//! hub scans; the hub's log goes to a file, printed when a test fails.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::modem::{EmulatedModem, ModemConfig};
use crate::{HubProcess, get_json, open_store, wait_for};

/// A running hub whose slot 1 is on [`ModemHub::modem`].
pub struct ModemHub {
    /// The slot's modem.
    pub modem: EmulatedModem,
    /// The hub's local API.
    pub api: SocketAddr,
    hub: Option<HubProcess>,
    dir: TempDir,
}

impl ModemHub {
    /// Starts `modem` and a hub `hub_id` with the test timings, extra TOML
    /// `sections` (`[sip]`, `[media]` …) and extra keys of slot 1
    /// (`slot_keys`, one `key = value` per line); waits until slot 1 is
    /// READY.
    pub fn start(modem: ModemConfig, hub_id: &str, sections: &str, slot_keys: &str) -> ModemHub {
        let dir = tempfile::tempdir().expect("temp dir");
        let tty = dir.path().join("tty");
        std::fs::create_dir_all(&tty).expect("tty dir");
        let modem = EmulatedModem::start(modem, None).expect("modem starts");
        let paths = modem.paths().expect("ports open");
        for (suffix, target) in [("at", &paths.at), ("voice", &paths.voice)] {
            std::os::unix::fs::symlink(target, tty.join(format!("port0-{suffix}")))
                .expect("symlink");
        }
        let toml = format!(
            r#"
[hub]
id = "{hub_id}"
name = "{hub_id}"
data_dir = "{data}"

[api]
listen = "127.0.0.1:0"

[supervisor]
health_check_interval_ms = 1000
device_timeout_ms = 15000
wrap_up_ms = 200

[modems]
scan = ["{tty}/*-at"]
probe_timeout_ms = 500
poll_interval_ms = 1000
soft_reset_interval_ms = 0
reboot_interval_ms = 0
power_cycle_interval_ms = 0

{sections}

[[slots]]
id = 1
kind = "auto"
driver = {{ type = "at_modem", imei = "{imei}" }}
{slot_keys}
"#,
            data = dir.path().join("data").display(),
            tty = tty.display(),
            imei = modem.imei(),
        );
        let config = dir.path().join("hubd.toml");
        std::fs::write(&config, toml).expect("config written");
        let log = std::fs::File::create(dir.path().join("hubd.log")).expect("log file");
        let config = config.to_str().expect("utf-8 path");
        let mut hub = HubProcess::spawn_with_stderr(&["run", "--config", config], log);
        let api = hub.api_addr();
        let bed = ModemHub {
            modem,
            api,
            hub: Some(hub),
            dir,
        };
        bed.wait_state(&["READY"], Duration::from_secs(60));
        bed
    }

    /// Waits until slot 1 is in one of `want`; its JSON.
    pub fn wait_state(&self, want: &[&str], timeout: Duration) -> Value {
        wait_for(&format!("slot 1 in {want:?}"), timeout, || {
            let slot = get_json(self.api, "/api/slots/1");
            want.contains(&slot["fsm_state"].as_str().unwrap_or_default())
                .then_some(slot)
        })
    }

    /// The CDRs in the hub's outbox, oldest first.
    pub fn cdrs(&self) -> Vec<Value> {
        let db = open_store(&self.data_dir());
        let mut stmt = db
            .prepare("SELECT payload FROM outbox WHERE kind = 'cdr' ORDER BY seq")
            .expect("outbox query");
        stmt.query_map([], |row| row.get::<_, String>(0))
            .expect("outbox rows")
            .map(|p| serde_json::from_str(&p.expect("payload")).expect("JSON payload"))
            .collect()
    }

    /// Waits for the first call's CDR.
    pub fn cdr(&self) -> Value {
        wait_for("the call's CDR", Duration::from_secs(20), || {
            self.cdrs().into_iter().next()
        })
    }

    /// Waits until the slot is READY again after a call; its CDR.
    pub fn wait_ready_after_call(&self) -> Value {
        let cdr = self.cdr();
        self.wait_state(&["READY"], Duration::from_secs(15));
        cdr
    }

    /// The hub's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The hub's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hubd.log")).unwrap_or_default()
    }

    /// How many times the modem received `command` (exactly).
    pub fn modem_got(&self, command: &str) -> usize {
        self.modem
            .log()
            .commands
            .iter()
            .filter(|c| c.as_str() == command)
            .count()
    }
}

impl Drop for ModemHub {
    fn drop(&mut self) {
        drop(self.hub.take());
        if std::thread::panicking() {
            eprintln!("--- hubd log ---\n{}", self.log());
        }
    }
}
