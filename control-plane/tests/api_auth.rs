//! Authentication over HTTP (POINT): login, tokens refused for every reason,
//! refresh rotation and reuse detection, logout, lockouts, disabled accounts,
//! production start-up refusing a weak secret. After each case the audit log
//! is read back through the administrator's `GET /api/audit`. Every test
//! runs on SQLite and on Postgres.

mod api_common;
mod common;

use api_common::{PASSWORD, SECRET, TestApp};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use control_plane::api::now_s;
use control_plane::auth::jwt::{Claims, JwtKeys};
use control_plane::config::Mode;
use control_plane::rbac::Role;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const EMAIL: &str = "operator@a.example.com";

/// Seeds a centre and an operator in it; returns (centre id, user id).
async fn operator(app: &TestApp) -> (String, String) {
    let centre = app.seed_centre("Centre A").await;
    let id = app.seed_user(Some(&centre), EMAIL, Role::Operator).await;
    (centre, id)
}

async fn login(app: &TestApp, email: &str, password: &str) -> api_common::Answer {
    app.post(
        "/api/auth/login",
        None,
        &json!({ "email": email, "password": password }),
    )
    .await
}

async fn refresh(app: &TestApp, token: &Value) -> api_common::Answer {
    app.post(
        "/api/auth/refresh",
        None,
        &json!({ "refresh_token": token }),
    )
    .await
}

/// The newest audit record matching `query`.
async fn newest(app: &TestApp, admin: &str, query: &str) -> Value {
    app.audit(admin, query)
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no audit record for {query}"))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with `header` and `claims`, signed with HMAC-SHA512 under the test secret.
fn forge_hs512(header: &str, claims: &Claims) -> String {
    let input = format!(
        "{}.{}",
        b64(header.as_bytes()),
        b64(&serde_json::to_vec(claims).unwrap_or_default())
    );
    let mut mac =
        Hmac::<sha2::Sha512>::new_from_slice(SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

fn claims(sub: &str, centre: Option<&str>, role: &str, iat: i64, exp: i64) -> Claims {
    Claims {
        sub: sub.to_owned(),
        centre: centre.map(str::to_owned),
        role: role.to_owned(),
        iat,
        exp,
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

api_tests! {
    async fn login_answers_the_seeds_session_shape_and_is_audited(app) {
        let (centre, id) = operator(&app).await;
        let answer = login(&app, "  Operator@A.example.com ", PASSWORD).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let session = answer.json();
        assert_eq!(session["token"].as_str().map(|t| t.split('.').count()), Some(3), "{session}");
        assert_eq!(session["token_type"], "Bearer");
        assert_eq!(session["expires_in"], 900);
        assert!(session["refresh_token"].as_str().is_some_and(|t| t.len() >= 32), "{session}");
        assert_eq!(
            session["user"],
            json!({ "id": id, "email": EMAIL, "roles": ["operator"], "centre_id": centre })
        );
        let token = session["token"].as_str().unwrap_or_default();
        let me = app.get("/api/auth/me", Some(token)).await;
        assert_eq!((me.status, me.json()), (200, session["user"].clone()));

        let admin = app.admin_token().await;
        let records = app.audit(&admin, &format!("action=auth.login&outcome=ok&actor_id={id}")).await;
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["actor_email"], EMAIL);
        assert_eq!(records[0]["centre_id"], json!(centre));
        assert_eq!(records[0]["source_addr"], "127.0.0.1");
    }

    async fn wrong_password_and_unknown_email_get_the_same_401_and_are_audited(app) {
        operator(&app).await;
        let admin = app.admin_token().await;
        let wrong = login(&app, EMAIL, "not the password at all").await;
        assert_eq!(wrong.status, 401, "{}", wrong.text());
        assert!(wrong.error_shape_problem().is_none(), "{}", wrong.text());
        let record = newest(&app, &admin, "action=auth.login&outcome=failed").await;
        assert_eq!((record["actor_email"].as_str(), record["actor_id"].as_str()), (Some(EMAIL), None));
        assert_eq!(record["detail"], "wrong email or password");

        let unknown = login(&app, "nobody@a.example.com", "not the password at all").await;
        assert_eq!(unknown.status, 401, "{}", unknown.text());
        assert_eq!(unknown.body, wrong.body, "an unknown email must not be told apart");
        let record = newest(&app, &admin, "action=auth.login&outcome=failed").await;
        assert_eq!(record["actor_email"], "nobody@a.example.com");
    }

    async fn expired_tampered_and_foreign_algorithm_tokens_are_refused_and_audited(app) {
        let (centre, id) = operator(&app).await;
        let admin = app.admin_token().await;
        let now = now_s();
        let keys = JwtKeys::new(SECRET.as_bytes());
        let good = keys.sign(&claims(&id, Some(&centre), "operator", now, now + 600));
        assert_eq!(app.get("/api/slots", Some(&good)).await.status, 200);

        let expired = keys.sign(&claims(&id, Some(&centre), "operator", now - 1200, now - 600));
        // The operator's real token with the payload changed to an admin's.
        let parts: Vec<&str> = good.split('.').collect();
        let as_admin = claims(&id, None, "admin", now, now + 600);
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&as_admin).unwrap_or_default()),
            parts[2]
        );
        let unsigned = format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(&serde_json::to_vec(&as_admin).unwrap_or_default())
        );
        let hs512 = forge_hs512(r#"{"alg":"HS512","typ":"JWT"}"#, &as_admin);
        let other_key = JwtKeys::new(b"another-secret-another-secret-another-secret").sign(&as_admin);
        // Each refusal names its reason; the words may change, the reason may not.
        for (token, reason) in [
            (expired.as_str(), &["expired"][..]),
            (tampered.as_str(), &["signature"]),
            (unsigned.as_str(), &["algorithm", "\"none\""]),
            (hs512.as_str(), &["algorithm", "\"HS512\""]),
            (other_key.as_str(), &["signature"]),
            ("a.b", &["malformed"]),
        ] {
            let answer = app.get("/api/users", Some(token)).await;
            assert_eq!(answer.status, 401, "{reason:?}: {}", answer.text());
            let body = answer.json();
            assert_eq!(body["error"]["code"], "unauthorized");
            let record = newest(&app, &admin, "action=auth.token_rejected").await;
            let detail = record["detail"].as_str().unwrap_or_default();
            assert!(reason.iter().all(|r| detail.contains(r)), "{reason:?}: {record}");
            assert_eq!(body["error"]["message"], format!("access token refused: {detail}"));
            assert_eq!(record["outcome"], "denied");
            assert_eq!(record["target"], "GET /api/users");
        }
        assert_eq!(app.audit(&admin, "action=auth.token_rejected").await.len(), 6);
        assert_eq!(app.audit(&admin, "action=auth.permission_denied").await.len(), 0, "no forged token got through");
    }

    async fn refresh_rotates_and_a_reused_token_revokes_the_family(app) {
        let (_, id) = operator(&app).await;
        let admin = app.admin_token().await;
        let first = login(&app, EMAIL, PASSWORD).await.json();
        let rotated = refresh(&app, &first["refresh_token"]).await;
        assert_eq!(rotated.status, 200, "{}", rotated.text());
        let second = rotated.json();
        assert_ne!(second["refresh_token"], first["refresh_token"]);
        assert_ne!(second["token"], first["token"]);
        assert_eq!(second["user"]["id"], json!(id));
        let me = app.get("/api/auth/me", second["token"].as_str()).await;
        assert_eq!(me.status, 200, "{}", me.text());
        let record = newest(&app, &admin, "action=auth.refresh&outcome=ok").await;
        assert_eq!(record["actor_id"], json!(id));

        // The old token again: theft or replay.
        let reused = refresh(&app, &first["refresh_token"]).await;
        assert_eq!(reused.status, 401, "{}", reused.text());
        let record = newest(&app, &admin, "action=auth.refresh_reuse_detected").await;
        assert_eq!((record["actor_id"].clone(), record["outcome"].clone()), (json!(id), json!("denied")));
        // ... and the family is revoked: the newest token is refused too.
        let successor = refresh(&app, &second["refresh_token"]).await;
        assert_eq!(successor.status, 401, "{}", successor.text());
        let unknown = refresh(&app, &json!("never-issued")).await;
        assert_eq!(unknown.status, 401, "{}", unknown.text());
        let record = newest(&app, &admin, "action=auth.refresh&outcome=failed").await;
        assert_eq!(record["detail"], "unknown token");
    }

    async fn logout_revokes_the_refresh_token(app) {
        operator(&app).await;
        let admin = app.admin_token().await;
        let session = login(&app, EMAIL, PASSWORD).await.json();
        let answer = app
            .post("/api/auth/logout", None, &json!({ "refresh_token": session["refresh_token"] }))
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text());
        assert!(answer.body.is_empty());
        let record = newest(&app, &admin, "action=auth.logout").await;
        assert_eq!((record["outcome"].as_str(), record["detail"].as_str()), (Some("ok"), Some("session revoked")));
        let again = refresh(&app, &session["refresh_token"]).await;
        assert_eq!(again.status, 401, "{}", again.text());
    }

    async fn repeated_failures_lock_the_account_out_even_for_the_right_password(app, |c| {
        c.auth.lockout_after_failures = 3;
        c.auth.lockout_base_s = 30;
    }) {
        operator(&app).await;
        let admin = app.admin_token().await;
        for attempt in 1..=2 {
            let answer = login(&app, EMAIL, "not the password at all").await;
            assert_eq!(answer.status, 401, "attempt {attempt}: {}", answer.text());
        }
        let third = login(&app, EMAIL, "not the password at all").await;
        assert_eq!(third.status, 429, "third failure: {}", third.text());
        let retry = |a: &api_common::Answer| {
            a.header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", a.headers))
        };
        assert!((1..=30).contains(&retry(&third)), "Retry-After {}", retry(&third));
        assert_eq!(third.json()["error"]["code"], "locked_out");

        let right = login(&app, EMAIL, PASSWORD).await;
        assert_eq!(right.status, 429, "the right password while locked out: {}", right.text());
        assert!(retry(&right) >= 1);
        let record = newest(&app, &admin, "action=auth.login&outcome=denied").await;
        assert_eq!((record["actor_email"].as_str(), record["detail"].as_str()), (Some(EMAIL), Some("locked out")));
        assert_eq!(app.audit(&admin, "action=auth.login&outcome=failed").await.len(), 3);
    }

    async fn a_disabled_account_cannot_log_in_or_refresh(app) {
        let (_, id) = operator(&app).await;
        let admin = app.admin_token().await;
        let session = login(&app, EMAIL, PASSWORD).await.json();
        let wrong = login(&app, EMAIL, "not the password at all").await;
        let disabled = app.request("POST", &format!("/api/users/{id}/disable"), Some(&admin), None).await;
        assert_eq!(disabled.status, 200, "{}", disabled.text());

        let answer = login(&app, EMAIL, PASSWORD).await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(answer.body, wrong.body, "a disabled account answers like a wrong password");
        let record = newest(&app, &admin, "action=auth.login").await;
        assert_eq!((record["actor_email"].as_str(), record["outcome"].as_str()), (Some(EMAIL), Some("failed")));

        let answer = refresh(&app, &session["refresh_token"]).await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        let refused = app.audit(&admin, &format!("actor_id={id}&outcome=denied")).await;
        assert!(
            refused.iter().any(|r| r["action"].as_str().is_some_and(|a| a.starts_with("auth.refresh"))),
            "the refused refresh is audited: {refused:?}"
        );

        // Enabled again, the password works again.
        let enabled = app.request("POST", &format!("/api/users/{id}/enable"), Some(&admin), None).await;
        assert_eq!(enabled.status, 200, "{}", enabled.text());
        assert_eq!(login(&app, EMAIL, PASSWORD).await.status, 200);
    }

    async fn production_refuses_to_start_without_a_strong_secret(app) {
        let repetitive = "a".repeat(40);
        for (secret, says) in [("", "auth.jwt_secret_file"), ("short", "weak"), (&repetitive, "weak")] {
            let mut config = api_common::config(&app.db.url);
            config.auth.mode = Mode::Production;
            config.auth.jwt_secret = secret.to_owned();
            match control_plane::app::start(config, CancellationToken::new()).await {
                Ok(_) => panic!("production started with the secret {secret:?}"),
                Err(e) => assert!(e.to_string().contains(says), "{secret:?}: {e}"),
            }
        }
        // A strong one starts (on the same, already seeded, database).
        let mut config = api_common::config(&app.db.url);
        config.auth.mode = Mode::Production;
        let shutdown = CancellationToken::new();
        match control_plane::app::start(config, shutdown.clone()).await {
            Ok(running) => {
                assert!(running.first_admin.is_none(), "the database already has its administrator");
                let answer = api_common::send(running.addr, "GET", "/health/ready", &[], b"").await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                shutdown.cancel();
                let _ = running.done.await;
            }
            Err(e) => panic!("production with a strong secret: {e}"),
        }
    }
}
