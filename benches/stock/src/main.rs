//! `stock-3`'s server: what a Rust user gets today from the crates this project's stack was
//! planned around, to measure the product against (docs/benchmark.md, "Against the stock
//! store").
//!
//! The cart lives in a tower-sessions `Session` stored by tower-sessions-redis-store, wired
//! as that crate's README shows: a fred `Pool`, `RedisStore::new(pool)`,
//! `SessionManagerLayer::new(store)` with an inactivity expiry, and handlers that call
//! `Session::get` and `Session::insert`. tower-sessions loads the record when a handler
//! first reads it (one `GET`) and, if the handler changed it, writes it back after the
//! response is made (`SET .. XX`, or a loop of `SET .. NX` for a new session): the last
//! write wins, so two overlapping changes of one session keep one. The benchmark's
//! lost-update experiment counts what that costs a shopper.
//!
//! Everything else is `bare-3`'s (`benches/fleet/bare.rs`): the same routes, the same
//! cart rules (units per product, no limits), pages of the product's sizes, `X-Served-By`.
//! Three settings differ from the README's example, all to stand in the same place as the
//! product: the cookie is named `cart_session` (the shipped nginx.conf limits changes
//! without that cookie as new sessions) and lives 30 minutes of inactivity, as the
//! product's sessions do, and the listener queues 4096 connections, as the product's. The test kit's replica environment configures it: `LISTEN_ADDR`,
//! `REPLICA_ID`, `REDIS_URL`, `REDIS_POOL_SIZE` (the README's 6 if unset) and
//! `WORKER_THREADS` (as the product: one means tokio's single-threaded scheduler).

#[path = "../../common/cart_page.rs"]
mod cart_page;

use std::sync::OnceLock;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;
use time::Duration;
use tower_sessions::{Expiry, Session, SessionManagerLayer};
use tower_sessions_redis_store::RedisStore;
use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};

use cart_page::{Cart, page};

/// The session's field holding the cart.
const CART_KEY: &str = "cart";

/// This replica's name, for `X-Served-By`.
static SERVED_BY: OnceLock<HeaderValue> = OnceLock::new();

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

fn main() {
    let threads: usize = env("WORKER_THREADS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |n| n.parse().expect("WORKER_THREADS: a number"),
    );
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder.enable_all().build().expect("the async runtime");
    runtime.block_on(serve());
}

async fn serve() {
    let id = env("REPLICA_ID").unwrap_or_else(|| "stock".to_owned());
    SERVED_BY
        .set(HeaderValue::from_str(&id).expect("a header-safe REPLICA_ID"))
        .expect("set once");
    let url = env("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let pool_size = env("REDIS_POOL_SIZE").map_or(6, |n| n.parse().expect("REDIS_POOL_SIZE"));
    let addr = env("LISTEN_ADDR").unwrap_or_else(|| "127.0.0.1:3000".to_owned());

    // The README's wiring.
    let pool = Pool::new(
        Config::from_url(&url).expect("REDIS_URL: a URL"),
        None,
        None,
        None,
        pool_size,
    )
    .expect("a Redis pool");
    let _connections = pool.connect();
    pool.wait_for_connect().await.expect("connecting to Redis");
    let session_store = RedisStore::new(pool);
    let session_layer = SessionManagerLayer::new(session_store)
        .with_secure(false)
        .with_name("cart_session")
        .with_expiry(Expiry::OnInactivity(Duration::minutes(30)));

    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/cart", get(cart_page))
        .route("/api/cart", get(cart_json))
        .route("/api/cart/items", post(add_item))
        .route("/api/cart/items/{product}", put(set_item))
        .layer(session_layer);
    // The product's queue of connections not yet accepted (`TcpListener::bind` takes 128,
    // which a burst of nginx's new upstream connections overflows).
    let addr: std::net::SocketAddr = addr.parse().expect("LISTEN_ADDR: an address");
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .expect("a socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("binding LISTEN_ADDR");
    let listener = socket.listen(4096).expect("listening");
    axum::serve(listener, app).await.expect("serving");
}

fn answer(content_type: &'static str, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(served_by) = SERVED_BY.get() {
        headers.insert("x-served-by", served_by.clone());
    }
    response
}

/// A session the store could not load: 503, as the product and `bare-3` answer.
fn unavailable(err: tower_sessions::session::Error) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, err.to_string()).into_response()
}

async fn cart(session: &Session) -> Result<Cart, Response> {
    session
        .get::<Cart>(CART_KEY)
        .await
        .map(Option::unwrap_or_default)
        .map_err(unavailable)
}

/// The cart as JSON, in the product's shape as far as the benchmark reads it.
fn json(cart: &Cart) -> String {
    let items: Vec<_> = cart
        .iter()
        .map(|(product, quantity)| serde_json::json!({"product_id": product, "quantity": quantity}))
        .collect();
    serde_json::json!({"items": items, "item_count": cart.values().sum::<u32>()}).to_string()
}

async fn healthz() -> Response {
    answer("application/json", r#"{"status":"ok"}"#.to_owned())
}

async fn cart_page(session: Session) -> Response {
    match cart(&session).await {
        Ok(cart) => answer("text/html; charset=utf-8", page(&cart)),
        Err(unavailable) => unavailable,
    }
}

async fn cart_json(session: Session) -> Response {
    match cart(&session).await {
        Ok(cart) => answer("application/json", json(&cart)),
        Err(unavailable) => unavailable,
    }
}

#[derive(Deserialize)]
struct Add {
    product_id: String,
    quantity: u32,
}

#[derive(Deserialize)]
struct Set {
    quantity: u32,
}

/// Reads the cart, applies `apply`, puts it back into the session; tower-sessions writes
/// the session to Redis once the response is made.
async fn change(session: Session, apply: impl FnOnce(&mut Cart)) -> Response {
    let mut cart = match cart(&session).await {
        Ok(cart) => cart,
        Err(unavailable) => return unavailable,
    };
    apply(&mut cart);
    match session.insert(CART_KEY, &cart).await {
        Ok(()) => answer("application/json", json(&cart)),
        Err(err) => unavailable(err),
    }
}

async fn add_item(session: Session, Json(add): Json<Add>) -> Response {
    change(session, |cart| {
        *cart.entry(add.product_id).or_default() += add.quantity;
    })
    .await
}

async fn set_item(session: Session, Path(product): Path<String>, Json(set): Json<Set>) -> Response {
    change(session, |cart| {
        cart.insert(product, set.quantity);
    })
    .await
}
