//! Voice pacing with 30 AUTO slots in calls at once: the release `hubd`
//! drives 30 emulated modems (`vss_tests::modem`, Huawei E1550 on ptys), each
//! in a call whose audio flows both ways, and this bench reads what hubd
//! measured about its own writes: how late each 20 ms frame went out against
//! its absolute schedule (`hubd_voice_frame_lateness_seconds`), and how much
//! CPU hubd used (`/proc/<pid>/stat`) over the window.
//!
//! Targets (issue 5): p99 lateness under 2 ms, hubd under 5% of one core.
//! The p99 is read from hubd's histogram, so it is printed as "≤ bucket
//! bound"; the max is the largest lateness since hubd started (call set-up
//! included). A measurement, not a test: exits 0 whether or not the targets
//! are met, 1 when it cannot measure.
//!
//! ```text
//! cargo build --release -p hubd
//! cargo bench -p vss-tests --bench modem_audio               # 30 s window
//! cargo bench -p vss-tests --bench modem_audio -- --quick    # 5 s window (CI)
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use vss_tests::modem::{Callee, EmulatedModem, Identity, ModemConfig, Profile};
use vss_tests::{HubProcess, get, get_json, post_json, wait_for};

const MODEMS: usize = 30;
const TARGET_P99_S: f64 = 0.002;
const TARGET_CPU: f64 = 0.05;
const TICKS_PER_S: f64 = 100.0;

fn main() {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let window = if quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(30)
    };
    if let Err(e) = run(window) {
        eprintln!("modem_audio: cannot measure: {e}");
        std::process::exit(1);
    }
}

fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The lateness histogram: (upper bound in s, cumulative count), and frames to modems.
#[derive(Debug, Clone, Default)]
struct Scrape {
    buckets: Vec<(f64, f64)>,
    count: f64,
    max_s: f64,
    to_device: f64,
    from_device: f64,
}

fn scrape(api: SocketAddr) -> Result<Scrape, String> {
    let (status, body) = get(api, "/metrics");
    if status != 200 {
        return Err(format!("/metrics answered {status}"));
    }
    let mut s = Scrape::default();
    for line in body.lines() {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap_or(0.0);
        if let Some(le) = series
            .strip_prefix("hubd_voice_frame_lateness_seconds_bucket{le=\"")
            .and_then(|r| r.strip_suffix("\"}"))
        {
            if le == "+Inf" {
                s.count = value;
            } else if let Ok(bound) = le.parse() {
                s.buckets.push((bound, value));
            }
        } else if series == "hubd_voice_frame_lateness_max_seconds" {
            s.max_s = value;
        } else if series == "hubd_voice_frames_total{direction=\"to_device\"}" {
            s.to_device = value;
        } else if series == "hubd_voice_frames_total{direction=\"from_device\"}" {
            s.from_device = value;
        }
    }
    Ok(s)
}

/// The smallest bucket bound under which `q` of the window's frames fall.
fn quantile(before: &Scrape, after: &Scrape, q: f64) -> Option<f64> {
    let total = after.count - before.count;
    if total <= 0.0 {
        return None;
    }
    after
        .buckets
        .iter()
        .zip(&before.buckets)
        .find(|((_, a), (_, b))| (a - b) / total >= q)
        .map(|((bound, _), _)| *bound)
}

fn run(window: Duration) -> Result<(), String> {
    let dir = tempfile::Builder::new()
        .prefix("modem-audio-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let tty = dir.path().join("tty");
    std::fs::create_dir_all(&tty).map_err(|e| e.to_string())?;
    let mut modems = Vec::new();
    for i in 0..MODEMS {
        let index = u32::try_from(i).map_err(|e| e.to_string())?;
        let mut config = ModemConfig::new(
            Profile::HuaweiE1550,
            Identity::from_seed(5, index, Profile::HuaweiE1550),
        );
        config.callee = Callee::Answers {
            after: Duration::from_millis(200),
            hangs_up_after: None,
        };
        let modem = EmulatedModem::start(config, Some(&tty)).map_err(|e| e.to_string())?;
        modems.push(modem);
    }
    let mut toml = format!(
        "[hub]\nid = \"hub-audio\"\nname = \"Audio bench\"\ndata_dir = \"{}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n\n[log]\nlevel = \"warn\"\n\n[store]\nsynchronous = \"normal\"\n\n[modems]\nscan = [\"{}/by-imei/*-at\"]\npoll_interval_ms = 30000\n",
        dir.path().join("data").display(),
        tty.display()
    );
    for (i, modem) in modems.iter().enumerate() {
        toml.push_str(&format!(
            "\n[[slots]]\nid = {}\nkind = \"auto\"\ndriver = {{ type = \"at_modem\", imei = \"{}\" }}\n",
            i + 1,
            modem.imei()
        ));
    }
    let config = dir.path().join("hubd.toml");
    std::fs::write(&config, toml).map_err(|e| e.to_string())?;
    let (hub, api) = HubProcess::run_config(&config);
    wait_for("every slot READY", Duration::from_secs(90), || {
        let slots = get_json(api, "/api/slots");
        let slots = slots.as_array()?;
        (slots.len() == MODEMS && slots.iter().all(|s| s["fsm_state"] == "READY")).then_some(())
    });
    for id in 1..=MODEMS {
        let (status, body) = post_json(
            api,
            &format!("/api/slots/{id}/dial"),
            &json!({ "number": format!("+7916{id:07}") }),
        );
        if status != 200 {
            return Err(format!("dial on slot {id}: {status} {body}"));
        }
    }
    wait_for("every slot in a call", Duration::from_secs(30), || {
        let slots = get_json(api, "/api/slots");
        let slots = slots.as_array()?;
        slots
            .iter()
            .all(|s| s["fsm_state"] == "ACTIVE_CALL")
            .then_some(())
    });
    // Let every voice task reach its steady state before measuring.
    std::thread::sleep(Duration::from_secs(1));
    let pid = hub.pid();
    let before = scrape(api)?;
    let ticks_before = cpu_ticks(pid).ok_or("cannot read hubd's CPU time")?;
    let started = Instant::now();
    std::thread::sleep(window);
    let ticks_after = cpu_ticks(pid).ok_or("cannot read hubd's CPU time")?;
    let elapsed = started.elapsed().as_secs_f64();
    let after = scrape(api)?;

    let frames = after.count - before.count;
    let expected = elapsed * 50.0 * MODEMS as f64;
    // A bucket bound is an upper bound; the largest lateness seen is a tighter one.
    let p99 = quantile(&before, &after, 0.99).map(|b| b.min(after.max_s));
    let p50 = quantile(&before, &after, 0.50).map(|b| b.min(after.max_s));
    let cpu = (ticks_after - ticks_before) as f64 / TICKS_PER_S / elapsed;
    let from = after.from_device - before.from_device;
    let received: u64 = modems.iter().map(|m| m.stats().voice_bytes_in).sum();
    println!(
        "modem_audio: {MODEMS} modems in calls, window {elapsed:.1} s: {frames:.0} frames written to modems ({:.2} of 50/s each), {from:.0} read from them; emulators received {:.0} frames in total",
        frames / expected,
        received as f64 / 320.0
    );
    match p99 {
        Some(p99) => println!(
            "modem_audio: frame lateness p50 <= {:.2} ms, p99 <= {:.2} ms (target < {:.1} ms: ratio {:.2}, {}), max since start {:.2} ms",
            p50.unwrap_or(f64::NAN) * 1e3,
            p99 * 1e3,
            TARGET_P99_S * 1e3,
            p99 / TARGET_P99_S,
            if p99 < TARGET_P99_S { "met" } else { "NOT met" },
            after.max_s * 1e3
        ),
        None => println!("modem_audio: p99 lateness beyond the largest bucket (100 ms): NOT met"),
    }
    println!(
        "modem_audio: hubd CPU {:.1}% of one core (target < {:.0}%: ratio {:.2}, {})",
        cpu * 100.0,
        TARGET_CPU * 100.0,
        cpu / TARGET_CPU,
        if cpu < TARGET_CPU { "met" } else { "NOT met" }
    );
    for id in 1..=MODEMS {
        let _ = post_json(api, &format!("/api/slots/{id}/hangup"), &json!({}));
    }
    let status = hub.terminate();
    if !status.success() {
        return Err(format!("hubd exited with {status} after SIGTERM"));
    }
    Ok(())
}
