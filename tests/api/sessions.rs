//! What the session layer stores in Redis, when, and how it copes with bad cookies and
//! bad records.

use std::time::Duration;

use elastic_cart::session::store::Store;
use fred::prelude::{Expiration, KeysInterface, ServerInterface};
use reqwest::StatusCode;
use reqwest::header::SET_COOKIE;
use serde_json::{Value, json};
use testkit::store_user::{APP_PASSWORD, StoreUser};
use time::OffsetDateTime;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};

use crate::helpers::{
    RedisServer, TestApp, bare_client, get_json, record_key, redis_client, session_cookie, visitor,
};

async fn add_mug(shopper: &reqwest::Client, app: &TestApp) -> String {
    let response = app.add(shopper, "ceramic-mug", 1).await;
    assert_eq!(response.status(), StatusCode::OK);
    session_cookie(&response).expect("a session cookie")
}

/// Browsing without a cookie writes nothing to Redis and sets no cookie; the first cart
/// change creates the session, with an HttpOnly, SameSite=Lax cookie.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn anonymous_browsing_writes_nothing_and_the_first_change_creates_a_session() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let client = redis_client(&redis).await;
    let shopper = visitor();

    for path in [
        "/",
        "/cart",
        "/api/cart",
        "/api/products",
        "/checkout/complete",
    ] {
        let response = shopper.get(app.url(path)).send().await.unwrap();
        assert!(response.status().is_success() || response.status().is_redirection());
        assert!(session_cookie(&response).is_none(), "{path} set a cookie");
    }
    // Clearing an empty cart is no reason to create a session either.
    let cleared = shopper.delete(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(cleared.status(), StatusCode::OK);
    assert_eq!(client.dbsize::<u64>().await.unwrap(), 0);

    let response = shopper
        .post(app.url("/api/cart/items"))
        .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    assert_eq!(client.dbsize::<u64>().await.unwrap(), 1);
}

/// The Redis key of a session expires after the configured inactivity TTL.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_session_key_ttl_follows_the_configured_ttl() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis_ttl(&redis.url(), "replica-a", Duration::from_secs(600)).await;
    let id = add_mug(&visitor(), &app).await;
    let ttl: i64 = redis_client(&redis)
        .await
        .ttl(record_key(&id))
        .await
        .unwrap();
    assert!((590..=600).contains(&ttl), "ttl {ttl}");
}

/// A read costs one GET and writes nothing while more than half the TTL remains; a read
/// past half the TTL moves the expiry back to the full TTL, once.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn reads_refresh_the_expiry_only_past_half_the_ttl() {
    let redis = RedisServer::start().await;
    let ttl = Duration::from_secs(600);
    let app = TestApp::with_redis_ttl(&redis.url(), "replica-a", ttl).await;
    let client = redis_client(&redis).await;
    let shopper = visitor();
    let id = add_mug(&shopper, &app).await;

    redis.reset_stats();
    for _ in 0..5 {
        shopper.get(app.url("/api/cart")).send().await.unwrap();
    }
    let calls = redis.command_calls();
    assert_eq!(calls.get("get"), Some(&5), "{calls:?}");
    for write in ["set", "eval", "evalsha", "expire", "pexpire", "pexpireat"] {
        assert_eq!(calls.get(write), None, "a read issued {write}: {calls:?}");
    }

    // Age the session: 200 s left of 600.
    let stored: Vec<u8> = client.get(record_key(&id)).await.unwrap();
    let mut record: Record = rmp_serde::from_slice(&stored).unwrap();
    record.expiry_date = OffsetDateTime::now_utc() + Duration::from_secs(200);
    let aged = rmp_serde::to_vec(&record).unwrap();
    let _: () = client
        .set(
            record_key(&id),
            aged.as_slice(),
            Some(Expiration::EX(200)),
            None,
            false,
        )
        .await
        .unwrap();

    redis.reset_stats();
    let cart: Value = app.cart(&shopper).await;
    assert_eq!(cart["item_count"], 1);
    let refreshed: i64 = client.ttl(record_key(&id)).await.unwrap();
    assert!(refreshed > 590, "ttl after refresh {refreshed}");
    shopper.get(app.url("/api/cart")).send().await.unwrap();
    let calls = redis.command_calls();
    // One refresh: the compare-and-set script's SET, run once (not on the second read).
    assert_eq!(calls.get("set"), Some(&1), "{calls:?}");
    assert_eq!(
        calls.get("get"),
        Some(&3),
        "two reads, one compare in the script: {calls:?}"
    );
}

/// Garbage and unknown session cookies are treated as no session: 200 with an empty cart,
/// and the bad cookie is cleared.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn garbage_cookies_get_a_fresh_cart() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let unknown_id = Id::default().to_string();
    for cookie in [
        "%%%not-base64%%%".to_owned(),
        "x".repeat(4000),
        "".to_owned(),
        unknown_id,
    ] {
        for path in ["/api/cart", "/cart", "/"] {
            let response = bare_client()
                .get(app.url(path))
                .header("cookie", format!("cart_session={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{path} with {cookie:.20}"
            );
            let set_cookie = response.headers().get(SET_COOKIE).map(|v| v.to_owned());
            assert_eq!(
                session_cookie(&response).as_deref(),
                Some(""),
                "{path} with {cookie:.20} should clear the cookie: {set_cookie:?}"
            );
            assert!(
                set_cookie.unwrap().to_str().unwrap().contains("Max-Age=0"),
                "{path} with {cookie:.20}"
            );
            if path == "/api/cart" {
                let cart: Value = response.json().await.unwrap();
                assert_eq!(cart["item_count"], 0, "{cookie:.20} reads as an empty cart");
            }
        }
        let response = bare_client()
            .post(app.url("/api/cart/items"))
            .header("cookie", format!("cart_session={cookie}"))
            .json(&json!({"product_id": "tea-sampler", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let fresh = session_cookie(&response).expect("a change sets a session cookie");
        assert!(
            !fresh.is_empty() && fresh != cookie,
            "{cookie:.20} -> {fresh}"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["item_count"], 1, "a change starts a fresh cart");
    }
}

/// A record that does not decode (old format, corruption) is a fresh cart and a log line,
/// not a 500; the next change replaces it.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn an_undecodable_record_gives_a_fresh_cart() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    let id = add_mug(&shopper, &app).await;
    let client = redis_client(&redis).await;
    let _: () = client
        .set(
            record_key(&id),
            "{\"old\": \"json format\"}",
            None,
            None,
            false,
        )
        .await
        .unwrap();

    let cart = shopper.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::OK);
    assert_eq!(cart.json::<Value>().await.unwrap()["item_count"], 0);
    assert_eq!(
        shopper.get(app.url("/cart")).send().await.unwrap().status(),
        StatusCode::OK
    );
    add_mug(&shopper, &app).await;
    let cart: Value = app.cart(&shopper).await;
    assert_eq!(cart["item_count"], 1);
}

/// A session key that holds another Redis type (a hash, say) is no session of ours: the
/// visitor gets a fresh cart, not a 503, and the first change starts a new session.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_key_of_another_redis_type_gives_a_fresh_cart() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    let id = add_mug(&shopper, &app).await;
    let key = record_key(&id);
    redis.cli(&["DEL", &key]);
    redis.cli(&["HSET", &key, "field", "value"]);

    let cart = shopper.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::OK);
    assert_eq!(cart.json::<Value>().await.unwrap()["item_count"], 0);
    let new_id = add_mug(&shopper, &app).await;
    assert_ne!(new_id, id);
    let cart: Value = app.cart(&shopper).await;
    assert_eq!(cart["item_count"], 1);
    assert_eq!(
        redis.cli(&["TYPE", &key]).trim(),
        "hash",
        "the foreign key is left alone"
    );
}

/// A cart value in a format this version does not know reads as an empty cart.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_cart_in_an_unknown_format_reads_as_empty() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    let id = add_mug(&shopper, &app).await;
    let client = redis_client(&redis).await;
    let stored: Vec<u8> = client.get(record_key(&id)).await.unwrap();
    let mut record: Record = rmp_serde::from_slice(&stored).unwrap();
    record
        .data
        .insert("cart".into(), json!({"items": "from another version"}));
    let rewritten = rmp_serde::to_vec(&record).unwrap();
    let _: () = client
        .set(
            record_key(&id),
            rewritten.as_slice(),
            Some(Expiration::EX(600)),
            None,
            false,
        )
        .await
        .unwrap();

    let cart = shopper.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::OK);
    assert_eq!(cart.json::<Value>().await.unwrap()["item_count"], 0);
}

/// Saving a session whose key expired or was deleted after it was loaded writes it again
/// instead of failing or dropping the change.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn saving_a_record_that_vanished_writes_it_again() {
    let redis = RedisServer::start().await;
    let settings = elastic_cart::session::store::RedisSettings {
        url: redis.url(),
        pool_size: 1,
        command_timeout: Duration::from_secs(1),
        key_prefix: "elastic-cart:".to_owned(),
        wait_replicas: 0,
        memory_budget_percent: 0,
    };
    let store = Store::redis(&settings, Duration::from_secs(600), &Default::default()).unwrap();
    let client = redis_client(&redis).await;
    crate::helpers::eventually("the store to connect", async || store.probe().await.is_ok()).await;

    let mut record = Record {
        id: Id::default(),
        data: [("cart".to_owned(), json!({"lines": []}))].into(),
        expiry_date: OffsetDateTime::now_utc(),
    };
    store.create(&mut record).await.unwrap();
    let _: () = client
        .del(elastic_cart::session::store::keys::session_key(
            "elastic-cart:",
            &record.id,
        ))
        .await
        .unwrap();

    record
        .data
        .insert("note".into(), json!("changed after the key vanished"));
    store.save(&record).await.unwrap();
    let loaded = store
        .load(&record.id)
        .await
        .unwrap()
        .expect("written again");
    assert_eq!(loaded.data, record.data);
    let ttl: i64 = client
        .ttl(elastic_cart::session::store::keys::session_key(
            "elastic-cart:",
            &record.id,
        ))
        .await
        .unwrap();
    assert!(ttl > 590, "ttl {ttl}");
}

/// Every key the app writes (records, change markers, the fleet heartbeats) starts with
/// `SESSION_KEY_PREFIX`, and two apps with their own prefixes share one Redis without
/// seeing each other's carts, each as a store user that may touch only its own prefix.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn every_key_starts_with_the_prefix_and_apps_sharing_redis_stay_apart() {
    // Each app as a user of its own, fenced to its prefix.
    let redis = RedisServer::builder()
        .app_user(StoreUser::new("shop-eu:", APP_PASSWORD))
        .app_user(StoreUser::new("shop-us:", APP_PASSWORD))
        .start()
        .await;
    let eu = crate::helpers::start_binary(&[
        ("REDIS_URL", &redis.url_for_prefix("shop-eu:")),
        ("REPLICA_ID", "eu"),
        ("SESSION_KEY_PREFIX", "shop-eu:"),
    ])
    .await;
    let us = crate::helpers::start_binary(&[
        ("REDIS_URL", &redis.url_for_prefix("shop-us:")),
        ("REPLICA_ID", "us"),
        ("SESSION_KEY_PREFIX", "shop-us:"),
    ])
    .await;
    let shopper = visitor();
    // The first add creates the session; the second is a change with its marker.
    let mut cookie = None;
    for key in ["prefix-1", "prefix-2"] {
        let response = shopper
            .post(eu.url("/api/cart/items"))
            .header("Idempotency-Key", key)
            .json(&json!({"product_id": "ceramic-mug", "quantity": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        cookie = cookie.or(session_cookie(&response));
    }
    assert_eq!(
        visitor()
            .get(eu.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        reqwest::StatusCode::OK
    );
    let keys = redis.cli(&["--scan"]);
    let keys: Vec<&str> = keys.lines().collect();
    for kind in ["session:{", "applied:{", "fleet"] {
        let wanted = format!("shop-eu:{kind}");
        assert!(
            keys.iter().any(|key| key.starts_with(&wanted)),
            "no {wanted}: {keys:?}"
        );
    }
    // The other app, which served nothing, wrote only its fleet heartbeat, under its prefix.
    assert!(
        keys.iter()
            .all(|key| key.starts_with("shop-eu:") || *key == "shop-us:fleet"),
        "{keys:?}"
    );

    // The same cookie sent to the other app finds no cart there.
    let cookie = format!("cart_session={}", cookie.expect("a session cookie"));
    let elsewhere: Value = bare_client()
        .get(us.url("/api/cart"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(elsewhere["item_count"], 0, "{elsewhere}");
    let here: Value = get_json(&shopper, &eu.url("/api/cart")).await;
    assert_eq!(here["item_count"], 2, "{here}");
}

/// The `Set-Cookie` values of `response` for the cookie `name`.
fn set_cookies_named<'a>(response: &'a reqwest::Response, name: &str) -> Vec<&'a str> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .filter(|value| value.split_once('=').is_some_and(|(n, _)| n == name))
        .collect()
}

/// A cookie's value and its attributes, in lower case and sorted.
fn cookie_parts(set_cookie: &str) -> (String, Vec<String>) {
    let mut parts = set_cookie.split(';').map(str::trim);
    let value = parts.next().unwrap().split_once('=').unwrap().1.to_owned();
    let mut attributes: Vec<String> = parts.map(str::to_ascii_lowercase).collect();
    attributes.sort();
    (value, attributes)
}

/// An add through the JSON API carrying `cookie` (a whole `Cookie` header), if any.
async fn add_with_cookie(app: &TestApp, cookie: Option<&str>) -> reqwest::Response {
    let mut request = bare_client()
        .post(app.url("/api/cart/items"))
        .json(&json!({"product_id": "ceramic-mug", "quantity": 1}));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

/// The cart that `cookie` (a whole `Cookie` header) finds, and the answer's `Set-Cookie`s.
async fn cart_with_cookie(app: &TestApp, cookie: &str) -> (Value, Vec<String>) {
    let response = bare_client()
        .get(app.url("/api/cart"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let set: Vec<String> = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    (response.json().await.unwrap(), set)
}

/// With `SESSION_COOKIE_SECURE=true` the session cookie is `__Host-cart_session`, with
/// what a browser requires of a `__Host-` cookie (Secure, Path=/, no Domain), HttpOnly and
/// SameSite=Lax; no plain `cart_session` is set.
#[tokio::test]
async fn with_secure_cookies_the_session_cookie_is_host_prefixed() {
    let app = TestApp::in_memory_secure("secure").await;
    let response = add_with_cookie(&app, None).await;
    assert!(set_cookies_named(&response, "cart_session").is_empty());
    let set = set_cookies_named(&response, "__Host-cart_session");
    assert_eq!(set.len(), 1, "{set:?}");
    let (value, attributes) = cookie_parts(set[0]);
    assert!(!value.is_empty());
    assert_eq!(attributes, ["httponly", "path=/", "samesite=lax", "secure"]);

    let (cart, set) = cart_with_cookie(&app, &format!("__Host-cart_session={value}")).await;
    assert_eq!(cart["item_count"], 1, "{cart}");
    assert!(set.is_empty(), "{set:?}");
}

/// A visitor whose browser still holds the plain `cart_session` when the fleet switches
/// to secure cookies keeps the cart: the plain cookie finds it, a change through it lands
/// in it, and the answers move the browser to `__Host-cart_session` (the same session)
/// and expire the plain cookie. Where both are sent, the `__Host-` one counts.
#[tokio::test]
async fn with_secure_cookies_a_plain_cookie_from_before_still_finds_its_cart() {
    let app = TestApp::in_memory_secure("secure").await;
    let created = add_with_cookie(&app, None).await;
    let (id, _) = cookie_parts(set_cookies_named(&created, "__Host-cart_session")[0]);
    let plain = format!("cart_session={id}");

    let (cart, set) = cart_with_cookie(&app, &plain).await;
    assert_eq!(cart["item_count"], 1, "{cart}");
    let moved: Vec<_> = set
        .iter()
        .filter(|value| value.starts_with("__Host-cart_session="))
        .collect();
    assert_eq!(moved.len(), 1, "{set:?}");
    assert_eq!(
        cookie_parts(moved[0]),
        (
            id.clone(),
            ["httponly", "path=/", "samesite=lax", "secure"]
                .map(str::to_owned)
                .to_vec()
        )
    );
    let expired: Vec<_> = set
        .iter()
        .filter(|value| value.starts_with("cart_session="))
        .collect();
    assert_eq!(expired.len(), 1, "{set:?}");
    assert!(expired[0].starts_with("cart_session=;"), "{set:?}");
    assert!(expired[0].contains("Max-Age=0"), "{set:?}");

    // A change with only the plain cookie lands in the same cart, and sets one
    // `__Host-` cookie naming the same session.
    let changed = add_with_cookie(&app, Some(&plain)).await;
    let set = set_cookies_named(&changed, "__Host-cart_session");
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(cookie_parts(set[0]).0, id);
    let (cart, _) = cart_with_cookie(&app, &format!("__Host-cart_session={id}")).await;
    assert_eq!(cart["item_count"], 2, "{cart}");

    // Both sent: the `__Host-` cookie is the session (here a new one), the plain one
    // is only expired.
    let fresh = add_with_cookie(&app, None).await;
    let (other, _) = cookie_parts(set_cookies_named(&fresh, "__Host-cart_session")[0]);
    let both = format!("{plain}; __Host-cart_session={other}");
    let (cart, set) = cart_with_cookie(&app, &both).await;
    assert_eq!(cart["item_count"], 1, "{cart}");
    assert!(
        set.iter().all(|value| value.starts_with("cart_session=;")) && set.len() == 1,
        "{set:?}"
    );
}

/// Without `SESSION_COOKIE_SECURE` (the plain HTTP demo) the cookie is `cart_session`
/// as before, without Secure, and a `__Host-` cookie means nothing: no move, no expiry.
#[tokio::test]
async fn without_secure_cookies_the_session_cookie_is_unchanged() {
    let app = TestApp::in_memory("plain").await;
    let response = add_with_cookie(&app, None).await;
    assert!(set_cookies_named(&response, "__Host-cart_session").is_empty());
    let set = set_cookies_named(&response, "cart_session");
    assert_eq!(set.len(), 1, "{set:?}");
    let (id, attributes) = cookie_parts(set[0]);
    assert_eq!(attributes, ["httponly", "path=/", "samesite=lax"]);

    let (cart, set) = cart_with_cookie(&app, &format!("cart_session={id}")).await;
    assert_eq!(cart["item_count"], 1, "{cart}");
    assert!(set.is_empty(), "{set:?}");
    let (cart, set) = cart_with_cookie(&app, &format!("__Host-cart_session={id}")).await;
    assert_eq!(cart["item_count"], 0, "{cart}");
    assert!(set.is_empty(), "{set:?}");
}
