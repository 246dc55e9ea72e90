//! The `hubd` binary's command line: the shipped example config passes
//! `check-config`, and `--help` lists the subcommands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `hubd args…`, with no `HUBD__…` overrides inherited from the test's environment.
fn hubd(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubd"));
    command.args(args).stdin(Stdio::null());
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with(hubd::config::ENV_PREFIX) {
            command.env_remove(var);
        }
    }
    command.output().expect("hubd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("hubd prints UTF-8")
}

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hubd.example.toml")
}

#[test]
fn check_config_accepts_the_example_config() {
    let path = example_config();
    let out = hubd(&["check-config", "--config", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    assert_eq!(
        stdout,
        format!(
            "{}: ok (hub hub-local, 3 slots, API 127.0.0.1:8790)\n",
            path.display()
        )
    );
}

#[test]
fn check_config_refuses_a_missing_file_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let out = hubd(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "hubd: {}: cannot read config file: ",
            path.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn help_lists_the_subcommands() {
    let out = hubd(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    // The first word of each line of the "Commands:" block.
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for expected in ["run", "check-config", "demo", "status"] {
        assert!(
            commands.contains(&expected),
            "`{expected}` missing from {commands:?} in:\n{help}"
        );
    }
}
