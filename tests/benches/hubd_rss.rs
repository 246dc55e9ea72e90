//! hubd resident memory with 32 simulated slots, measured from outside the
//! process: the release `hubd` binary runs `hubd demo --slots 32`, and once
//! every slot is READY this bench samples `VmRSS` / `VmHWM` from
//! `/proc/<pid>/status` for a few seconds while it exercises the local API.
//!
//! Target: at most 30 MB (MB = 10^6 bytes; the kernel reports KiB). The
//! reference is the target itself: the figure is printed beside it as a ratio.
//! This is a measurement, not a test: it exits 0 whether or not the target is
//! met and says "met" / "NOT met". It exits 1 when it cannot measure (no
//! release binary, hubd does not come up, hubd does not exit 0 on SIGTERM).
//!
//! ```text
//! cargo build --release -p hubd
//! cargo bench -p vss-tests --bench hubd_rss               # settle 5 s
//! cargo bench -p vss-tests --bench hubd_rss -- --quick    # settle 1 s (CI smoke)
//! HUBD_BIN=/path/to/hubd cargo bench -p vss-tests --bench hubd_rss
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vss_tests::{HubProcess, get, get_json, wait_for};

const SLOTS: usize = 32;
/// Target resident set, bytes.
const TARGET_BYTES: f64 = 30e6;
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What `/proc/<pid>/status` says about memory, in KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
    shmem: u64,
    threads: u64,
}

impl Memory {
    fn read(pid: i32) -> Result<Memory, String> {
        let path = format!("/proc/{pid}/status");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let mut memory = Memory::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let number = || {
                value
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match key {
                "VmRSS" => memory.rss = number(),
                "VmHWM" => memory.hwm = number(),
                "RssAnon" => memory.anon = number(),
                "RssFile" => memory.file = number(),
                "RssShmem" => memory.shmem = number(),
                "Threads" => memory.threads = number(),
                _ => {}
            }
        }
        if memory.rss == 0 {
            return Err(format!("{path} has no VmRSS"));
        }
        Ok(memory)
    }
}

fn main() {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    match run(if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    }) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("hubd_rss: cannot measure: {e}");
            std::process::exit(1);
        }
    }
}

/// The release hubd: `$HUBD_BIN`, else `hubd` in this bench's profile
/// directory (`target/release`, the parent of `deps/`).
fn release_hubd() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("HUBD_BIN") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("HUBD_BIN={} is not a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this bench: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("hubd"))
        .ok_or("this bench does not live in target/<profile>/deps")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} does not exist: run `cargo build --release -p hubd` first (or set HUBD_BIN)",
            bin.display()
        ))
    }
}

fn run(settle: Duration) -> Result<(), String> {
    let bin = release_hubd()?;
    // The harness starts `hubd_bin()`, which is `$HUBD_BIN` or the same file.
    println!("hubd_rss: {} demo --slots {SLOTS}", bin.display());
    let dir = tempfile::Builder::new()
        .prefix("hubd-rss-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary data dir: {e}"))?;
    let started = Instant::now();
    let slots = SLOTS.to_string();
    let (hub, addr) = HubProcess::demo(dir.path(), &["--slots", &slots]);
    wait_for("32 slots READY", READY_TIMEOUT, || all_ready(addr));
    let pid = hub.pid();
    println!(
        "hubd_rss: pid {pid}, {SLOTS} slots READY after {} ms; sampling every {} ms for {} s",
        started.elapsed().as_millis(),
        SAMPLE_EVERY.as_millis(),
        settle.as_secs()
    );

    let mut samples = Vec::new();
    let deadline = Instant::now() + settle;
    let mut tick = 0u32;
    while Instant::now() < deadline {
        // Exercise the API now and then, as an operator's dashboard would.
        if tick.is_multiple_of(5) {
            let (slots_status, _) = get(addr, "/api/slots");
            let (metrics_status, _) = get(addr, "/metrics");
            if slots_status != 200 || metrics_status != 200 {
                return Err(format!(
                    "the API answered /api/slots {slots_status}, /metrics {metrics_status}"
                ));
            }
        }
        samples.push(Memory::read(pid)?);
        tick += 1;
        std::thread::sleep(SAMPLE_EVERY);
    }
    let last = Memory::read(pid)?;
    samples.push(last);

    let status = hub.terminate();
    if !status.success() {
        return Err(format!(
            "hubd exited with {status} after SIGTERM, expected 0"
        ));
    }

    let mut rss: Vec<u64> = samples.iter().map(|m| m.rss).collect();
    rss.sort_unstable();
    let max_rss = rss[rss.len() - 1];
    let hwm = samples.iter().map(|m| m.hwm).max().unwrap_or(0);
    println!(
        "hubd_rss: {} samples: VmRSS min {} / median {} / max {} MB; last: RssAnon {} MB, RssFile {} MB, RssShmem {} MB, {} threads",
        rss.len(),
        mb(rss[0]),
        mb(rss[rss.len() / 2]),
        mb(max_rss),
        mb(last.anon),
        mb(last.file),
        mb(last.shmem),
        last.threads
    );
    let ratio = kib_to_bytes(max_rss) / TARGET_BYTES;
    println!(
        "hubd_rss: {SLOTS} slots: VmRSS {} MB (peak VmHWM {} MB); target <= {:.0} MB: {}; ratio {ratio:.2} of target",
        mb(max_rss),
        mb(hwm),
        TARGET_BYTES / 1e6,
        if ratio <= 1.0 { "met" } else { "NOT met" }
    );
    println!("hubd_rss: hubd exited 0 after SIGTERM");
    Ok(())
}

fn all_ready(addr: SocketAddr) -> Option<()> {
    let slots = get_json(addr, "/api/slots");
    let slots = slots.as_array()?;
    (slots.len() == SLOTS && slots.iter().all(|s| s["fsm_state"] == "READY")).then_some(())
}

fn kib_to_bytes(kib: u64) -> f64 {
    kib as f64 * 1024.0
}

/// KiB as decimal megabytes, one decimal.
fn mb(kib: u64) -> String {
    format!("{:.1}", kib_to_bytes(kib) / 1e6)
}
