//! The real `elastic-cart` binary: its configuration errors, its contract when started
//! with the environment a fleet gives it, and its graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use elastic_cart::CRASH_EXIT_STATUS;
use reqwest::StatusCode;
use testkit::Signal;

use crate::helpers::{
    RedisServer, Replica, ReplicaSpec, add_item, bare_client, binary, get_json, start_binary,
    visitor,
};

fn run_with(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elastic-cart"))
        .env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running the binary")
}

/// `--help` documents every environment variable.
#[test]
#[ignore = "integration tier: cargo xtask test integration"]
fn help_lists_every_variable() {
    let output = run_with(&[], &["--help"]);
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for variable in [
        "LISTEN_ADDR",
        "REDIS_URL",
        "REPLICA_ID",
        "SESSION_TTL_SECS",
        "SESSION_COOKIE_SECURE",
        "REDIS_POOL_SIZE",
        "REDIS_COMMAND_TIMEOUT_MS",
        "WORKER_THREADS",
        "STATIC_DIR",
        "SESSION_CHANGE_WAIT_MS",
        "SHUTDOWN_DRAIN_MS",
        "DEMO_CHAOS",
        "APP_VERSION",
    ] {
        assert!(
            help.contains(&format!("env: {variable}")),
            "{variable} missing:\n{help}"
        );
    }
}

/// An invalid setting stops the process at start with a message naming the variable.
#[test]
#[ignore = "integration tier: cargo xtask test integration"]
fn invalid_config_exits_naming_the_variable() {
    for (variable, value) in [
        ("SESSION_TTL_SECS", "soon"),
        ("SESSION_TTL_SECS", "0"),
        ("REDIS_URL", "http://cache:6379"),
        ("REPLICA_ID", "two words"),
        ("LISTEN_ADDR", "everywhere"),
        ("SESSION_COOKIE_SECURE", "maybe"),
        ("REDIS_POOL_SIZE", "0"),
        ("REDIS_COMMAND_TIMEOUT_MS", "-5"),
        ("WORKER_THREADS", "0"),
        ("WORKER_THREADS", "all"),
        ("APP_VERSION", "2 beta"),
    ] {
        let output = run_with(&[(variable, value)], &[]);
        assert!(!output.status.success(), "{variable}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(variable), "{variable}={value}: {stderr}");
    }
}

/// A listen address that cannot be bound is reported with the variable's name.
#[test]
#[ignore = "integration tier: cargo xtask test integration"]
fn an_unbindable_listen_addr_is_reported() {
    let taken = crate::helpers::bind_unclaimed_port();
    let addr = taken.local_addr().unwrap().to_string();
    let output = run_with(&[("LISTEN_ADDR", &addr)], &[]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("LISTEN_ADDR"));
}

/// Started with LISTEN_ADDR, REDIS_URL, REPLICA_ID and APP_VERSION, the binary serves the
/// contract, naming itself and its version.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_binary_serves_the_contract_from_its_environment() {
    let redis = RedisServer::start().await;
    let app = start_binary(&[
        ("REDIS_URL", &redis.url()),
        ("REPLICA_ID", "bin-1"),
        ("APP_VERSION", "2.0.0-rc1"),
    ])
    .await;
    let shopper = visitor();
    let response = add_item(&shopper, &app.url("/api/cart/items"), "cold-brew-jar", 2).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-served-by"], "bin-1");
    let cart: serde_json::Value = get_json(&shopper, &app.url("/api/cart")).await;
    assert_eq!(cart["total_cents"], 4500);
    let health: serde_json::Value = get_json(&shopper, &app.url("/healthz")).await;
    assert_eq!(health["version"], "2.0.0-rc1");
    let page = shopper.get(app.url("/")).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(
        page.contains(r#"<span id="app-version">2.0.0-rc1</span>"#),
        "{page}"
    );
    assert_eq!(
        shopper
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        shopper
            .get(app.url("/static/style.css"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

/// SIGTERM and SIGINT stop the binary cleanly and promptly (exit status 0).
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn sigterm_and_sigint_stop_the_binary_gracefully() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut app = start_binary(&[("REPLICA_ID", "bin-stop")]).await;
        app.signal(signal);
        let status = app.wait_for_exit(Duration::from_secs(10)).await;
        assert!(status.success(), "{signal}: {status}");
    }
}

/// After SIGTERM the binary drains: it keeps answering, with `Connection: close`, and
/// `/readyz` says 503 so balancers move away; then it exits.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_stopping_binary_drains_before_closing() {
    let mut app = start_binary(&[("REPLICA_ID", "bin-drain"), ("SHUTDOWN_DRAIN_MS", "1500")]).await;
    let client = bare_client();
    let before = client.get(app.url("/healthz")).send().await.unwrap();
    assert!(before.headers().get("connection").is_none());

    app.signal(Signal::SIGTERM);
    let readyz = app.url("/readyz");
    crate::helpers::eventually("/readyz to report draining", async || {
        let response = client.get(&readyz).send().await.unwrap();
        response.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let during = client.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(during.status(), StatusCode::OK);
    assert_eq!(during.headers()["connection"], "close");

    let status = app.wait_for_exit(Duration::from_secs(10)).await;
    assert!(status.success());
}

/// With DEMO_CHAOS, the replica that answers the crash button serves nothing more: a
/// request on a connection opened before the crash (nginx keeps such connections) gets no
/// answer, only the connection closed by the exit (so nginx would pass it on), and the
/// process exits with status 70.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_crashed_replica_answers_nothing_more() {
    let mut app = start_binary(&[("REPLICA_ID", "bin-crash"), ("DEMO_CHAOS", "1")]).await;
    let kept_alive = bare_client();
    let before = kept_alive.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(before.status(), StatusCode::OK);
    // Reading the body puts the connection back in the client's pool for the next request.
    before.bytes().await.unwrap();

    let crash = bare_client()
        .post(app.url("/chaos/crash"))
        .send()
        .await
        .unwrap();
    assert_eq!(crash.status(), StatusCode::SEE_OTHER);
    assert_eq!(crash.headers()["connection"], "close");
    let after = kept_alive.get(app.url("/healthz")).send().await;
    let error = after
        .map(|response| response.status())
        .expect_err("the crashed replica answered");
    // A refused connection would mean the replica had already gone, which proves nothing.
    assert!(
        !error.is_connect(),
        "the request was sent only after the exit: {error}"
    );
    let status = app.wait_for_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(CRASH_EXIT_STATUS));
}

/// At the default log level every shop request gets a line, and health checks (probed every
/// few seconds per replica by balancers) get none.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn health_checks_are_not_logged_at_info() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("replica.log");
    let mut spec = ReplicaSpec::new(binary(), &[("REPLICA_ID", "bin-log")]);
    spec.log = Some(log.clone());
    let app = Replica::start(&spec).await;
    let client = bare_client();
    for path in ["/healthz", "/readyz", "/healthz", "/api/cart"] {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    crate::helpers::eventually("the request line of /api/cart", async || {
        std::fs::read_to_string(&log).is_ok_and(|text| text.contains("path=/api/cart"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("served"), "{text}");
    assert!(!text.contains("path=/healthz"), "{text}");
    assert!(!text.contains("path=/readyz"), "{text}");
}
