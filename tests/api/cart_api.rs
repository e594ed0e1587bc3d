//! The JSON API contract, served by two replicas that share one Redis.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{RedisServer, TestApp, add_item, two_replicas, visitor};

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

/// `GET /api/products` lists the catalog with exactly the contract's fields.
#[tokio::test]
async fn products_list_the_catalog_with_integer_prices() {
    let app = TestApp::in_memory("solo").await;
    let body = json(
        visitor()
            .get(app.url("/api/products"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let products = body.as_array().unwrap();
    assert!((8..=12).contains(&products.len()));
    for product in products {
        let mut keys: Vec<_> = product.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(keys, ["description", "id", "name", "price_cents"]);
        assert!(product["price_cents"].is_u64());
    }
}

/// A cart changed through one replica is read and changed through the other: the only
/// state is the session in Redis.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_cart_changed_on_one_replica_is_read_on_the_other() {
    let (_redis, a, b) = two_replicas().await;
    let shopper = visitor();

    let added = add_item(&shopper, &a.url("/api/cart/items"), "ceramic-mug", 2).await;
    assert_eq!(added.status(), StatusCode::OK);
    assert_eq!(added.headers()["x-served-by"], "replica-a");

    let cart = json(shopper.get(b.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(
        cart,
        json!({
            "items": [{"product_id": "ceramic-mug", "name": "Ceramic mug", "quantity": 2,
                       "unit_price_cents": 1400, "line_total_cents": 2800}],
            "item_count": 2, "total_cents": 2800, "served_by": "replica-b"
        })
    );

    add_item(&shopper, &b.url("/api/cart/items"), "digital-scale", 1).await;
    let set = shopper
        .put(a.url("/api/cart/items/ceramic-mug"))
        .json(&json!({"quantity": 5}))
        .send()
        .await
        .unwrap();
    let cart = json(set).await;
    assert_eq!(cart["item_count"], 6);
    assert_eq!(cart["total_cents"], 5 * 1400 + 3999);

    let removed = json(
        shopper
            .delete(b.url("/api/cart/items/ceramic-mug"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(removed["items"].as_array().unwrap().len(), 1);
    assert_eq!(removed["items"][0]["product_id"], "digital-scale");

    let zeroed = json(
        shopper
            .put(a.url("/api/cart/items/digital-scale"))
            .json(&json!({"quantity": 0}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(zeroed["item_count"], 0);

    add_item(&shopper, &a.url("/api/cart/items"), "tea-sampler", 3).await;
    let cleared = json(shopper.delete(b.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(cleared["items"], json!([]));
    let cart = json(shopper.get(a.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(cart["total_cents"], 0);
}

/// Every response names the replica that produced it, errors and static files included.
#[tokio::test]
async fn every_response_carries_x_served_by() {
    let app = TestApp::in_memory("replica-x").await;
    let client = visitor();
    for path in [
        "/",
        "/cart",
        "/api/cart",
        "/api/products",
        "/healthz",
        "/readyz",
        "/static/style.css",
        "/no-such-page",
        "/api/no-such-thing",
    ] {
        let response = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.headers()["x-served-by"], "replica-x", "{path}");
    }
}

/// Each kind of bad input gets its status and a JSON error, and leaves the stored cart
/// exactly as it was.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-a").await;
    let shopper = visitor();
    add_item(&shopper, &app.url("/api/cart/items"), "ceramic-mug", 98).await;
    let before = json(shopper.get(app.url("/api/cart")).send().await.unwrap()).await;

    let items = app.url("/api/cart/items");
    let big = format!(
        r#"{{"product_id":"ceramic-mug","quantity":1,"pad":"{}"}}"#,
        "x".repeat(17 * 1024)
    );
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "unicorn", "quantity": 1})),
            StatusCode::NOT_FOUND,
            "unknown_product",
        ),
        (
            shopper
                .put(app.url("/api/cart/items/unicorn"))
                .json(&json!({"quantity": 1})),
            StatusCode::NOT_FOUND,
            "unknown_product",
        ),
        (
            shopper.delete(app.url("/api/cart/items/unicorn")),
            StatusCode::NOT_FOUND,
            "unknown_product",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": 0})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": 100})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": "two"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": 1.5})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper.post(&items).json(&json!({"quantity": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            // serde would read the struct from an array; no client means that.
            shopper.post(&items).json(&json!(["ceramic-mug", 1])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .put(app.url("/api/cart/items/ceramic-mug"))
                .json(&json!({"quantity": 100})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
        ),
        (
            shopper
                .post(&items)
                .json(&json!({"product_id": "ceramic-mug", "quantity": 2})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "line_full",
        ),
        (
            shopper
                .post(&items)
                .header("content-type", "application/json")
                .body(r#"{"product_id": "ceramic-mug", "quantity": "#),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            shopper
                .post(&items)
                .body(r#"{"product_id":"ceramic-mug","quantity":1}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            shopper
                .post(&items)
                .header("content-type", "application/json")
                .body(big),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            shopper.patch(app.url("/api/cart")),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "expected {code}");
        let body = json(response).await;
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 5);
    }

    let after = json(shopper.get(app.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(after, before);

    // Our error body keeps what the router said: a 405 still lists the allowed methods.
    let wrong_method = shopper.patch(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "GET,HEAD,DELETE");
}

/// With an `Idempotency-Key`, a retry of a change (on any replica) gets the first answer
/// again, status and body, and changes nothing; the same key with another request is 422;
/// a malformed key is 400; changes without a key or with another key apply as usual.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn a_retry_with_the_same_idempotency_key_changes_nothing() {
    let (_redis, a, b) = two_replicas().await;
    let shopper = visitor();
    add_item(&shopper, &a.url("/api/cart/items"), "ceramic-mug", 1).await;
    let keyed_add = |app: &crate::helpers::TestApp, key: &str, quantity: u32| {
        shopper
            .post(app.url("/api/cart/items"))
            .header("Idempotency-Key", key)
            .json(&json!({"product_id": "tea-sampler", "quantity": quantity}))
            .send()
    };
    let first = keyed_add(&a, "\"add-tea-1\"", 2).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let first = first.text().await.unwrap();

    // The retry lands on the other replica and gets the first answer, byte for byte.
    let retry = keyed_add(&b, "add-tea-1", 2).await.unwrap();
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.text().await.unwrap(), first);
    let cart = json(shopper.get(b.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(cart["item_count"], 3, "the retry added nothing");

    let reused = keyed_add(&b, "add-tea-1", 5).await.unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        json(reused).await["error"]["code"],
        "idempotency_key_reused"
    );
    for bad in ["", "two words", &"x".repeat(256)] {
        let response = keyed_add(&a, bad, 1).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad:?}");
        assert_eq!(
            json(response).await["error"]["code"],
            "invalid_idempotency_key"
        );
    }
    let cart = json(shopper.get(a.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(cart["item_count"], 3, "refused requests changed the cart");

    assert_eq!(
        keyed_add(&a, "add-tea-2", 2).await.unwrap().status(),
        StatusCode::OK
    );
    let cleared = shopper
        .delete(b.url("/api/cart"))
        .header("Idempotency-Key", "clear-1")
        .send()
        .await
        .unwrap();
    assert_eq!(json(cleared).await["item_count"], 0);
    add_item(&shopper, &a.url("/api/cart/items"), "ceramic-mug", 1).await;
    let again = shopper
        .delete(a.url("/api/cart"))
        .header("Idempotency-Key", "clear-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json(again).await["item_count"],
        0,
        "the first answer, replayed"
    );
    let cart = json(shopper.get(a.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(
        cart["item_count"], 1,
        "the replayed clear did not clear again"
    );
}

/// Sends `head` and `body` on a raw connection, then reads the whole answer (the server
/// closes or answers within `limit`); returns the status line's code and the body.
async fn raw_exchange(
    app: &TestApp,
    head: &str,
    body: &[u8],
    limit: std::time::Duration,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if n == 0 || text.contains("\r\n\r\n{") && text.trim_end().ends_with('}') {
                break;
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("the server neither answered nor closed");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A declared body over the 16 KiB limit is refused at once, before any of it is read,
/// and a body that is not all there within the body deadline (stalled, or trickling a
/// byte at a time) ends the request with 408; they answer with the JSON error and leave
/// the cart as it was.
#[tokio::test]
async fn oversized_and_slow_bodies_are_refused_promptly() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::in_memory("replica-a").await;
    let post = |length: usize| {
        format!(
            "POST /api/cart/items HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\n\r\n"
        )
    };
    let started = Instant::now();
    let (status, body) = raw_exchange(&app, &post(100_000_000), b"{", Duration::from_secs(3)).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let started = Instant::now();
    let limit = elastic_cart::BODY_READ_TIMEOUT + Duration::from_secs(3);
    let (status, body) = raw_exchange(&app, &post(50), br#"{"product_id":"#, limit).await;
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("request_timeout"), "{body}");
    assert!(started.elapsed() >= elastic_cart::BODY_READ_TIMEOUT);

    // A byte every 2 s never leaves the connection idle for 5 s; the deadline covers the
    // whole body, so this client is refused too.
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(post(50).as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..8 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(limit, reader.read(&mut answer))
        .await
        .expect("a trickling body was still being read")
        .unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert!(started.elapsed() < limit);
    trickle.abort();

    let cart = json(visitor().get(app.url("/api/cart")).send().await.unwrap()).await;
    assert_eq!(cart["item_count"], 0);
}

/// Sends `head` then `body` in blocks to `addr`, as an HTTP library writes a body (the
/// whole of it before reading, no `Expect: 100-continue`), then reads the answer to the
/// end of the connection: the answer, or what cut the exchange off (a reset).
async fn send_whole(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for block in body.chunks(8192) {
        stream
            .write_all(block)
            .await
            .map_err(|err| format!("the body was cut off: {err}"))?;
    }
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .await
        .map_err(|err| format!("no answer: {err}"))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// The head of a request to `path` with a body of `length` bytes, closing the
/// connection after the answer; `headers` are extra lines, each ending in `\r\n`.
fn head_with_body(method: &str, path: &str, headers: &str, length: usize) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: shop\r\n{headers}Content-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    )
}

/// Sends `head` and `body` 20 times to `addr` and asserts that each answer has `status`
/// and says `says` (our error's code or message), never a reset (nor nginx's 502).
async fn answered_every_time(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    status: u16,
    says: &str,
) {
    for attempt in 0..20 {
        let answer = send_whole(addr, head, body)
            .await
            .unwrap_or_else(|err| panic!("attempt {attempt} of {head:?}: {err}"));
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "attempt {attempt} of {head:?}: {answer}"
        );
        assert!(
            answer.contains(says),
            "attempt {attempt} of {head:?}: {answer}"
        );
    }
}

/// A body over the limit, sent whole before reading as most HTTP clients do (no
/// `Expect: 100-continue`), gets the 413 every time, not a reset: the replica goes on
/// reading and dropping the body after answering. The release binary, as a client meets
/// it (`TEST_REPLICA_BINARY` shows the reset of a build without the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn over_limit_bodies_sent_whole_get_the_413_not_a_reset() {
    let replica = crate::helpers::start_binary(&[]).await;
    let body = vec![b' '; 2 * 1024 * 1024];
    let head = head_with_body(
        "POST",
        "/api/cart/items",
        "Content-Type: application/json\r\n",
        body.len(),
    );
    let says = r#""code":"payload_too_large""#;
    answered_every_time(replica.addr, &head, &body, 413, says).await;
}

/// Refusals given before the body is read, with a 1 MiB body sent whole before reading:
/// a cross-site form post (403 `cross_origin`) and a post to no route (404) are answered
/// every time, straight to a replica (no reset) and through nginx with the shipped
/// nginx.conf (no 502: nginx saw the replica reset 1 time in 20 before). The replica
/// reads and drops the body after answering, whatever refused it. The release binary
/// (`TEST_REPLICA_BINARY` shows the resets of a build without the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn early_refusals_of_a_body_sent_whole_are_answered_not_reset() {
    let replica = crate::helpers::start_binary(&[]).await;
    let nginx = testkit::Nginx::start(&[replica.addr.port()]).await;
    let nginx_addr = std::net::SocketAddr::from(([127, 0, 0, 1], nginx.port));
    let body = vec![b'a'; 1024 * 1024];
    let cross_site = head_with_body(
        "POST",
        "/cart/items",
        "Content-Type: application/x-www-form-urlencoded\r\nOrigin: https://evil.test\r\n",
        body.len(),
    );
    let nowhere = head_with_body(
        "POST",
        "/api/nowhere",
        "Content-Type: application/json\r\n",
        body.len(),
    );
    for addr in [replica.addr, nginx_addr] {
        // A page's refusal: the HTML error page.
        let says = "cross-origin request refused";
        answered_every_time(addr, &cross_site, &body, 403, says).await;
        answered_every_time(addr, &nowhere, &body, 404, r#""code":"not_found""#).await;
    }
    let log = nginx.error_log();
    assert!(
        !log.contains("[error]"),
        "nginx saw the replica fail:\n{log}"
    );
}

/// nginx's own answers (a body over its 1 MiB limit, no replica answering in time, no
/// replica reachable, too many new sessions from one address) have the app's shape: the
/// JSON error under `/api/`, an HTML page elsewhere, `Retry-After` where a retry helps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn nginx_answers_its_own_errors_in_the_apps_shape() {
    use testkit::Signal;
    let mut replica = crate::helpers::start_binary(&[]).await;
    let nginx = testkit::Nginx::start(&[replica.addr.port()]).await;
    let client = crate::helpers::bare_client();
    let big = vec![b'a'; 2 * 1024 * 1024];
    let post = |path: &str, content_type: &str| {
        client
            .post(nginx.url(path))
            .header("content-type", content_type)
            .body(big.clone())
            .send()
    };
    let json = post("/api/cart/items", "application/json").await.unwrap();
    expect_json(json, 413, "payload_too_large", false).await;
    let page = post("/cart/items", "application/x-www-form-urlencoded")
        .await
        .unwrap();
    expect_page(page, 413, "Too large", false).await;

    // A replica that stopped answering: nginx gives up on a read after 3 s.
    replica.signal(Signal::SIGSTOP);
    let json = client.get(nginx.url("/api/cart")).send().await.unwrap();
    expect_json(json, 504, "gateway_timeout", false).await;
    let page = client.get(nginx.url("/cart")).send().await.unwrap();
    expect_page(page, 504, "No answer in time", false).await;
    replica.signal(Signal::SIGCONT);

    // No replica at all.
    replica.signal(Signal::SIGKILL);
    replica
        .wait_for_exit(std::time::Duration::from_secs(5))
        .await;
    let json = client.get(nginx.url("/api/cart")).send().await.unwrap();
    expect_json(json, 502, "bad_gateway", true).await;
    let page = client.get(nginx.url("/cart")).send().await.unwrap();
    expect_page(page, 502, "Unavailable", true).await;

    // More new sessions from this address than nginx lets it start (2048 at once, then
    // 100 a second): the rest get the 429 page.
    let form = "product_id=ceramic-mug&quantity=1";
    let mut refused = None;
    for _ in 0..40 {
        let batch = (0..100).map(|_| {
            client
                .post(nginx.url("/cart/items"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
        });
        refused = join_all(batch)
            .await
            .into_iter()
            .flatten()
            .find(|response| response.status() == StatusCode::TOO_MANY_REQUESTS);
        if refused.is_some() {
            break;
        }
    }
    let page = refused.expect("a 429 within 4000 new sessions from one address");
    expect_page(page, 429, "Too many new carts", true).await;
}

async fn expect_json(response: reqwest::Response, status: u16, code: &str, retry: bool) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers().contains_key("retry-after"),
        retry,
        "{status}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

async fn expect_page(response: reqwest::Response, status: u16, heading: &str, retry: bool) {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    assert_eq!(
        response.headers().contains_key("retry-after"),
        retry,
        "{status}"
    );
    let page = response.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains(&format!("<h1>{heading}</h1>")), "{page}");
}

/// A request head that never completes is closed within the head deadline, so slow clients
/// cannot hold descriptors; heads the HTTP layer refuses by itself (unparsable, a URI or
/// headers over the limits) are answered with the JSON error, not an empty body.
#[tokio::test]
async fn slow_and_refused_request_heads_are_answered_promptly() {
    use std::time::{Duration, Instant};
    let app = TestApp::in_memory("replica-a").await;
    let limit = elastic_cart::server::HEADER_READ_TIMEOUT + Duration::from_secs(3);

    let started = Instant::now();
    let stalled = (0..50).map(|_| {
        raw_exchange(
            &app,
            "GET /api/cart HTTP/1.1\r\nHost: shop\r\nX-Half",
            b"",
            limit,
        )
    });
    for (status, body) in join_all(stalled).await {
        assert_eq!((status, body.as_str()), (0, ""), "a half head was answered");
    }
    assert!(started.elapsed() >= elastic_cart::server::HEADER_READ_TIMEOUT);
    assert!(started.elapsed() < limit);

    let many_headers: String = (0..150).map(|i| format!("X-Header-{i}: 1\r\n")).collect();
    let cases = [
        ("GARBAGE\r\n\r\n".to_owned(), 400, "malformed_request"),
        (
            format!("GET /{} HTTP/1.1\r\nHost: shop\r\n\r\n", "a".repeat(66_000)),
            414,
            "uri_too_long",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: shop\r\n{many_headers}\r\n"),
            431,
            "headers_too_large",
        ),
        (
            format!(
                "GET / HTTP/1.1\r\nHost: shop\r\nX-Big: {}\r\n\r\n",
                "a".repeat(elastic_cart::server::MAX_HEAD_BYTES)
            ),
            431,
            "headers_too_large",
        ),
    ];
    for (head, expected, code) in cases {
        let (status, body) = raw_exchange(&app, &head, b"", Duration::from_secs(3)).await;
        assert_eq!(status, expected, "{body}");
        let body: Value = serde_json::from_str(&body).expect("a JSON error body");
        assert_eq!(body["error"]["code"], code);
    }
}
