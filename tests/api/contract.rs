//! The API's machine-readable contract, `GET /api/openapi.json`: that it lists every JSON
//! route the code registers (so no route goes undocumented), and that the service keeps it
//! when the standard API fuzzer, schemathesis, drives it from that document alone: on one
//! replica on Redis, and through nginx over the fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;
use testkit::{FleetOptions, LoopbackFleet};

use crate::helpers::{RedisServer, TestApp, bare_client, binary};

/// The files that register routes, each with the prefix its router is nested under and
/// whether its routes are JSON (in the document) or browser pages (in docs/api.md's
/// "Browser pages").
const ROUTERS: [(&str, &str, bool); 5] = [
    ("src/routes/api.rs", "/api", true),
    ("src/routes/health.rs", "", true),
    ("src/routes/openapi.rs", "", true),
    ("src/routes/pages.rs", "", false),
    ("src/routes/chaos.rs", "", false),
];

/// Every `.route(path, methods)` in `source`, as path -> methods (lowercase). A path given
/// as a constant of the same file (`route(PATH, ...)`) is resolved.
fn registered_routes(source: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut routes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map(|(i, _)| i)
            .expect("a closed .route( call");
        let call = &rest[..end];
        let (first, methods) = call.split_once(',').expect("a path and a method router");
        let first = first.trim();
        let path = match first.strip_prefix('"') {
            Some(literal) => literal.trim_end_matches('"').to_owned(),
            None => constant(source, first),
        };
        let methods = ["get", "post", "put", "delete", "patch"]
            .into_iter()
            .filter(|method| calls(methods, method))
            .map(str::to_owned);
        routes.entry(path).or_default().extend(methods);
        rest = &rest[end..];
    }
    routes
}

/// Whether `code` calls a function named `name` (`get(`, `.delete(`, `routing::post(`).
fn calls(code: &str, name: &str) -> bool {
    let call = format!("{name}(");
    code.match_indices(&call).any(|(at, _)| {
        !code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The value of `const NAME: &str = "...";` in `source`.
fn constant(source: &str, name: &str) -> String {
    let declaration = format!("const {name}: &str = \"");
    let start = source
        .find(&declaration)
        .unwrap_or_else(|| panic!("a route path `{name}` that is not a string constant"))
        + declaration.len();
    let len = source[start..].find('"').expect("a closed string");
    source[start..start + len].to_owned()
}

/// Every route the routers register, as (file, JSON or page, path with its router's
/// prefix, methods).
fn routes_in_code() -> Vec<(&'static str, bool, String, BTreeSet<String>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    for (file, prefix, json) in ROUTERS {
        let source = std::fs::read_to_string(root.join(file)).unwrap();
        let routes = registered_routes(&source);
        assert!(!routes.is_empty(), "no route found in {file}");
        for (path, methods) in routes {
            all.push((file, json, format!("{prefix}{path}"), methods));
        }
    }
    all
}

/// Every route pattern the routers register, as the metrics' `route` label names it, but
/// the demo's crash button (only with `DEMO_CHAOS=1`).
pub(crate) fn route_patterns() -> BTreeSet<String> {
    routes_in_code()
        .into_iter()
        .filter(|(file, ..)| !file.ends_with("chaos.rs"))
        .map(|(_, _, path, _)| path)
        .collect()
}

/// The routes of the OpenAPI document, as path -> methods.
fn documented_routes(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .map(|(path, item)| {
            let methods = item.as_object().expect("a path item").keys().cloned();
            (path.clone(), methods.collect())
        })
        .collect()
}

/// `GET /api/openapi.json` from a fresh replica named `contract`, answered 200; the
/// replica is returned too, to keep serving until the body is read.
async fn fetch_the_document() -> (TestApp, reqwest::Response) {
    let app = TestApp::in_memory("contract").await;
    let response = bare_client()
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    (app, response)
}

/// Every route the routers register that is not a browser page is in the document with
/// the same methods, and the document names no route that the code lacks; browser pages
/// are in docs/api.md instead.
#[tokio::test]
async fn the_openapi_document_lists_every_json_route_the_code_registers() {
    let (_app, response) = fetch_the_document().await;
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let api_reference = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let mut in_code = BTreeMap::new();
    for (file, json, path, methods) in routes_in_code() {
        if json {
            in_code.insert(path, methods);
            continue;
        }
        for method in methods {
            let page = format!("{} {path}", method.to_uppercase());
            assert!(
                api_reference.contains(&format!("`{page}`")),
                "the browser page `{page}` ({file}) is not in docs/api.md"
            );
        }
    }
    assert_eq!(
        documented_routes(&document),
        in_code,
        "the OpenAPI document (left) and the routes the code registers (right) differ"
    );
}

/// The document is JSON, sets no cookie and names the replica like every answer.
#[tokio::test]
async fn the_openapi_document_is_json_and_names_its_replica() {
    let (_app, response) = fetch_the_document().await;
    let headers = response.headers();
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["x-served-by"], "contract");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
}

/// The document never touches the session store: with a session cookie and Redis stopped,
/// the cart answers 503 and the document 200.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_openapi_document_is_served_without_a_session_while_the_store_is_down() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "contract").await;
    let shopper = crate::helpers::visitor();
    assert_eq!(
        app.add(&shopper, "ceramic-mug", 1).await.status(),
        StatusCode::OK
    );
    redis.stop();
    let cart = shopper.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(cart.status(), StatusCode::SERVICE_UNAVAILABLE);
    let document = shopper
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(document.status(), StatusCode::OK);
    let document: Value = document.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
}

/// The seed of schemathesis's generator: fixed, so a run is reproducible and CI tries the
/// same cases each time, as the HTTP fuzz test does; `SCHEMATHESIS_SEED` tries others.
fn schemathesis_seed() -> String {
    std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261207".to_owned())
}

/// Runs schemathesis with every check (and its stateful phase, which follows the
/// document's links) against the service at `base`; panics with its report on any
/// failure.
fn schemathesis_passes(base: &str) {
    let schemathesis = testkit::binaries::python_tool("schemathesis");
    let seed = schemathesis_seed();
    let out = Command::new(&schemathesis)
        .args(["run", &format!("{base}/api/openapi.json")])
        .args(["--url", base, "--checks", "all", "--workers", "1"])
        .args(["--max-examples", "150", "--no-color", "--seed", &seed])
        // No example database: nothing found by an earlier run is replayed in this one.
        .args(["--generation-database", "none"])
        // Its report and cassettes go to a folder of its own, not the repository.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("running schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("generated") || line.starts_with("Seed:"))
        .collect();
    println!("schemathesis at {base}: {}", summary.join("; "));
    assert!(
        out.status.success(),
        "schemathesis found failures at {base}:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// schemathesis, from the document alone, finds nothing on one replica of the release
/// binary on a real Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn schemathesis_finds_nothing_on_a_replica_on_redis() {
    let mut options = FleetOptions::new(binary());
    options.replicas = 1;
    options.balancer = false;
    let fleet = LoopbackFleet::start(options).await;
    let base = fleet.url("");
    tokio::task::spawn_blocking(move || schemathesis_passes(&base))
        .await
        .unwrap();
}

/// The same through nginx (the shipped nginx.conf) over three replicas on one Redis:
/// what nginx answers itself and the round robin between replicas keep the contract too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn schemathesis_finds_nothing_through_nginx_over_the_fleet() {
    let fleet = LoopbackFleet::start(FleetOptions::new(binary())).await;
    let base = fleet.url("");
    tokio::task::spawn_blocking(move || schemathesis_passes(&base))
        .await
        .unwrap();
}

// What schemathesis found before it passed, each kept by a test of our own.

/// A quantity written `2.0` is an integer to JSON Schema (and what a client whose numbers
/// are all floats sends); it counts as 2. A fraction is still refused, changing nothing.
#[tokio::test]
async fn a_whole_quantity_written_as_a_float_counts_as_that_number() {
    let app = TestApp::in_memory("contract").await;
    let shopper = crate::helpers::visitor();
    let set_line = |quantity: f64| {
        shopper
            .put(app.url("/api/cart/items/ceramic-mug"))
            .json(&serde_json::json!({ "quantity": quantity }))
            .send()
    };
    let added = shopper
        .post(app.url("/api/cart/items"))
        .json(&serde_json::json!({"product_id": "ceramic-mug", "quantity": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let added: Value = added.json().await.unwrap();
    assert_eq!(added["item_count"], 2, "{added}");
    assert_eq!(set_line(5.0).await.unwrap().status(), StatusCode::OK);
    let fraction = set_line(1.5).await.unwrap();
    assert_eq!(fraction.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = fraction.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_input");
    assert_eq!(app.cart(&shopper).await["item_count"], 5);
}

/// nginx refuses TRACE itself with a page of its own and no `Allow`; through the shipped
/// nginx.conf it gets the replicas' JSON 405 with the route's `Allow`, as every other
/// method a route does not take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "integration tier: cargo xtask test integration"]
async fn trace_through_nginx_gets_the_json_405_with_the_routes_allow() {
    let mut options = FleetOptions::new(binary());
    options.replicas = 1;
    let fleet = LoopbackFleet::start(options).await;
    let trace = reqwest::Method::from_bytes(b"TRACE").unwrap();
    for (path, allow) in [("/api/cart", "GET,HEAD,DELETE"), ("/healthz", "GET,HEAD")] {
        let response = bare_client()
            .request(trace.clone(), fleet.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED, "{path}");
        let mut allowed: Vec<String> = response.headers()["allow"]
            .to_str()
            .unwrap()
            .split(',')
            .map(|method| method.trim().to_owned())
            .collect();
        allowed.sort();
        let mut expected: Vec<&str> = allow.split(',').collect();
        expected.sort();
        assert_eq!(allowed, expected, "{path}");
        assert!(response.headers().contains_key("x-served-by"), "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{path}");
    }
}

#[test]
fn routes_are_read_with_their_methods_and_constant_paths() {
    let source = r#"
        const PATH: &str = "/x.json";
        Router::new()
            .route("/a/{id}", put(set).layer(guards()).delete(remove))
            .route("/b", axum::routing::post(add).layer(super::body_guards()))
            .route(PATH, get(serve))
    "#;
    let routes = registered_routes(source);
    assert_eq!(
        routes["/a/{id}"],
        BTreeSet::from(["put".to_owned(), "delete".to_owned()])
    );
    assert_eq!(routes["/b"], BTreeSet::from(["post".to_owned()]));
    assert_eq!(routes["/x.json"], BTreeSet::from(["get".to_owned()]));
}
