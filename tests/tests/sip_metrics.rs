//! The SIP series on `/metrics` follow what happens with a real Kamailio
//! (Debian's package, the repo's `deploy/kamailio/kamailio.cfg`): REGISTERs
//! sent, each slot's registration, refused credentials, and REGISTERs that
//! time out once Kamailio is gone. The page stays valid for `promtool`.
//! Every wait is on an observable condition with a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use vss_tests::kamailio::{Kamailio, KamailioOptions};
use vss_tests::{HubProcess, get, metric, wait_for};

const WAIT: Duration = Duration::from_secs(40);

fn registered(api: SocketAddr, number: &str) -> Option<f64> {
    metric(api, &format!("hubd_sip_registered{{slot=\"{number}\"}}"))
}

fn at_least(api: SocketAddr, series: &str, least: f64) -> Option<f64> {
    metric(api, series).filter(|value| *value >= least)
}

/// `promtool check metrics` accepts `body`.
fn assert_promtool_accepts(body: &str) {
    use std::io::Write as _;
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(body.as_bytes())
        .expect("metrics written to promtool");
    let out = promtool.wait_with_output().expect("promtool finishes");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sip_metrics_follow_registration_auth_failures_and_timeouts() {
    let mut kamailio = Kamailio::start(KamailioOptions::default());
    let dir = tempfile::tempdir().expect("a temp dir");
    // 6001 has the right password, 7001 a wrong one. t1_ms = 20: a REGISTER
    // nobody answers times out after 64 × 20 ms.
    let text = format!(
        "[hub]\nid = \"hub-sip-metrics\"\nname = \"SIP metrics test hub\"\ndata_dir = \"{}\"\n\n\
         [api]\nlisten = \"127.0.0.1:0\"\n\n\
         [supervisor]\nrestart_backoff_initial_ms = 600000\nrestart_backoff_max_ms = 600000\n\n\
         [sip]\nregistrars = [\"{}\"]\nlisten = \"127.0.0.1:0\"\nexpires_s = 10\nt1_ms = 20\nmax_auth_failures = 3\n\n\
         [[slots]]\nid = 1\nkind = \"auto\"\nsip_number = \"6001\"\nsip_password = \"secret\"\ndriver = {{ type = \"sim\", latency_ms = 5 }}\n\n\
         [[slots]]\nid = 2\nkind = \"mf\"\nsip_number = \"7001\"\nsip_password = \"wrong\"\ndriver = {{ type = \"sim\", latency_ms = 5 }}\n",
        dir.path().join("data").display(),
        kamailio.addr()
    );
    let config = dir.path().join("hubd.toml");
    std::fs::write(&config, text).expect("config written");
    let (hub, api) = HubProcess::run_config(&config);

    wait_for("6001 registered on /metrics", WAIT, || {
        (registered(api, "6001") == Some(1.0)).then_some(())
    });
    wait_for("7001's refused credentials counted", WAIT, || {
        at_least(api, "hubd_sip_auth_failures_total", 3.0)
    });
    assert_eq!(registered(api, "7001"), Some(0.0));
    let sent = at_least(api, "hubd_sip_register_sent_total", 4.0)
        .expect("6001's two REGISTERs and 7001's at least two counted");
    assert_eq!(metric(api, "hubd_sip_register_timeouts_total"), Some(0.0));
    let (status, body) = get(api, "/metrics");
    assert_eq!(status, 200);
    assert_promtool_accepts(&body);

    // Kamailio gone: 6001's refresh (at half of 10 s) times out.
    kamailio.stop();
    wait_for("a REGISTER timeout counted", WAIT, || {
        at_least(api, "hubd_sip_register_timeouts_total", 1.0)
    });
    wait_for("6001 no longer registered on /metrics", WAIT, || {
        (registered(api, "6001") == Some(0.0)).then_some(())
    });
    let now = metric(api, "hubd_sip_register_sent_total").expect("still rendered");
    assert!(now > sent, "retransmissions counted: {now} <= {sent}");
    let status = hub.terminate();
    assert!(status.success(), "hubd exited with {status}");
}
