//! Config loading through its public interface (`Config::from_toml`,
//! `Config::load`, `slot_numbers_checked`): the defaults, environment
//! overrides typed by the default, SIP number allocation, and every refusal as
//! the exact one line an operator reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hubd::config::{
    Config, ConfigError, DriverConfig, LogFormat, RecordingPolicy, SimConfig, SlotConfig,
    Synchronous, slot_numbers_checked,
};
use vss_shared::{SipNumber, SlotId, SlotKind};

/// The name every in-memory config is loaded under; errors start with it.
const ORIGIN: &str = "hubd.toml";

/// Environment variables as (name, value) pairs.
type Env<'a> = &'a [(&'a str, &'a str)];

fn load(text: &str, env: Env) -> Result<Config, ConfigError> {
    let vars = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    Config::from_toml(text, Path::new(ORIGIN), vars)
}

fn loaded(text: &str, env: Env) -> Config {
    load(text, env).unwrap_or_else(|e| panic!("config refused: {e}\n{text}"))
}

/// Loads `text` with `env` and checks that it is refused with exactly `expect`,
/// on one line.
fn check_refused(text: &str, env: Env, expect: &str) {
    match load(text, env) {
        Ok(config) => panic!("accepted, expected `{expect}`:\n{text}\n{env:?}\n{config:#?}"),
        Err(e) => {
            let line = e.to_string();
            assert_eq!(line, expect, "for\n{text}\nwith {env:?}");
            assert_one_line(&line);
        }
    }
}

fn assert_one_line(line: &str) {
    assert!(!line.trim().is_empty(), "empty error");
    assert!(!line.contains(['\n', '\r']), "error spans lines: {line:?}");
}

fn number(n: &str) -> SipNumber {
    SipNumber::parse(n).expect("a valid test number")
}

const SLOT: &str = "[[slots]]\nid = 7\nkind = \"auto\"\ndriver = { type = \"sim\" }\n";

#[test]
fn an_empty_file_gives_the_defaults() {
    let config = loaded("", &[]);
    assert_eq!(config, Config::default());

    assert_eq!(config.hub.id.as_str(), "hub-local");
    assert_eq!(config.hub.name, "Local hub");
    assert_eq!(config.hub.data_dir, PathBuf::from("/var/lib/hubd"));
    assert_eq!(
        config.api.listen,
        "127.0.0.1:8790".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, "info");
    assert_eq!(config.store.batch_max, 1024);
    assert_eq!(config.store.synchronous, Synchronous::Full);
    let sup = &config.supervisor;
    assert_eq!(
        [
            sup.restart_backoff_initial_ms,
            sup.restart_backoff_max_ms,
            sup.stable_after_ms,
            sup.health_check_interval_ms,
            sup.device_timeout_ms,
            sup.wrap_up_ms,
        ],
        [500, 30_000, 60_000, 10_000, 15_000, 2_000]
    );
    assert!(config.slots.is_empty());
}

#[test]
fn a_slot_needs_only_id_kind_and_driver() {
    let config = loaded(SLOT, &[]);
    let [slot] = config.slots.as_slice() else {
        panic!("one slot expected: {:?}", config.slots)
    };
    assert_eq!(slot.id, SlotId::new(7).unwrap());
    assert_eq!(slot.kind, SlotKind::Auto);
    assert_eq!(slot.name, None);
    assert_eq!(slot.display_name(), "Slot 07");
    assert_eq!(slot.sip_number, None);
    assert!(slot.enabled);
    let DriverConfig::Sim(sim) = &slot.driver else {
        panic!("slot {} should have the sim driver", slot.id)
    };
    assert_eq!(*sim, SimConfig::default());
    assert_eq!(
        (
            sim.seed,
            sim.latency_ms,
            sim.failure_rate,
            sim.call_every_ms,
            sim.call_duration_ms,
            sim.panic_after_ms
        ),
        (0, 50, 0.0, 0, 20_000, None)
    );
}

#[test]
fn env_overrides_are_typed_by_the_default() {
    // (variable, value, what the loaded config must show)
    type Holds = fn(&Config) -> bool;
    let cases: &[(&str, &str, Holds)] = &[
        // A string setting stays a string, even when it looks like a number.
        ("HUBD__HUB__NAME", "1234", |c| c.hub.name == "1234"),
        ("HUBD__HUB__ID", "msk-01", |c| c.hub.id.as_str() == "msk-01"),
        ("HUBD__HUB__DATA_DIR", "/srv/hub", |c| {
            c.hub.data_dir == Path::new("/srv/hub")
        }),
        ("HUBD__API__LISTEN", "0.0.0.0:9000", |c| {
            c.api.listen == "0.0.0.0:9000".parse::<SocketAddr>().unwrap()
        }),
        ("HUBD__LOG__FORMAT", "json", |c| {
            c.log.format == LogFormat::Json
        }),
        ("HUBD__LOG__LEVEL", "info,hubd::store=debug", |c| {
            c.log.level == "info,hubd::store=debug"
        }),
        ("HUBD__STORE__BATCH_MAX", " 64 ", |c| {
            c.store.batch_max == 64
        }),
        ("HUBD__STORE__SYNCHRONOUS", "normal", |c| {
            c.store.synchronous == Synchronous::Normal
        }),
        ("HUBD__SUPERVISOR__WRAP_UP_MS", "0", |c| {
            c.supervisor.wrap_up_ms == 0
        }),
        ("HUBD__SUPERVISOR__RESTART_BACKOFF_MAX_MS", "120000", |c| {
            c.supervisor.restart_backoff_max_ms == 120_000
        }),
    ];
    for (var, value, holds) in cases {
        let config = loaded("", &[(var, value)]);
        assert!(holds(&config), "{var}={value:?} gave {config:#?}");
        assert_ne!(config, Config::default(), "{var}={value:?} changed nothing");
    }
}

#[test]
fn env_beats_the_file_and_leaves_the_rest_of_it_alone() {
    let file = format!(
        "[hub]\nname = \"From the file\"\n\n[store]\nbatch_max = 10\nsynchronous = \"normal\"\n\n{SLOT}"
    );
    let config = loaded(
        &file,
        &[
            ("HUBD__STORE__BATCH_MAX", "20"),
            ("HUBD__API__LISTEN", "127.0.0.1:9999"),
        ],
    );
    assert_eq!(config.store.batch_max, 20, "env beats file");
    assert_eq!(
        config.api.listen,
        "127.0.0.1:9999".parse::<SocketAddr>().unwrap(),
        "env sets a key the file does not have"
    );
    assert_eq!(config.store.synchronous, Synchronous::Normal, "file kept");
    assert_eq!(config.hub.name, "From the file", "file kept");
    assert_eq!(config.slots, loaded(SLOT, &[]).slots, "slots kept");
}

#[test]
fn variables_without_the_exact_prefix_are_ignored() {
    let config = loaded(
        "",
        &[
            ("PATH", "/usr/bin"),
            ("HUBD_API_LISTEN", "nope"),
            ("hubd__api__listen", "nope"),
            ("XHUBD__API__LISTEN", "nope"),
        ],
    );
    assert_eq!(config, Config::default());
}

#[test]
fn env_errors_name_the_variable() {
    let cases = [
        (
            "HUBD__STORE__BATCH_MAX",
            "abc",
            "environment HUBD__STORE__BATCH_MAX: `store.batch_max` = \"abc\": expected an integer",
        ),
        (
            "HUBD__API__PORT",
            "1",
            "environment HUBD__API__PORT: unknown setting `api.port` (known in [api]: listen)",
        ),
        (
            "HUBD__SLOTS__X",
            "1",
            "environment HUBD__SLOTS__X: [[slots]] cannot be set from the environment; put slots in the config file",
        ),
        (
            "HUBD__API__LISTEN",
            "nope",
            "environment HUBD__API__LISTEN: `api.listen` = \"nope\": invalid socket address syntax",
        ),
        (
            "HUBD__LOG__FORMAT",
            "JSON",
            "environment HUBD__LOG__FORMAT: `log.format` = \"JSON\": unknown variant `JSON`, expected `text` or `json`",
        ),
        (
            "HUBD__SUPERVISOR__RESTART_BACKOFF_MAX_MS",
            "-1",
            "environment HUBD__SUPERVISOR__RESTART_BACKOFF_MAX_MS: `supervisor.restart_backoff_max_ms` = \"-1\": invalid value: integer `-1`, expected u64",
        ),
        (
            "HUBD__HUB__ID",
            "Hub 1",
            "environment HUBD__HUB__ID: `hub.id` = \"Hub 1\": hub id \"Hub 1\" contains 'H'; only lowercase ASCII letters, digits and '-' are allowed",
        ),
        (
            "HUBD__API",
            "127.0.0.1:1",
            "environment HUBD__API: expected HUBD__SECTION__KEY, e.g. HUBD__API__LISTEN",
        ),
        (
            "HUBD__API__LISTEN__PORT",
            "1",
            "environment HUBD__API__LISTEN__PORT: expected HUBD__SECTION__KEY, e.g. HUBD__API__LISTEN",
        ),
        (
            "HUBD__DEVICES__X",
            "1",
            "environment HUBD__DEVICES__X: unknown section `devices` (known: api, hub, log, media, modems, store, supervisor)",
        ),
    ];
    for (var, value, expect) in cases {
        check_refused("", &[(var, value)], expect);
        // The same with a file that has the section.
        check_refused("[api]\n[store]\n[log]\n[hub]\n", &[(var, value)], expect);
    }
}

#[test]
fn file_errors_name_the_file_line_and_field() {
    let cases = [
        (
            "[hub]\nname = \"x\"\n\n[api]\nlisten = \"127.0.0.1:8790\"\nlisen = \"127.0.0.1:8791\"\n",
            "hubd.toml:6: field `api.lisen`: unknown field `lisen`, expected `listen`",
        ),
        (
            "[store]\n\nbatch_max = \"many\"\n",
            "hubd.toml:3: field `store.batch_max` = \"many\": invalid type: string \"many\", expected usize",
        ),
        (
            "[store]\nbatch_max = -1\n",
            "hubd.toml:2: field `store.batch_max` = -1: invalid value: integer `-1`, expected usize",
        ),
        (
            "[store]\nsynchronous = \"off\"\n",
            "hubd.toml:2: field `store.synchronous` = \"off\": unknown variant `off`, expected `full` or `normal`",
        ),
        (
            "[hub]\nid = \"\"\n",
            "hubd.toml:2: field `hub.id` = \"\": hub id is empty",
        ),
        (
            "[[slots]]\nid = 1\nkind = \"AUTO\"\ndriver = { type = \"sim\" }\n",
            "hubd.toml:3: field `slots[0].kind` = \"AUTO\": unknown variant `AUTO`, expected one of `auto`, `mf`, `ls`",
        ),
        (
            "[[slots]]\nid = 0\nkind = \"auto\"\ndriver = { type = \"sim\" }\n",
            "hubd.toml:2: field `slots[0].id` = 0: slot id 0 is invalid; slots are numbered 1–9999",
        ),
        (
            "[[slots]]\nid = 1\nkind = \"auto\"\nsip_number = \"600\"\ndriver = { type = \"sim\" }\n",
            "hubd.toml:4: field `slots[0].sip_number` = \"600\": SIP number \"600\" must be exactly four digits",
        ),
        (
            "[[slots]]\nid = 1\nkind = \"auto\"\nsip_number = \"6000\"\ndriver = { type = \"sim\" }\n",
            "hubd.toml:4: field `slots[0].sip_number` = \"6000\": SIP number 6000 is reserved for its range's group/hunt number",
        ),
        (
            "[[slots]]\nid = 1\nkind = \"auto\"\ndriver = { type = \"usb\" }\n",
            "hubd.toml:4: field `slots[0].driver.type` = \"usb\": unknown variant `usb`, expected `sim` or `at_modem`",
        ),
        (
            "[hub\nname = \"x\"\n",
            "hubd.toml:1: unclosed table, expected `]`",
        ),
    ];
    for (text, expect) in cases {
        check_refused(text, &[], expect);
    }
}

#[test]
fn validation_errors_name_the_field() {
    let slot = |id: u32, kind: &str, number: Option<&str>| {
        let number = number
            .map(|n| format!("sip_number = \"{n}\"\n"))
            .unwrap_or_default();
        format!("[[slots]]\nid = {id}\nkind = \"{kind}\"\n{number}driver = {{ type = \"sim\" }}\n")
    };
    let cases = [
        (
            "[[slots]]\nid = 1\nkind = \"auto\"\ndriver = { type = \"sim\", failure_rate = 1.5 }\n"
                .to_owned(),
            "hubd.toml: field `slots[0].driver.failure_rate` = 1.5: must be between 0 and 1",
        ),
        (
            "[store]\nbatch_max = 0\n".to_owned(),
            "hubd.toml: field `store.batch_max` = 0: must be between 1 and 65536",
        ),
        (
            "[store]\nbatch_max = 65537\n".to_owned(),
            "hubd.toml: field `store.batch_max` = 65537: must be between 1 and 65536",
        ),
        (
            "[supervisor]\nrestart_backoff_initial_ms = 40000\n".to_owned(),
            "hubd.toml: field `supervisor.restart_backoff_initial_ms` = 40000: must not exceed supervisor.restart_backoff_max_ms (30000)",
        ),
        (
            "[supervisor]\nrestart_backoff_initial_ms = 0\n".to_owned(),
            "hubd.toml: field `supervisor.restart_backoff_initial_ms` = 0: must be greater than 0",
        ),
        (
            "[supervisor]\ndevice_timeout_ms = 0\n".to_owned(),
            "hubd.toml: field `supervisor.device_timeout_ms` = 0: must be greater than 0",
        ),
        (
            "[supervisor]\nhealth_check_interval_ms = 0\n".to_owned(),
            "hubd.toml: field `supervisor.health_check_interval_ms` = 0: must be greater than 0",
        ),
        (
            "[hub]\nname = \"\"\n".to_owned(),
            "hubd.toml: field `hub.name` = \"\": must not be empty",
        ),
        (
            "[log]\nlevel = \"info,hubd=loud\"\n".to_owned(),
            "hubd.toml: field `log.level` = \"info,hubd=loud\": not a log filter (error parsing level filter: expected one of \"off\", \"error\", \"warn\", \"info\", \"debug\", \"trace\", or a number 0-5); use e.g. \"info\" or \"info,hubd::store=debug\"",
        ),
        (
            // A multi-line value is still reported on one line.
            "[log]\nlevel = \"\"\"\ninfo\n[\n\"\"\"\n".to_owned(),
            "hubd.toml: field `log.level` = \"info\\n[\\n\": not a log filter (invalid filter directive); use e.g. \"info\" or \"info,hubd::store=debug\"",
        ),
        (
            slot(3, "auto", None) + &slot(3, "mf", None),
            "hubd.toml: field `slots[1].id` = 3: duplicate slot id, already used by slots[0]",
        ),
        (
            slot(1, "auto", Some("6001")) + &slot(2, "auto", Some("6001")),
            "hubd.toml: field `slots[1].sip_number` = \"6001\": SIP number 6001 is already taken by slots[0]",
        ),
        (
            slot(1, "mf", Some("6002")),
            "hubd.toml: field `slots[0].sip_number` = \"6002\": SIP number 6002 is an AUTO number, but this is an MF slot (MF slots use 7001–7999)",
        ),
        (
            slot(1, "ls", Some("1001")),
            "hubd.toml: field `slots[0].sip_number` = \"1001\": SIP number 1001 is a service number, but this is an LS slot (LS slots use 8001–8999)",
        ),
    ];
    for (text, expect) in cases {
        check_refused(&text, &[], expect);
    }
}

#[test]
fn blank_values_and_env_values_are_validated_too() {
    // (file, environment, the field the refusal must name)
    let cases: &[(&str, Env, &str)] = &[
        ("[hub]\nname = \" \t \"\n", &[], "`hub.name`"),
        ("", &[("HUBD__HUB__NAME", " ")], "`hub.name`"),
        // Typed correctly, so past the environment step, then refused by a rule.
        ("", &[("HUBD__STORE__BATCH_MAX", "0")], "`store.batch_max`"),
        (
            "",
            &[("HUBD__SUPERVISOR__RESTART_BACKOFF_INITIAL_MS", "30001")],
            "`supervisor.restart_backoff_initial_ms`",
        ),
        ("", &[("HUBD__LOG__LEVEL", "info,hubd=loud")], "`log.level`"),
    ];
    for (text, env, field) in cases {
        let line = match load(text, env) {
            Ok(config) => panic!("accepted {text:?} with {env:?}: {config:#?}"),
            Err(e) => e.to_string(),
        };
        assert!(line.contains(&format!("{field} = ")), "{line}");
        // A value set from the environment is blamed on its variable, not the file.
        if let Some((var, _)) = env.first() {
            assert!(line.starts_with(&format!("environment {var}: ")), "{line}");
        } else {
            assert!(line.contains(&format!("field {field} = ")), "{line}");
        }
        assert_one_line(&line);
    }
}

/// Slots of `kinds`, with the explicit numbers given (None = allocate).
fn slots(kinds: &[(SlotKind, Option<&str>)]) -> Config {
    let mut config = Config::default();
    for (i, (kind, sip)) in kinds.iter().enumerate() {
        config.slots.push(SlotConfig {
            id: SlotId::new(u32::try_from(i + 1).unwrap()).unwrap(),
            name: None,
            kind: *kind,
            sip_number: sip.map(number),
            enabled: true,
            driver: DriverConfig::Sim(SimConfig::default()),
        });
    }
    config
}

#[test]
fn sip_numbers_are_the_lowest_free_of_each_range_after_explicit_ones() {
    use SlotKind::{Auto, Ls, Mf};
    // (slots with their explicit numbers, the numbers they end up with)
    type Slots<'a> = &'a [(SlotKind, Option<&'a str>)];
    let cases: &[(Slots, &[&str])] = &[
        (&[], &[]),
        (
            &[(Auto, None), (Auto, None), (Mf, None), (Ls, None)],
            &["6001", "6002", "7001", "8001"],
        ),
        // Explicit numbers are taken first, even by later slots.
        (
            &[(Auto, None), (Auto, Some("6001")), (Auto, None)],
            &["6002", "6001", "6003"],
        ),
        // Allocation fills gaps left by explicit numbers.
        (
            &[
                (Mf, Some("7002")),
                (Mf, None),
                (Mf, None),
                (Ls, Some("8999")),
                (Ls, None),
            ],
            &["7002", "7001", "7003", "8999", "8001"],
        ),
        // Each range is allocated on its own.
        (
            &[(Auto, None), (Mf, Some("7500")), (Auto, None)],
            &["6001", "7500", "6002"],
        ),
    ];
    for (kinds, expect) in cases {
        let numbers = slot_numbers_checked(&slots(kinds))
            .unwrap_or_else(|e| panic!("{kinds:?} refused: {e}"));
        let expect: Vec<SipNumber> = expect.iter().map(|n| number(n)).collect();
        assert_eq!(numbers, expect, "for {kinds:?}");
    }
}

#[test]
fn the_allocation_of_a_loaded_file_matches() {
    let text = "[[slots]]\nid = 1\nkind = \"auto\"\ndriver = { type = \"sim\" }\n\n\
                [[slots]]\nid = 2\nkind = \"auto\"\nsip_number = \"6001\"\ndriver = { type = \"sim\" }\n";
    let config = loaded(text, &[]);
    let numbers = slot_numbers_checked(&config).unwrap();
    assert_eq!(numbers, [number("6002"), number("6001")]);
}

#[test]
fn a_full_range_is_refused_naming_the_slot() {
    let mut kinds = vec![(SlotKind::Auto, None); 999];
    let config = slots(&kinds);
    let numbers = slot_numbers_checked(&config).unwrap();
    assert_eq!(numbers.first(), Some(&number("6001")));
    assert_eq!(numbers.last(), Some(&number("6999")));

    kinds.push((SlotKind::Auto, None));
    let e = slot_numbers_checked(&slots(&kinds)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "config: field `slots[999].sip_number` = (none): no free SIP number left for AUTO slots (6001–6999 are all taken)"
    );
    // Another kind still has room.
    kinds.push((SlotKind::Mf, None));
    kinds.remove(0);
    let numbers = slot_numbers_checked(&slots(&kinds)).unwrap();
    assert_eq!(numbers.last(), Some(&number("7001")));
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hubd.toml");
    std::fs::write(&path, "[store]\nbatch_max = 8\n").unwrap();
    let config = Config::load(&path, Vec::new()).unwrap();
    assert_eq!(config.store.batch_max, 8);

    std::fs::write(&path, "[store]\nbatch_max = 0\n").unwrap();
    let e = Config::load(&path, Vec::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: field `store.batch_max` = 0: must be between 1 and 65536",
            path.display()
        )
    );

    let missing = dir.path().join("missing.toml");
    let e = Config::load(&missing, Vec::new()).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    let line = e.to_string();
    assert!(
        line.starts_with(&format!("{}: cannot read config file: ", missing.display())),
        "{line}"
    );
    assert_one_line(&line);
}

/// The example shipped in `deploy/` spells out every field with its default.
#[test]
fn the_example_config_spells_out_every_default() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hubd.example.toml");
    let config = Config::load(&path, Vec::new()).unwrap();
    let defaults = Config::default();
    assert_eq!(config.hub, defaults.hub);
    assert_eq!(config.api, defaults.api);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.store, defaults.store);
    assert_eq!(config.supervisor, defaults.supervisor);

    let kinds: Vec<_> = config.slots.iter().map(|s| (s.kind, s.enabled)).collect();
    assert_eq!(
        kinds,
        [
            (SlotKind::Auto, true),
            (SlotKind::Mf, true),
            (SlotKind::Ls, false)
        ]
    );
    assert_eq!(config.slots[0].sip_number, Some(number("6001")));
    assert_eq!(config.slots[1].sip_number, None);
    let DriverConfig::Sim(sim) = &config.slots[0].driver else {
        panic!("the first slot should have the sim driver")
    };
    assert_eq!(*sim, SimConfig::default());
    assert_eq!(
        slot_numbers_checked(&config).unwrap(),
        [number("6001"), number("7001"), number("8001")]
    );

    // Every key of every section is written out, not left to the default.
    let text = std::fs::read_to_string(&path).unwrap();
    let written: toml::Table = text.parse().unwrap();
    let known = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &known {
        let Some(keys) = keys.as_table() else {
            continue; // slots: an array
        };
        let written = written[section.as_str()].as_table().unwrap();
        let mut want: Vec<_> = keys.keys().collect();
        let mut have: Vec<_> = written.keys().collect();
        want.sort();
        have.sort();
        assert_eq!(have, want, "keys of [{section}]");
    }
    let first_slot = &written["slots"].as_array().unwrap()[0];
    let mut have: Vec<_> = first_slot.as_table().unwrap().keys().collect();
    have.sort();
    assert_eq!(
        have,
        ["driver", "enabled", "id", "kind", "name", "sip_number"]
    );
    let driver = toml::Table::try_from(SimConfig::default()).unwrap();
    let mut want: Vec<_> = driver.keys().map(String::as_str).collect();
    want.push("type");
    want.sort();
    let mut have: Vec<_> = first_slot["driver"]
        .as_table()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    have.sort();
    assert_eq!(have, want, "keys of the first slot's driver");
}

#[test]
fn every_error_kind_is_one_line() {
    let errors = [
        load("[api]\nlisen = 1\n", &[]).unwrap_err(),
        load("[hub\n", &[]).unwrap_err(),
        load("", &[("HUBD__API__LISTEN", "a\nb")]).unwrap_err(),
        load("", &[("HUBD__HUB__NAME", "\n")]).unwrap_err(),
        load("[api]\nlisten = \"\"\"\nnot\nan address\n\"\"\"\n", &[]).unwrap_err(),
        Config::load(Path::new("/nonexistent/hubd.toml"), Vec::new()).unwrap_err(),
    ];
    for e in errors {
        assert_one_line(&e.to_string());
    }
}

#[test]
fn media_defaults_and_values() {
    let config = loaded(SLOT, &[]);
    let media = &config.media;
    assert_eq!(media.rtp_ports, "16384-32767");
    assert_eq!(media.rtp_port_bounds(), Ok((16384, 32767)));
    assert_eq!(
        media.rtp_config(),
        hubd::media::rtp_session::RtpConfig::default()
    );
    assert_eq!(
        media.recording_config(),
        hubd::media::recording::RecordingConfig::default()
    );
    assert_eq!(
        media.recordings_dir(&config.hub),
        PathBuf::from("/var/lib/hubd/recordings")
    );
    let id = SlotId::new(7).expect("id");
    assert_eq!(config.recording_policy(id), RecordingPolicy::Never);

    let text = format!(
        "[media]\nrtp_ports = \"20000-20001\"\njitter_ms = 100\nrecordings_dir = \"/srv/rec\"\n\
         rtp_timeout_s = 12\nrtp_hold_timeout_s = 0\nrecording_bitrate_kbps = 32\nrecording_complexity = 5\n\n{SLOT}recording = \"all\"\n"
    );
    let config = loaded(&text, &[]);
    let media = &config.media;
    let ports = media.port_range().expect("a port range");
    assert_eq!(ports.capacity(), 1);
    assert_eq!(media.rtp_config().jitter.target_depth, 5);
    assert_eq!(
        media.rtp_config().peer_timeout,
        Some(std::time::Duration::from_secs(12))
    );
    assert_eq!(media.rtp_config().hold_timeout, None, "0 is never");
    let recording = media.recording_config();
    assert_eq!((recording.bitrate_bps, recording.complexity), (32_000, 5));
    assert_eq!(media.recordings_dir(&config.hub), PathBuf::from("/srv/rec"));
    assert_eq!(config.recording_policy(id), RecordingPolicy::All);
    assert_eq!(
        config.recording_policy(SlotId::new(8).expect("id")),
        RecordingPolicy::Never
    );

    // Environment overrides reach [media] too.
    let config = loaded(SLOT, &[("HUBD__MEDIA__JITTER_MS", "40")]);
    assert_eq!(config.media.jitter_ms, 40);

    // [media.health]: the defaults, and any field set alone.
    assert_eq!(
        config.media.health,
        hubd::media::health::HealthConfig::default()
    );
    let text =
        format!("[media.health]\nsilence_threshold_dbfs = -45.0\nlong_silence_ms = 8000\n\n{SLOT}");
    let health = loaded(&text, &[]).media.health;
    assert_eq!(health.silence_threshold_dbfs, -45.0);
    assert_eq!(health.long_silence_ms, 8_000);
    assert_eq!(
        health.hangover_ms,
        hubd::media::health::HealthConfig::default().hangover_ms
    );
}

#[test]
fn media_errors_name_the_field_value_and_why() {
    let cases = [
        (
            "[media]\nrtp_ports = \"16385-32767\"\n",
            "hubd.toml: field `media.rtp_ports` = \"16385-32767\": the first port must be even (RTP on even ports), not 16385",
        ),
        (
            "[media]\nrtp_ports = \"32768-16384\"\n",
            "hubd.toml: field `media.rtp_ports` = \"32768-16384\": the last port (16384) is below the first (32768)",
        ),
        (
            "[media]\nrtp_ports = \"20000-20000\"\n",
            "hubd.toml: field `media.rtp_ports` = \"20000-20000\": must hold at least 2 ports (RTP and RTCP)",
        ),
        (
            "[media]\nrtp_ports = \"1000-2000\"\n",
            "hubd.toml: field `media.rtp_ports` = \"1000-2000\": ports must be within 1024-65535 (first is 1000)",
        ),
        (
            "[media]\nrtp_ports = \"60000-70000\"\n",
            "hubd.toml: field `media.rtp_ports` = \"60000-70000\": \"70000\" is not a port number",
        ),
        (
            "[media]\nrtp_ports = \"16384\"\n",
            "hubd.toml: field `media.rtp_ports` = \"16384\": must be FIRST-LAST, e.g. \"16384-32767\"",
        ),
        (
            "[media]\njitter_ms = 50\n",
            "hubd.toml: field `media.jitter_ms` = 50: must be a multiple of 20 (one RTP packet) between 20 and 180",
        ),
        (
            "[media]\njitter_ms = 0\n",
            "hubd.toml: field `media.jitter_ms` = 0: must be a multiple of 20 (one RTP packet) between 20 and 180",
        ),
        (
            "[media]\nrtp_timeout_s = 2\n",
            "hubd.toml: field `media.rtp_timeout_s` = 2: must be 0 (never) or 5 to 3600 seconds: shorter ends calls over a moment of packet loss",
        ),
        (
            "[media]\nrtp_hold_timeout_s = 100000\n",
            "hubd.toml: field `media.rtp_hold_timeout_s` = 100000: must be 0 (never) or 5 to 86400 seconds",
        ),
        (
            "[media]\nrecordings_dir = \"\"\n",
            "hubd.toml: field `media.recordings_dir` = \"\": must be a directory path, e.g. /var/lib/hubd/recordings, or be left out",
        ),
        (
            "[media]\nrecording_bitrate_kbps = 1000\n",
            "hubd.toml: field `media.recording_bitrate_kbps` = 1000: must be between 6 and 510 kbit/s (Opus's range)",
        ),
        (
            "[media]\nrecording_complexity = 11\n",
            "hubd.toml: field `media.recording_complexity` = 11: must be between 0 (cheapest) and 10",
        ),
        (
            "[media.health]\nsilence_threshold_dbfs = 3.0\n",
            "hubd.toml: field `media.health.silence_threshold_dbfs` = 3: must be between -90 and -10 dBFS (speech sits around -35 to -15)",
        ),
        (
            "[media.health]\nlong_silence_ms = 0\n",
            "hubd.toml: field `media.health.long_silence_ms` = 0: must be between 20 and 3600000 ms",
        ),
        (
            "[media.health]\none_way_min_speech_ms = 400\n",
            "hubd.toml: field `media.health.one_way_max_other_ms` = 500: must be below media.health.one_way_min_speech_ms (400), or every call is one-way",
        ),
        (
            "[[slots]]\nid = 1\nkind = \"auto\"\nrecording = \"sometimes\"\ndriver = { type = \"sim\" }\n",
            "hubd.toml:4: field `slots[0].recording` = \"sometimes\": unknown variant `sometimes`, expected `never` or `all`",
        ),
    ];
    for (text, expect) in cases {
        check_refused(text, &[], expect);
    }
}
