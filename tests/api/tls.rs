//! `rediss://` really encrypts: the binary talks to a redis-server that only has a TLS port
//! and requires a password, the way ElastiCache's in-transit encryption and AUTH do.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use testkit::tls::Certificates;

use crate::helpers::{RedisServer, get_json, start_binary, visitor};

/// With `rediss://user:password@...` the cart works against a TLS-only Redis (the app's
/// user, the default user with a password of its own), and the same server refuses the
/// replica when the URL says plain `redis://`.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn rediss_urls_use_tls_and_auth() {
    let certificates = Certificates::new();
    let redis = RedisServer::builder()
        .tls(&certificates)
        .password("s3cret-token")
        .start()
        .await;
    let tls_url = redis.url();
    assert!(tls_url.starts_with("rediss://elastic-cart:"), "{tls_url}");
    let ca = certificates.ca_cert.to_string_lossy().into_owned();
    let app = start_binary(&[
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
    let plain_url = tls_url.replacen("rediss://", "redis://", 1);
    let plain = start_binary(&[("REDIS_URL", &plain_url), ("REPLICA_ID", "plain-1")]).await;
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
