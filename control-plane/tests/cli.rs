//! The `control-plane` binary as an operator runs it: `migrate`,
//! `user create` (password on standard input), `check-config`, and the
//! refusals, each one line on stderr with exit code 2.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("control-plane starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn refused(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("control-plane: ") && lines[0].contains(needle),
        "{stderr}"
    );
}

#[test]
fn migrate_then_create_users_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(&["migrate", "--data-dir", data], "", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("latest schema"));
    assert!(dir.path().join("control-plane.db").exists());

    let out = run(
        &[
            "user",
            "create",
            "--data-dir",
            data,
            "--email",
            "Root@Example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "a long enough password\n",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created root@example.com (admin)"));

    let again = run(
        &[
            "user",
            "create",
            "--data-dir",
            data,
            "--email",
            "root@example.com",
            "--role",
            "admin",
            "--password-stdin",
        ],
        "a long enough password\n",
        &[],
    );
    refused(&again, "already exists");
    refused(
        &run(
            &[
                "user",
                "create",
                "--data-dir",
                data,
                "--email",
                "x@y.io",
                "--role",
                "admin",
                "--password-stdin",
            ],
            "short\n",
            &[],
        ),
        "password refused",
    );
    refused(
        &run(
            &[
                "user",
                "create",
                "--data-dir",
                data,
                "--email",
                "x@y.io",
                "--role",
                "boss",
                "--password-stdin",
            ],
            "a long enough password\n",
            &[],
        ),
        "--role \"boss\"",
    );
    refused(
        &run(
            &[
                "user",
                "create",
                "--data-dir",
                data,
                "--email",
                "x@y.io",
                "--role",
                "operator",
                "--password-stdin",
            ],
            "a long enough password\n",
            &[],
        ),
        "--centre is required",
    );
    refused(
        &run(
            &[
                "user",
                "create",
                "--data-dir",
                data,
                "--email",
                "x@y.io",
                "--role",
                "operator",
                "--centre",
                "nope",
                "--password-stdin",
            ],
            "a long enough password\n",
            &[],
        ),
        "no such centre",
    );
}

#[test]
fn bad_configuration_and_unreachable_databases_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    std::fs::write(&config, "[server]\nhtp = \"127.0.0.1:1\"\n").unwrap();
    let config = config.to_str().unwrap();
    refused(
        &run(&["check-config", "--config", config], "", &[]),
        "server.htp",
    );
    refused(
        &run(&["check-config"], "", &[("CP__AUTH__ACCESS_TTL_S", "5")]),
        "CP__AUTH__ACCESS_TTL_S",
    );
    refused(
        &run(&["migrate", "--database-url", "mysql://x"], "", &[]),
        "database.url",
    );
    refused(
        &run(
            &[
                "migrate",
                "--database-url",
                "postgres://nobody@127.0.0.1:1/none",
            ],
            "",
            &[],
        ),
        "cannot connect to the database postgres://nobody@127.0.0.1:1/none",
    );
    let out = run(&["check-config"], "", &[]);
    assert!(out.status.success());
    // Production without a secret refuses to serve, naming the setting.
    let data = dir.path().join("data");
    refused(
        &run(
            &[
                "serve",
                "--data-dir",
                data.to_str().unwrap(),
                "--http",
                "127.0.0.1:0",
                "--sync",
                "127.0.0.1:0",
            ],
            "",
            &[("CP__AUTH__MODE", "production")],
        ),
        "auth.jwt_secret_file",
    );
}

#[test]
fn a_hubs_slots_are_set_from_a_toml_or_json_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let out = run(
        &[
            "hub",
            "enroll",
            "--data-dir",
            data,
            "--name",
            "Hub One",
            "--centre",
            "North",
            "--create-centre",
            "--id",
            "hub-one",
        ],
        "",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = dir.path().join("slots.toml");
    std::fs::write(
        &toml,
        r#"
[[slots]]
id = 1
kind = "auto"
sip_password = "pw-1"
driver = { type = "at_modem", imei = "490154203237518" }

[[slots]]
id = 2
kind = "mf"
name = "Phone"
driver = { type = "sim", seed = 4 }
"#,
    )
    .unwrap();
    let set = |file: &std::path::Path, hub: &str| {
        run(
            &[
                "hub",
                "config",
                "set",
                "--data-dir",
                data,
                "--hub",
                hub,
                "--file",
                file.to_str().unwrap(),
            ],
            "",
            &[],
        )
    };
    let out = set(&toml, "hub-one");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hub hub-one: revision 1 with 2 slots"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let json = dir.path().join("slots.json");
    std::fs::write(
        &json,
        r#"{"expected_revision": 1, "slots": [{"id": 3, "kind": "ls", "driver": {"type": "sim"}}]}"#,
    )
    .unwrap();
    let out = set(&json, "hub-one");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revision 2 with 1 slots"),
        "{out:?}"
    );
    // Stale, unknown hub, bad slots: one line each, exit 2.
    refused(&set(&json, "hub-one"), "is at revision 2");
    refused(&set(&json, "no-such-hub"), "--hub no-such-hub: no such hub");
    std::fs::write(
        &json,
        r#"{"slots": [{"id": 3, "kind": "ls", "sip_number": "6001", "driver": {"type": "sim"}}]}"#,
    )
    .unwrap();
    refused(&set(&json, "hub-one"), "slots[0].sip_number");
    std::fs::write(&json, "{not json").unwrap();
    refused(&set(&json, "hub-one"), "slots.json");
}
