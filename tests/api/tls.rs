//! `rediss://` really encrypts: the binary talks to a redis-server that only has a TLS port
//! and requires a password, the way ElastiCache's in-transit encryption and AUTH do.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{BinaryApp, RedisServer, free_port, get_json, require_binary, visitor};

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`.
fn make_certificates(dir: &Path) {
    let openssl = require_binary("openssl", "openssl");
    let run = |args: &[&str]| {
        let status = Command::new(&openssl)
            .current_dir(dir)
            .args(args)
            .output()
            .expect("running openssl");
        assert!(status.status.success(), "openssl {args:?}: {status:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

/// With `rediss://user:password@...` the cart works against a TLS-only Redis, and the
/// same server refuses the replica when the URL says plain `redis://`.
#[tokio::test]
async fn rediss_urls_use_tls_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let file = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    let port = free_port();
    let _redis = RedisServer::start_with(
        port,
        vec![
            "--tls-port".into(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
            "--requirepass".into(),
            "s3cret-token".into(),
        ],
    )
    .await;

    let tls_url = format!("rediss://default:s3cret-token@127.0.0.1:{port}");
    let ca = file("ca.pem");
    let app = BinaryApp::start(&[
        ("REDIS_URL", &tls_url),
        ("REPLICA_ID", "tls-1"),
        ("SSL_CERT_FILE", &ca),
    ])
    .await;
    let shopper = visitor();
    let readyz = app.url("/readyz");
    let connecting = Instant::now();
    crate::helpers::eventually("the TLS connection", async || {
        shopper.get(&readyz).send().await.unwrap().status() == StatusCode::OK
    })
    .await;
    let tls_ready_after = connecting.elapsed();
    let response = shopper
        .post(app.url("/api/cart/items"))
        .json(&json!({"product_id": "espresso-beans", "quantity": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cart: serde_json::Value = get_json(&shopper, &app.url("/api/cart")).await;
    assert_eq!(cart["item_count"], 3);

    // The same server over plaintext: never ready, so the success above was TLS. A replica
    // is not ready before it connects either, so it is watched for well past the time the
    // TLS replica took to become ready.
    let plain_url = format!("redis://default:s3cret-token@127.0.0.1:{port}");
    let plain = BinaryApp::start(&[("REDIS_URL", &plain_url), ("REPLICA_ID", "plain-1")]).await;
    let watch_until = Instant::now() + (tls_ready_after * 2).max(Duration::from_secs(2));
    while Instant::now() < watch_until {
        let status = shopper
            .get(plain.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
