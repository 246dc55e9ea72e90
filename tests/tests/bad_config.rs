//! Refused start-ups, through the real binary: a bad config file, a bad
//! environment override, a busy API port, an unusable data dir, a corrupt or
//! truncated store, and a data dir held by another hubd. Each must exit 2 with
//! one line on stderr naming the field or resource, print nothing on stdout,
//! and write nothing: a data dir that did not exist is not created, and
//! existing files keep every byte.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vss_tests::{HubProcess, get, hubd_bin};

/// What a finished `hubd` printed and how it exited.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `hubd args…` to completion with `env` added to a copy of the test's
/// environment from which every `HUBD__…` variable and `RUST_LOG` are removed.
fn hubd(args: &[&OsStr], env: &[(&str, &OsStr)]) -> Outcome {
    let mut command = Command::new(hubd_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HUBD__") {
            command.env_remove(var);
        }
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("hubd runs");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `hubd <command> --config <config>` with `env`.
fn hubd_with_config(command: &str, config: &Path, env: &[(&str, &str)]) -> Outcome {
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    hubd(
        &[
            OsStr::new(command),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &env,
    )
}

/// Checks a refusal: exit code 2, nothing on stdout, exactly one non-empty
/// line on stderr starting `hubd: `. Returns that line without the newline.
fn refused(outcome: &Outcome) -> &str {
    assert_eq!(outcome.code, Some(2), "expected exit code 2: {outcome:#?}");
    assert_eq!(outcome.stdout, "", "stdout must be empty: {outcome:#?}");
    let line = outcome
        .stderr
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stderr is not one ended line: {outcome:#?}"));
    assert!(
        !line.contains('\n'),
        "stderr has several lines: {outcome:#?}"
    );
    assert!(
        line.starts_with("hubd: ") && line.len() > "hubd: ".len(),
        "stderr must be `hubd: …`: {outcome:#?}"
    );
    line
}

/// Every file and directory under `root` (relative path → bytes; `None` for a
/// directory), or `None` if `root` does not exist.
fn snapshot(root: &Path) -> Option<BTreeMap<PathBuf, Option<Vec<u8>>>> {
    fn walk(root: &Path, dir: &Path, into: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in std::fs::read_dir(dir).expect("readable test dir") {
            let path = entry.expect("readable entry").path();
            let relative = path.strip_prefix(root).unwrap().to_owned();
            if path.is_dir() {
                into.insert(relative, None);
                walk(root, &path, into);
            } else {
                into.insert(relative, Some(std::fs::read(&path).expect("readable file")));
            }
        }
    }
    if !root.exists() {
        return None;
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    Some(files)
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `path` as the inside of a TOML basic string.
fn toml_text(path: &Path) -> &str {
    let text = path.to_str().expect("UTF-8 temp path");
    assert!(
        !text.contains(['"', '\\']) && !text.chars().any(char::is_control),
        "test paths are written into TOML unescaped: {text:?}"
    );
    text
}

/// A valid config whose store lives in `data_dir` and whose API listens on `listen`.
fn valid_config(data_dir: &Path, listen: &str) -> String {
    format!(
        "[hub]\ndata_dir = \"{}\"\n\n[api]\nlisten = \"{listen}\"\n\n\
         [[slots]]\nid = 1\nkind = \"auto\"\ndriver = {{ type = \"sim\" }}\n",
        toml_text(data_dir)
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("hubd.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// A config file that fails to load, and the line hubd must print for it.
struct BadFile {
    /// The file; `{data}` stands for the data dir.
    toml: &'static str,
    /// The exact stderr line; `{cfg}` stands for the config file's path.
    expect: &'static str,
}

/// Case 1: a misspelt key.
const UNKNOWN_FIELD: BadFile = BadFile {
    toml: "[hub]\ndata_dir = \"{data}\"\n\n[api]\nlisten = \"127.0.0.1:0\"\nlisen = \"127.0.0.1:8790\"\n",
    expect: "hubd: {cfg}:6: field `api.lisen`: unknown field `lisen`, expected `listen`",
};

/// Case 2: a value of the wrong type.
const WRONG_TYPE: BadFile = BadFile {
    toml: "[hub]\ndata_dir = \"{data}\"\n\n[store]\nbatch_max = \"many\"\n",
    expect: "hubd: {cfg}:5: field `store.batch_max` = \"many\": invalid type: string \"many\", expected usize",
};

/// Case 3: two slots with one SIP number.
const DUPLICATE_SIP_NUMBER: BadFile = BadFile {
    toml: "[hub]\ndata_dir = \"{data}\"\n\n\
           [[slots]]\nid = 1\nkind = \"auto\"\nsip_number = \"6001\"\ndriver = { type = \"sim\" }\n\n\
           [[slots]]\nid = 2\nkind = \"auto\"\nsip_number = \"6001\"\ndriver = { type = \"sim\" }\n",
    expect: "hubd: {cfg}: field `slots[1].sip_number` = \"6001\": SIP number 6001 is already taken by slots[0]",
};

/// Case 4: an MF slot with an AUTO number.
const SIP_NUMBER_OF_ANOTHER_KIND: BadFile = BadFile {
    toml: "[hub]\ndata_dir = \"{data}\"\n\n\
           [[slots]]\nid = 1\nkind = \"mf\"\nsip_number = \"6002\"\ndriver = { type = \"sim\" }\n",
    expect: "hubd: {cfg}: field `slots[0].sip_number` = \"6002\": SIP number 6002 is an AUTO number, but this is an MF slot (MF slots use 7001–7999)",
};

/// Case 5: two slots with one id.
const DUPLICATE_SLOT_ID: BadFile = BadFile {
    toml: "[hub]\ndata_dir = \"{data}\"\n\n\
           [[slots]]\nid = 3\nkind = \"auto\"\ndriver = { type = \"sim\" }\n\n\
           [[slots]]\nid = 3\nkind = \"mf\"\ndriver = { type = \"sim\" }\n",
    expect: "hubd: {cfg}: field `slots[1].id` = 3: duplicate slot id, already used by slots[0]",
};

/// Runs `command` (`run` or `check-config`) on `bad` in a fresh temp dir,
/// checks the exact refusal line and that nothing was written.
fn refuse_bad_file(command: &str, bad: &BadFile) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &bad.toml.replace("{data}", toml_text(&data)));
    let before = snapshot(tmp.path());

    let outcome = hubd_with_config(command, &config, &[]);
    let line = refused(&outcome);
    let expect = bad.expect.replace("{cfg}", &config.display().to_string());
    assert_eq!(line, expect, "hubd {command}");

    assert!(!data.exists(), "hubd {command} created the data dir");
    assert_eq!(
        snapshot(tmp.path()),
        before,
        "hubd {command} wrote something"
    );
}

#[test]
fn unknown_field_is_refused_naming_file_line_and_field() {
    refuse_bad_file("run", &UNKNOWN_FIELD);
}

#[test]
fn wrong_type_is_refused_naming_the_field_and_value() {
    refuse_bad_file("run", &WRONG_TYPE);
}

#[test]
fn duplicate_sip_number_is_refused_naming_the_second_slot() {
    refuse_bad_file("run", &DUPLICATE_SIP_NUMBER);
}

#[test]
fn sip_number_of_another_kind_is_refused() {
    refuse_bad_file("run", &SIP_NUMBER_OF_ANOTHER_KIND);
}

#[test]
fn duplicate_slot_id_is_refused() {
    refuse_bad_file("run", &DUPLICATE_SLOT_ID);
}

#[test]
fn check_config_accepts_a_valid_file_and_refuses_bad_ones_like_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:8790"));
    let outcome = hubd_with_config("check-config", &config, &[]);
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
    assert_eq!(
        outcome.stdout,
        format!(
            "{}: ok (hub hub-local, 1 slot, API 127.0.0.1:8790)\n",
            config.display()
        )
    );
    assert_eq!(outcome.stderr, "");
    assert!(!data.exists(), "check-config created the data dir");

    for bad in [
        &UNKNOWN_FIELD,
        &WRONG_TYPE,
        &DUPLICATE_SIP_NUMBER,
        &SIP_NUMBER_OF_ANOTHER_KIND,
        &DUPLICATE_SLOT_ID,
    ] {
        // Both are held to the same expected line (only the temp path differs).
        refuse_bad_file("check-config", bad);
        refuse_bad_file("run", bad);
    }
}

#[test]
fn busy_api_port_is_refused_before_the_data_dir_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &valid_config(&data, &addr.to_string()));
    let before = snapshot(tmp.path());

    let outcome = hubd_with_config("run", &config, &[]);
    let line = refused(&outcome);
    assert!(
        line.starts_with(&format!("hubd: api.listen {addr}: cannot listen: ")),
        "{line}"
    );
    assert!(line.contains("in use"), "{line}");

    assert!(!data.exists(), "the data dir was created");
    assert_eq!(snapshot(tmp.path()), before);
    drop(busy);
}

#[test]
fn data_dir_below_a_regular_file_is_refused_naming_it() {
    // Tests run as root, so permissions cannot make a directory unwritable;
    // a path below a regular file cannot be created by anyone.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("afile");
    std::fs::write(&file, b"a regular file, not a directory\n").unwrap();
    let data = file.join("hub");
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));
    let before = snapshot(tmp.path());

    let outcome = hubd_with_config("run", &config, &[]);
    let line = refused(&outcome);
    assert!(
        line.starts_with(&format!("hubd: data dir {}: ", data.display())),
        "{line}"
    );
    assert!(line.contains("cannot create it"), "{line}");

    assert_eq!(snapshot(tmp.path()), before, "the regular file was changed");
}

/// 4 KiB of reproducible bytes that are not an SQLite database.
fn garbage() -> Vec<u8> {
    let mut state: u64 = 0x5EED;
    (0..4096)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn corrupt_store_is_refused_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("hub.db");
    let bytes = garbage();
    assert!(!bytes.starts_with(b"SQLite format 3\0"));
    std::fs::write(&db, &bytes).unwrap();
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));

    let outcome = hubd_with_config("run", &config, &[]);
    let line = refused(&outcome);
    assert!(
        line.starts_with(&format!("hubd: store {} is corrupt (", db.display())),
        "{line}"
    );
    assert!(line.contains("will not overwrite it"), "{line}");

    assert_eq!(std::fs::read(&db).unwrap(), bytes, "hub.db was changed");
    // The single-hubd lock is taken before the store is opened, so its (empty)
    // lock file stays behind; nothing else is created: no -wal, no -shm.
    assert_eq!(names(&data), ["hub.db", "hubd.lock"]);
    assert_eq!(std::fs::read(data.join("hubd.lock")).unwrap(), b"");
}

#[test]
fn truncated_store_is_refused_and_left_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let loaded = hubd(
        &[
            OsStr::new("outbox-load"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--events"),
            OsStr::new("2000"),
        ],
        &[],
    );
    assert_eq!(loaded.code, Some(0), "the loader failed: {}", loaded.stderr);
    assert_eq!(loaded.stdout.lines().count(), 2000);
    // It closed cleanly, so everything is in hub.db; the WAL files (if any)
    // go, so the truncated file is all there is.
    for leftover in ["hub.db-wal", "hub.db-shm"] {
        match std::fs::remove_file(data.join(leftover)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {leftover}: {e}"),
        }
    }
    let db = data.join("hub.db");
    let size = std::fs::metadata(&db).unwrap().len();
    assert!(
        size >= 16 * 4096,
        "a store of 2000 events is bigger: {size}"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(size / 2)
        .unwrap();
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));
    let before = snapshot(&data);

    let outcome = hubd_with_config("run", &config, &[]);
    let line = refused(&outcome);
    assert!(
        line.starts_with(&format!("hubd: store {} is corrupt (", db.display())),
        "{line}"
    );
    assert!(line.contains("malformed"), "{line}");

    assert_eq!(snapshot(&data), before, "the data dir was changed");
}

#[test]
fn second_hubd_on_the_same_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (first, api) = HubProcess::demo_with_stderr(&data, &["--slots", "2"], Stdio::null());
    let files = names(&data);
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));

    let outcome = hubd_with_config("run", &config, &[]);
    let line = refused(&outcome);
    assert_eq!(
        line,
        format!(
            "hubd: data dir {} is in use by another hubd (lock file {}); stop it first",
            data.display(),
            data.join("hubd.lock").display()
        )
    );

    assert_eq!(names(&data), files, "files came or went in the data dir");
    assert_eq!(
        get(api, "/health/ready").0,
        200,
        "the first hubd was disturbed"
    );
    let status = first.terminate();
    assert_eq!(status.code(), Some(0), "the first hubd: {status}");
}

/// Runs a valid config with one bad environment override; returns the line.
fn refuse_env(var: &str, value: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));
    let before = snapshot(tmp.path());

    let outcome = hubd_with_config("run", &config, &[(var, value)]);
    let line = refused(&outcome).to_owned();
    assert!(
        line.starts_with(&format!("hubd: environment {var}: ")),
        "{line}"
    );

    assert!(!data.exists(), "the data dir was created");
    assert_eq!(snapshot(tmp.path()), before);
    line
}

#[test]
fn env_value_of_the_wrong_type_is_refused_naming_the_variable() {
    assert_eq!(
        refuse_env("HUBD__STORE__BATCH_MAX", "abc"),
        "hubd: environment HUBD__STORE__BATCH_MAX: `store.batch_max` = \"abc\": expected an integer"
    );
}

#[test]
fn env_unknown_setting_is_refused_naming_the_variable() {
    assert_eq!(
        refuse_env("HUBD__API__PORT", "1"),
        "hubd: environment HUBD__API__PORT: unknown setting `api.port` (known in [api]: listen)"
    );
}

#[test]
fn env_cannot_set_slots() {
    let line = refuse_env("HUBD__SLOTS__X", "1");
    assert!(
        line.contains("[[slots]] cannot be set from the environment"),
        "{line}"
    );
}

#[test]
fn an_unrelated_non_utf8_variable_does_not_crash_hubd() {
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = write_config(tmp.path(), &valid_config(&data, "127.0.0.1:0"));
    let outcome = hubd(
        &[
            OsStr::new("check-config"),
            OsStr::new("--config"),
            config.as_os_str(),
        ],
        &[("VSS_TEST_LATIN1", OsStr::from_bytes(b"caf\xe9"))],
    );
    assert_eq!(outcome.code, Some(0), "{outcome:#?}");
}
