//! The API test harness: the real control plane, started in-process by
//! `app::start` on a fresh database of each backend (see `common`), spoken to
//! over real sockets by a tiny HTTP/1.1 client, and seeded through the store.
//!
//! It never reads the server's bytes with `unwrap`: an answer that is not
//! HTTP panics with what was received, which is the test failing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use control_plane::app::{self, FirstAdmin};
use control_plane::auth::password::hash_password;
use control_plane::config::{Config, Mode};
use control_plane::rbac::Role;
use control_plane::store::centres::templates;
use control_plane::store::slots::SlotReport;
use control_plane::store::users::NewUser;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vss_shared::SlotState;

use crate::common::TestDb;

/// The signing secret of every test server: 40 characters, 30+ distinct.
pub const SECRET: &str = "tQ7m-Vx2Lp9Zr4Kd8Wn3Jb6Hs1Fg5Cy0Ae-Uo7Ri";
/// The password of every seeded user.
pub const PASSWORD: &str = "seeded password 123";

/// One argon2 hash of [`PASSWORD`] for every seeded user (hashing is slow).
static PASSWORD_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password(PASSWORD).expect("hash the seed password"));

/// How long one request may take before the test fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The configuration of a test server on `db_url`: an ephemeral port,
/// development mode with a strong secret, a small pool, and no slot page
/// cache: tests seed through their own `Store`, which is to the server what
/// another control-plane instance is (`api_slot_cache.rs` tests the cache).
pub fn config(db_url: &str) -> Config {
    let mut config = Config::default();
    config.server.http = SocketAddr::from(([127, 0, 0, 1], 0));
    config.server.list_cache_ms = 0;
    config.sync.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.database.url = db_url.to_owned();
    config.database.data_dir = std::env::temp_dir();
    config.database.max_connections = 4;
    config.auth.mode = Mode::Development;
    config.auth.jwt_secret = SECRET.to_owned();
    config
}

/// A running control plane on its own database.
pub struct TestApp {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The first administrator it created.
    pub admin: FirstAdmin,
    /// Its database, for seeding.
    pub db: TestDb,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy), for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} answer is not JSON ({e}): {}", self.status, self.text()))
    }

    /// `Some(why)` unless this is an error answer `{"error":{"code","message"}}`
    /// with a non-empty code and message.
    pub fn error_shape_problem(&self) -> Option<String> {
        let Ok(body) = serde_json::from_slice::<Value>(&self.body) else {
            return Some(format!("error body is not JSON: {:.200}", self.text()));
        };
        let nonempty = |v: &Value| v.as_str().is_some_and(|s| !s.trim().is_empty());
        let error = &body["error"];
        let keys = error.as_object().map(|o| o.len());
        (!(nonempty(&error["code"]) && nonempty(&error["message"]) && keys == Some(2))).then(|| {
            format!(
                "not {{\"error\":{{\"code\",\"message\"}}}}: {:.200}",
                self.text()
            )
        })
    }
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole answer.
/// Writing and reading run together, so an answer sent before the body is
/// read (413) still arrives; a write error after that is expected.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let request = [request.as_bytes(), body].concat();
        let (mut rd, mut wr) = stream.split();
        let write = async move {
            let _ = wr.write_all(&request).await;
        };
        let read = async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            // To EOF; a reset after the answer (unread request body) ends it too.
            while let Ok(n @ 1..) = rd.read(&mut chunk).await {
                buf.extend_from_slice(&chunk[..n]);
            }
            buf
        };
        tokio::join!(write, read).1
    };
    let raw = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path:.100}: no answer within {ANSWER_TIMEOUT:?}"));
    parse(&raw).unwrap_or_else(|why| {
        panic!(
            "{method} {path:.100}: {why}: {:.300}",
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse(raw: &[u8]) -> Result<Answer, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of HTTP head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line.split_once(':').ok_or("bad header line")?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut answer = Answer {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if answer.header("transfer-encoding") == Some("chunked") {
        answer.body = dechunk(&answer.body).ok_or("bad chunked body")?;
    } else if let Some(length) = answer.header("content-length") {
        let length: usize = length.parse().map_err(|_| "bad content-length")?;
        if answer.body.len() < length {
            return Err(format!(
                "body cut short: {} of {length} bytes",
                answer.body.len()
            ));
        }
        answer.body.truncate(length);
    }
    Ok(answer)
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..line]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}

impl TestApp {
    /// Starts the control plane on `db`, with [`config`] changed by `tweak`.
    pub async fn start(db: TestDb, tweak: fn(&mut Config)) -> TestApp {
        // The server's warnings and errors (the cause of a 500) go to the
        // failing test's output; the first test of the process installs it.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .with_ansi(false)
            .try_init();
        let mut config = config(&db.url);
        tweak(&mut config);
        let shutdown = CancellationToken::new();
        let running = match app::start(config, shutdown.clone()).await {
            Ok(running) => running,
            Err(e) => panic!("the control plane did not start: {e}"),
        };
        TestApp {
            addr: running.addr,
            admin: running
                .first_admin
                .expect("a fresh database gets a first administrator"),
            db,
            shutdown,
            done: running.done,
        }
    }

    /// Stops the server, waits for it, and removes the database.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
        self.db.drop_db().await;
    }

    /// Any request; `token` becomes `Authorization: Bearer`.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(bearer) = &bearer {
            headers.push(("Authorization", bearer.as_str()));
        }
        let body = match body {
            Some(value) => {
                headers.push(("Content-Type", "application/json"));
                value.to_string().into_bytes()
            }
            None => Vec::new(),
        };
        send(self.addr, method, path, &headers, &body).await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.request("GET", path, token, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.request("POST", path, token, Some(body)).await
    }

    /// Logs in; panics unless it answers 200. Returns the session.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let answer = self
            .post(
                "/api/auth/login",
                None,
                &json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(answer.status, 200, "login {email}: {}", answer.text());
        answer.json()
    }

    /// An access token for `email` (a seeded user: [`PASSWORD`]).
    pub async fn token(&self, email: &str) -> String {
        let session = self.login(email, PASSWORD).await;
        session["token"]
            .as_str()
            .unwrap_or_else(|| panic!("session without token: {session}"))
            .to_owned()
    }

    /// An access token for the first administrator.
    pub async fn admin_token(&self) -> String {
        let session = self.login(&self.admin.email, &self.admin.password).await;
        session["token"]
            .as_str()
            .unwrap_or_else(|| panic!("session without token: {session}"))
            .to_owned()
    }

    /// Every audit record matching `query` (e.g. `action=auth.login`), newest
    /// first, read as an administrator through `GET /api/audit`.
    pub async fn audit(&self, admin_token: &str, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let path = format!("/api/audit?limit=500&{query}{cursor}");
            let answer = self.get(&path, Some(admin_token)).await;
            assert_eq!(answer.status, 200, "GET {path}: {}", answer.text());
            let page = answer.json();
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return items,
            }
        }
    }

    /// Seeds a centre; returns its id.
    pub async fn seed_centre(&self, name: &str) -> String {
        self.db
            .store
            .create_centre(name, &templates()[0], None)
            .await
            .expect("seed centre")
            .id
    }

    /// Seeds a user whose password is [`PASSWORD`]; returns its id.
    pub async fn seed_user(&self, centre: Option<&str>, email: &str, role: Role) -> String {
        self.db
            .store
            .create_user(NewUser {
                centre_id: centre.map(str::to_owned),
                email: email.to_owned(),
                role,
                password_hash: PASSWORD_HASH.clone(),
            })
            .await
            .expect("seed user")
            .id
    }

    /// Seeds a hub of `centre`.
    pub async fn seed_hub(&self, centre: &str, id: &str) {
        self.db
            .store
            .create_hub(centre, id, &format!("Hub {id}"))
            .await
            .expect("seed hub");
    }

    /// Seeds a slot of `hub` as its hub would report it; returns its id.
    /// `kind` is `auto`, `ls` or `mf`; LS and MF slots get a remote host.
    pub async fn seed_slot(&self, hub: &str, n: i64, kind: &str, state: SlotState) -> i64 {
        let report = SlotReport {
            hub_slot_id: n,
            name: format!("Slot {n:02}"),
            kind: kind.to_owned(),
            sip_number: format!("{}", 6000 + n),
            fsm_state: state,
            fault_reason: None,
            remote_host: (kind != "auto").then(|| format!("10.0.0.{n}")),
        };
        self.db
            .store
            .upsert_slot_report(hub, &report)
            .await
            .expect("seed slot")
    }
}

/// Runs `future`, turning a panic inside it into `Err`, so a failing test
/// still stops its server and removes its database before it fails.
pub async fn catch_unwind<F: Future>(future: F) -> std::thread::Result<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.as_mut().poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(output)) => std::task::Poll::Ready(Ok(output)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    })
    .await
}

/// Leaves the test configuration as it is.
pub fn no_tweak(_: &mut Config) {}

/// Defines each test twice, as `sqlite::$name` and `postgres::$name`, each
/// with `$app` a [`TestApp`] on a fresh database of that backend, started
/// with [`config`] changed by the optional `$tweak` (a `fn(&mut Config)`),
/// and stopped (its database removed) after the body, even when it panics.
#[macro_export]
macro_rules! api_tests {
    (@tweak) => { $crate::api_common::no_tweak };
    (@tweak $tweak:expr) => { $tweak };
    (@backend $backend:ident $(async fn $name:ident($app:ident $(, $tweak:expr)?) $body:block)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                let tweak: fn(&mut control_plane::config::Config) =
                    $crate::api_tests!(@tweak $($tweak)?);
                let db = $crate::common::TestDb::$backend().await;
                let $app = $crate::api_common::TestApp::start(db, tweak).await;
                let outcome = $crate::api_common::catch_unwind(async { $body }).await;
                $app.stop().await;
                if let Err(panic) = outcome {
                    std::panic::resume_unwind(panic);
                }
            }
        )*
    };
    ($($tests:tt)*) => {
        mod sqlite {
            use super::*;
            $crate::api_tests!(@backend sqlite $($tests)*);
        }
        mod postgres {
            use super::*;
            $crate::api_tests!(@backend postgres $($tests)*);
        }
    };
}
