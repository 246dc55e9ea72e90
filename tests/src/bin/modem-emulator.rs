//! `modem-emulator`: runs a farm of emulated GSM modems on ptys until
//! Ctrl-C, printing where each one's AT and voice ports are, so a driver
//! (hubd) or a person (`socat - /dev/pts/N,raw,echo=0`, `screen /dev/pts/N`)
//! can talk to them.
//!
//! Owns argument parsing and the terminal output. Never emulates anything
//! itself (that is `vss_tests::modem`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use vss_tests::modem::{Callee, ModemFarm, Profile};

const USAGE: &str = "usage: modem-emulator [--count N] [--profile huawei|e173|quectel] \
[--link-dir DIR] [--seed N] [--answer-ms MS]

  --count N       modems to start (default 1)
  --profile P     huawei (= e1550), e173 or quectel (= ec25); default huawei
  --link-dir DIR  keep udev-like links DIR/by-imei/<IMEI>-at and -voice
  --seed N        identities (IMEI, ICCID…) derive from it (default 1)
  --answer-ms MS  dialled parties answer after MS ms of ringing (default 2000)

Prints one line per modem: modem <n> IMEI <imei> AT <path> voice <path>
(again, marked re-enumerated, when a modem comes back under new paths),
and runs until Ctrl-C.";

struct Args {
    count: u32,
    profile: Profile,
    link_dir: Option<PathBuf>,
    seed: u64,
    answer_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        count: 1,
        profile: Profile::HuaweiE1550,
        link_dir: None,
        seed: 1,
        answer_ms: 2_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |what: &str| -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} {value:?}: {what} expected"))
        };
        match flag.as_str() {
            "--count" => {
                args.count = u32::try_from(number("a number of modems")?)
                    .ok()
                    .filter(|n| (1..=64).contains(n))
                    .ok_or_else(|| format!("--count {value}: between 1 and 64"))?;
            }
            "--profile" => {
                args.profile = Profile::parse(&value).ok_or_else(|| {
                    format!("--profile {value:?}: one of huawei, e1550, e173, quectel, ec25")
                })?;
            }
            "--link-dir" => args.link_dir = Some(PathBuf::from(value)),
            "--seed" => args.seed = number("a number")?,
            "--answer-ms" => args.answer_ms = number("milliseconds")?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("modem-emulator: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let answer_after = Duration::from_millis(args.answer_ms);
    let farm = match ModemFarm::start_with(
        args.count,
        args.profile,
        args.seed,
        args.link_dir.as_deref(),
        |_, config| {
            config.callee = Callee::Answers {
                after: answer_after,
                hangs_up_after: None,
            };
        },
    ) {
        Ok(farm) => farm,
        Err(e) => {
            let where_ = args
                .link_dir
                .as_ref()
                .map(|d| format!(" (links under {})", d.display()))
                .unwrap_or_default();
            eprintln!(
                "modem-emulator: cannot start the modems{where_}: {e}; \
                 check that /dev/ptmx is usable and the link directory is writable"
            );
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("modem-emulator: cannot start the signal handler: {e}");
            return ExitCode::from(1);
        }
    };
    let mut generations = vec![0u64; farm.len()];
    let stopped = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers first, then the banner: whoever reads the banner may
        // signal at once.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        report(&farm, &mut generations);
        eprintln!(
            "{} {} modem(s) running; talk to one with: socat - <AT path>,raw,echo=0  (Ctrl-C stops)",
            farm.len(),
            args.profile
        );
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = interrupt.recv() => return Ok::<(), std::io::Error>(()),
                _ = terminate.recv() => return Ok(()),
                _ = tick.tick() => report(&farm, &mut generations),
            }
        }
    });
    if let Err(e) = stopped {
        eprintln!("modem-emulator: cannot install the Ctrl-C handler: {e}");
    }
    drop(farm);
    eprintln!("modem-emulator: stopped");
    ExitCode::SUCCESS
}

/// Prints a line for every modem whose ports were (re)opened since the
/// last call.
fn report(farm: &ModemFarm, seen: &mut [u64]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (i, modem) in farm.modems().iter().enumerate() {
        let generation = modem.generation();
        let Some(paths) = modem.paths() else {
            continue;
        };
        if seen[i] == generation {
            continue;
        }
        let again = if seen[i] == 0 { "" } else { " (re-enumerated)" };
        seen[i] = generation;
        let _ = writeln!(
            out,
            "modem {} IMEI {} AT {} voice {}{again}",
            i + 1,
            modem.imei(),
            paths.at.display(),
            paths.voice.display()
        );
        if let Some(links) = modem.links() {
            let _ = writeln!(
                out,
                "  links {} {}",
                links.at.display(),
                links.voice.display()
            );
        }
    }
    let _ = out.flush();
}
