//! The real `control-plane` binary as a child process, and a minimal HTTP/1.1
//! JSON client for its API (one connection per request, `Connection: close`).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{HubProcess, workspace_bin};

/// A running control plane on embedded SQLite in its own data dir.
pub struct ControlPlane {
    /// The process (stdout lines readable, killed on drop).
    pub process: HubProcess,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Fleet endpoint address (UDP).
    pub sync: SocketAddr,
    /// The first administrator's email and password.
    pub admin: (String, String),
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.split_once(marker).map(|(_, rest)| rest.trim())
}

impl ControlPlane {
    /// Starts `control-plane serve` on `data_dir` with free ports and waits
    /// for its banner. `sync` fixes the fleet endpoint's address (a restart
    /// keeps the one its hubs were enrolled with); `None` picks a free one.
    pub fn start(data_dir: &Path, sync: Option<SocketAddr>) -> ControlPlane {
        Self::start_with(data_dir, sync, &[], Stdio::inherit())
    }

    /// [`ControlPlane::start`] with `extra` arguments (e.g. `--database-url`)
    /// and its log going to `stderr`.
    pub fn start_with(
        data_dir: &Path,
        sync: Option<SocketAddr>,
        extra: &[&str],
        stderr: impl Into<Stdio>,
    ) -> ControlPlane {
        let dir = data_dir.to_str().expect("utf-8 temp path");
        let sync_arg = sync.map_or_else(|| "127.0.0.1:0".to_owned(), |a| a.to_string());
        let mut args = vec![
            "serve",
            "--data-dir",
            dir,
            "--http",
            "127.0.0.1:0",
            "--sync",
            &sync_arg,
        ];
        args.extend_from_slice(extra);
        let mut process = HubProcess::spawn_program(
            &workspace_bin("control-plane", "CONTROL_PLANE_BIN"),
            &args,
            stderr,
        );
        let api = process.next_line_matching("the API line", Duration::from_secs(60), |l| {
            l.contains("API (no web admin yet)")
        });
        let http = after(&api, "http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no API address in {api:?}"));
        let hubs = process.next_line_matching("the hubs line", Duration::from_secs(10), |l| {
            l.contains("Hubs (QUIC, mTLS):")
        });
        let sync = after(&hubs, "Hubs (QUIC, mTLS):")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no fleet address in {hubs:?}"));
        let accounts =
            process.next_line_matching("the accounts line", Duration::from_secs(10), |l| {
                l.contains("First admin:") || l.contains("Accounts:")
            });
        let admin = after(&accounts, "First admin:")
            .and_then(|rest| {
                let mut words = rest.split_whitespace();
                let email = words.next()?;
                let _slash = words.next()?;
                let password = words.next()?;
                Some((email.to_owned(), password.to_owned()))
            })
            .unwrap_or_default();
        ControlPlane {
            process,
            http,
            sync,
            admin,
        }
    }

    /// Logs in; returns the access token.
    pub fn login(&self, email: &str, password: &str) -> String {
        let (status, body) = request(
            self.http,
            "POST",
            "/api/auth/login",
            None,
            Some(&json!({"email": email, "password": password})),
        );
        assert_eq!(status, 200, "login: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Creates a centre (first template) and a hub in it; returns a fresh
    /// enrollment token for the hub.
    pub fn hub_with_token(&self, token: &str, centre: &str, hub_id: &str) -> String {
        let (status, templates) = request(
            self.http,
            "GET",
            "/api/archonts/templates",
            Some(token),
            None,
        );
        assert_eq!(status, 200, "templates: {templates}");
        let template = templates["items"][0]["id"]
            .as_i64()
            .or_else(|| templates[0]["id"].as_i64())
            .unwrap_or(1);
        let (status, created) = request(
            self.http,
            "POST",
            "/api/archonts/centers",
            Some(token),
            Some(&json!({"name": centre, "template_id": template})),
        );
        assert_eq!(status, 201, "centre: {created}");
        let centre_id = created["id"].as_str().expect("centre id").to_owned();
        let (status, hub) = request(
            self.http,
            "POST",
            "/api/hubs",
            Some(token),
            Some(&json!({"id": hub_id, "name": format!("Hub {hub_id}"), "centre_id": centre_id})),
        );
        assert_eq!(status, 201, "hub: {hub}");
        self.enrollment_token(token, hub_id)
    }

    /// A fresh enrollment token for `hub_id`.
    pub fn enrollment_token(&self, token: &str, hub_id: &str) -> String {
        let (status, issued) = request(
            self.http,
            "POST",
            &format!("/api/hubs/{hub_id}/enrollment-tokens"),
            Some(token),
            Some(&json!({})),
        );
        assert_eq!(status, 201, "enrollment token: {issued}");
        issued["token"].as_str().expect("token").to_owned()
    }
}

/// One HTTP request with an optional bearer token and JSON body; returns the
/// status and the body parsed as JSON (`Value::Null` when empty or not JSON).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, Value::Null);
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body.as_bytes()).is_err() {
        return (0, Value::Null);
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (0, Value::Null);
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || tail.len() < size {
            break;
        }
        out.push_str(&tail[..size]);
        rest = tail[size..].trim_start_matches("\r\n");
    }
    out
}
