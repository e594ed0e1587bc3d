//! `bare-3`'s server: the least a server of the product's shape can do, written for the
//! benchmark only (never shipped), to tell what our own stack costs on top of it.
//!
//! It answers the benchmark's requests exactly as the product does on the wire and in
//! Redis: a read is one `GET` of the session's key; a change is that `GET` and one
//! `EVALSHA` of a compare-and-set script of the product's shape (compare the stored bytes,
//! `SET .. PXAT`, `SET` a marker), a new session one `SET NX`; pages have the product's
//! sizes (an empty cart 1,639 bytes, a cart page 2,170 bytes plus 1,040 per line). It has
//! none of the rest: no session layer, no templates, no security headers, no logging, no
//! request deadlines, no metrics.
//!
//! The benchmark binary runs it when started with `BENCH_BARE_SERVER=1` (the test kit's
//! replicas get `LISTEN_ADDR`, `REPLICA_ID` and `REDIS_URL`), so it needs no target of its
//! own.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use fred::prelude::{
    Builder, ClientLike, Config, Expiration, KeysInterface, LuaInterface, Pool, SetOptions,
};
use fred::types::Value;

use crate::cart_page::{Cart, page};

/// The environment variable that makes the benchmark binary this server.
pub(crate) const ENV: &str = "BENCH_BARE_SERVER";

const COOKIE: &str = "cart_session";
const TTL: Duration = Duration::from_secs(1800);
const MARKER_TTL_MS: i64 = 30_000;

/// The product's compare-and-set, in shape: compare, replace with an expiry, leave a marker.
const REPLACE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  return 1
end
return 0
";

struct Shared {
    redis: Pool,
    served_by: HeaderValue,
    sha: String,
}

/// Serves until killed; `None` if `BENCH_BARE_SERVER` is not set.
pub(crate) fn serve_if_asked() -> Option<()> {
    std::env::var_os(ENV)?;
    let addr: std::net::SocketAddr = std::env::var("LISTEN_ADDR")
        .expect("LISTEN_ADDR")
        .parse()
        .expect("LISTEN_ADDR: an address");
    let id = std::env::var("REPLICA_ID").unwrap_or_else(|_| "bare".to_owned());
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let redis = Builder::from_config(Config::from_url(&url).expect("REDIS_URL: a URL"))
            .build_pool(1)
            .expect("a Redis pool");
        redis.init().await.expect("connecting to Redis");
        let shared = Arc::new(Shared {
            redis,
            served_by: HeaderValue::from_str(&id).expect("a header-safe REPLICA_ID"),
            sha: fred::util::sha1_hash(REPLACE),
        });
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/cart", get(cart_page))
            .route("/api/cart", get(cart_json))
            .route("/api/cart/items", post(add_item))
            .route("/api/cart/items/{product}", put(set_item))
            .with_state(shared);
        // The product's queue of connections not yet accepted (its `LISTEN_BACKLOG`).
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket.bind(addr).expect("binding");
        let listener = socket.listen(4096).expect("listening");
        axum::serve(listener, app).await.expect("serving");
    });
    Some(())
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_owned())
    })
}

fn key(id: &str) -> String {
    format!("bare:session:{{{id}}}")
}

fn answer(shared: &Shared, content_type: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-served-by", shared.served_by.clone());
    response
}

fn unavailable(err: fred::error::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
}

/// The stored bytes of the visitor's session and its cart, if it has one.
async fn load(shared: &Shared, id: &str) -> Result<Option<(Bytes, Cart)>, fred::error::Error> {
    let stored: Option<Bytes> = shared.redis.get(key(id)).await?;
    Ok(stored.map(|bytes| {
        let cart = serde_json::from_slice(&bytes).unwrap_or_default();
        (bytes, cart)
    }))
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    answer(&shared, "application/json", r#"{"status":"ok"}"#.to_owned())
}

/// The visitor's cart: empty without a session (no Redis), else one `GET`.
async fn visitors_cart(shared: &Shared, headers: &HeaderMap) -> Result<Cart, Response> {
    let Some(id) = session_id(headers) else {
        return Ok(Cart::new());
    };
    match load(shared, &id).await {
        Ok(found) => Ok(found.map(|(_, cart)| cart).unwrap_or_default()),
        Err(err) => Err(unavailable(err)),
    }
}

async fn cart_page(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match visitors_cart(&shared, &headers).await {
        Ok(cart) => answer(&shared, "text/html; charset=utf-8", page(&cart)),
        Err(unavailable) => unavailable,
    }
}

async fn cart_json(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match visitors_cart(&shared, &headers).await {
        Ok(cart) => answer(&shared, "application/json", json(&cart)),
        Err(unavailable) => unavailable,
    }
}

fn json(cart: &Cart) -> String {
    serde_json::to_string(&serde_json::json!({ "items": cart })).unwrap()
}

#[derive(serde::Deserialize)]
struct Add {
    product_id: String,
    quantity: u32,
}

#[derive(serde::Deserialize)]
struct Set {
    quantity: u32,
}

async fn add_item(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    axum::Json(add): axum::Json<Add>,
) -> Response {
    change(&shared, &headers, |cart| {
        *cart.entry(add.product_id.clone()).or_default() += add.quantity;
    })
    .await
}

async fn set_item(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(product): Path<String>,
    axum::Json(set): axum::Json<Set>,
) -> Response {
    change(&shared, &headers, |cart| {
        cart.insert(product.clone(), set.quantity);
    })
    .await
}

/// A change as the product makes one: read, compare-and-set, retry on a lost race; a
/// visitor without a session gets one (`SET NX`) and its cookie.
async fn change(shared: &Shared, headers: &HeaderMap, apply: impl Fn(&mut Cart)) -> Response {
    let expire_at = || {
        (SystemTime::now() + TTL)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    if let Some(id) = session_id(headers) {
        loop {
            let (stored, mut cart) = match load(shared, &id).await {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(err) => return unavailable(err),
            };
            apply(&mut cart);
            let bytes = json(&cart);
            let marker = format!("bare:applied:{{{id}}}:{:016x}", fastrand::u64(..));
            let args: Vec<Value> = vec![
                Value::from(stored),
                Value::from(bytes.as_str()),
                Value::from(expire_at()),
                Value::from(MARKER_TTL_MS),
            ];
            let replaced: Result<i64, _> = shared
                .redis
                .next()
                .evalsha(&shared.sha, vec![key(&id), marker.clone()], args.clone())
                .await;
            let replaced = match replaced {
                Err(err) if err.details().starts_with("NOSCRIPT") => {
                    shared
                        .redis
                        .next()
                        .eval(REPLACE, vec![key(&id), marker], args)
                        .await
                }
                other => other,
            };
            match replaced {
                Ok(1) => return answer(shared, "application/json", bytes),
                Ok(_) => continue,
                Err(err) => return unavailable(err),
            }
        }
    }
    let id = format!("{:032x}", fastrand::u128(..));
    let mut cart = Cart::new();
    apply(&mut cart);
    let bytes = json(&cart);
    let created: Result<Value, _> = shared
        .redis
        .set(
            key(&id),
            bytes.as_str(),
            Some(Expiration::PXAT(expire_at())),
            Some(SetOptions::NX),
            false,
        )
        .await;
    if let Err(err) = created {
        return unavailable(err);
    }
    let mut response = answer(shared, "application/json", bytes);
    let cookie = format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("a header-safe cookie"),
    );
    response
}
