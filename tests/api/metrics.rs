//! `GET /metrics`: the Prometheus series a replica names, parsed as a scraper would, and
//! that they move with what the replica does (requests by route pattern, store
//! operations and their failures, lost compare-and-set races).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;

use crate::helpers::{RedisServer, TestApp, add_item, simultaneous_adds, start_session, visitor};

/// The samples of an OpenMetrics text, by series (name and labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("not a sample: {line}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line}"));
            (series.to_owned(), value)
        })
        .collect()
}

async fn scrape(app: &TestApp) -> BTreeMap<String, f64> {
    let response = visitor().get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    samples(&text)
}

fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Every named series is there, and requests count by method, route pattern (never the
/// raw path) and status, with a duration per route.
#[tokio::test]
async fn metrics_name_every_series_and_count_requests_by_route_pattern() {
    let app = TestApp::in_memory("replica-m").await;
    let before = scrape(&app).await;
    let build = format!(
        r#"elastic_cart_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&before, &build), 1.0, "{before:#?}");
    assert_eq!(value(&before, "elastic_cart_draining"), 0.0);
    for series in [
        "elastic_cart_session_change_conflicts_total",
        "elastic_cart_session_busy_total",
        "elastic_cart_expiry_refreshes_total",
    ] {
        assert!(before.contains_key(series), "{series} missing: {before:#?}");
    }

    let shopper = visitor();
    for _ in 0..3 {
        shopper.get(app.url("/api/cart")).send().await.unwrap();
    }
    add_item(&shopper, &app.url("/api/cart/items"), "ceramic-mug", 1).await;
    let removed = shopper
        .delete(app.url("/api/cart/items/ceramic-mug"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::OK);
    shopper.get(app.url("/no/such/page")).send().await.unwrap();

    let after = scrape(&app).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved(r#"elastic_cart_http_requests_total{method="GET",route="/api/cart",status="200"}"#),
        3.0
    );
    assert_eq!(
        moved(
            r#"elastic_cart_http_requests_total{method="POST",route="/api/cart/items",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(
            r#"elastic_cart_http_requests_total{method="DELETE",route="/api/cart/items/{product_id}",status="200"}"#
        ),
        1.0
    );
    assert_eq!(
        moved(r#"elastic_cart_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"elastic_cart_http_request_duration_seconds_count{route="/api/cart"}"#),
        3.0
    );
    assert_eq!(
        value(
            &after,
            r#"elastic_cart_http_request_duration_seconds_bucket{le="+Inf",route="/api/cart"}"#
        ),
        value(
            &after,
            r#"elastic_cart_http_request_duration_seconds_count{route="/api/cart"}"#
        ),
    );
    assert!(
        !after
            .keys()
            .any(|series| series.contains("ceramic-mug") || series.contains("/no/such")),
        "a raw path became a label: {after:#?}"
    );
}

/// The families docs/operations.md lists ("## Metrics"), with their type: (name as listed,
/// type).
fn documented_families() -> Vec<(String, String)> {
    let docs = include_str!("../../docs/operations.md");
    let table = docs
        .split("\n## Metrics\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("docs/operations.md has a ## Metrics section");
    let families: Vec<_> = table
        .lines()
        .filter_map(|line| {
            let cells: Vec<_> = line.split('|').map(str::trim).collect();
            let name = cells
                .get(1)?
                .strip_prefix("`elastic_cart_")?
                .strip_suffix('`')?;
            Some((format!("elastic_cart_{name}"), cells.get(2)?.to_string()))
        })
        .collect();
    assert!(families.len() >= 9, "{families:?}");
    families
}

/// The path of every `METHOD /path` docs/api.md names, with a product id for a parameter.
fn documented_paths() -> Vec<String> {
    let docs = include_str!("../../docs/api.md");
    let paths: Vec<String> = docs
        .split('`')
        .filter_map(|code| {
            let (method, path) = code.split_once(' ')?;
            let known = ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&method);
            (known && path.starts_with('/')).then(|| {
                path.split('/')
                    .map(|part| {
                        if part.starts_with('{') {
                            "ceramic-mug"
                        } else {
                            part
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            })
        })
        .collect();
    assert!(paths.len() >= 15, "{paths:?}");
    paths
}

/// The label values of `label` among the samples of `series` (a name up to its `{`).
fn label_values(samples: &BTreeMap<String, f64>, series: &str, label: &str) -> BTreeSet<String> {
    let prefix = format!("{series}{{");
    let key = format!("{label}=\"");
    samples
        .keys()
        .filter_map(|s| s.strip_prefix(&prefix))
        .filter_map(|labels| {
            let start = labels.find(&key)? + key.len();
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_owned())
        })
        .collect()
}

/// The store error kinds and operations the docs table names.
const KINDS: [&str; 4] = ["timeout", "unavailable", "refusing_writes", "unconfirmed"];
const OPS: [&str; 11] = [
    "load",
    "create",
    "save",
    "delete",
    "snapshot",
    "replace",
    "confirm",
    "probe",
    "heartbeat",
    "fleet",
    "leave",
];

/// Every route label a replica reports: each pattern the routers register (read from
/// the code, as the OpenAPI test does), static files, and requests no route matches.
fn routes() -> BTreeSet<String> {
    let mut routes = crate::contract::route_patterns();
    routes.extend(["/static/{file}", "unmatched"].map(String::from));
    routes
}

/// A fresh replica's first scrape already has every family the docs list, with its type
/// and help, and every store error kind, store operation and route pattern at 0: an alert
/// on `increase(elastic_cart_store_errors_total[..])` can then see the first error, which
/// it cannot on a series that appears with it. Then every route pattern is requested: each
/// is counted under a label that was there from the start, so a route added to a router but
/// not to `routes::PATTERNS` fails here.
#[tokio::test]
async fn first_scrape_shows_every_documented_family_and_known_label_at_zero() {
    let app = TestApp::in_memory("replica-first").await;
    let response = visitor().get(app.url("/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    for (name, kind) in documented_families() {
        // OpenMetrics names a counter's family without its `_total`.
        let family = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .expect("a counter ends in _total"),
            _ => name.as_str(),
        };
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family} {kind}")),
            "{family} is not a {kind} in the first scrape:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {family} "))),
            "{family} has no help:\n{text}"
        );
    }
    let first = samples(&text);
    for kind in KINDS {
        let series = format!(r#"elastic_cart_store_errors_total{{kind="{kind}"}}"#);
        assert_eq!(first.get(&series), Some(&0.0), "{series}: {first:#?}");
    }
    for op in OPS {
        let series = format!(r#"elastic_cart_store_command_duration_seconds_count{{op="{op}"}}"#);
        assert_eq!(first.get(&series), Some(&0.0), "{series}: {first:#?}");
    }
    let durations = "elastic_cart_http_request_duration_seconds_count";
    let routes = label_values(&first, durations, "route");
    assert_eq!(routes, self::routes(), "{first:#?}");
    for route in &routes {
        let series = format!(r#"{durations}{{route="{route}"}}"#);
        assert_eq!(first.get(&series), Some(&0.0), "{series}");
    }

    // Each pattern, requested once (a GET: a route that takes only POST answers 405,
    // counted under its pattern all the same), plus paths no route matches.
    let shopper = visitor();
    let mut paths: Vec<String> = routes
        .iter()
        .filter(|route| route.starts_with('/'))
        .map(|route| {
            route
                .replace("{product_id}", "ceramic-mug")
                .replace("{file}", "style.css")
        })
        .collect();
    paths.extend(["/no/such/page", "/api/no-such-thing", "/static/none.css"].map(String::from));
    // And every route docs/api.md names (`GET /api/cart`, `POST /cart/items/{id}`), so a
    // route that is documented but missing from `routes::PATTERNS` fails below.
    paths.extend(documented_paths());
    for path in &paths {
        shopper.get(app.url(path)).send().await.unwrap();
    }
    let after = scrape(&app).await;
    assert_eq!(
        label_values(&after, durations, "route"),
        routes,
        "a request was counted under a route the first scrape did not show"
    );
    for route in &routes {
        let series = format!(r#"{durations}{{route="{route}"}}"#);
        assert!(value(&after, &series) >= 1.0, "{route} was never matched");
    }
}

/// On Redis: each store operation is timed, simultaneous changes of one session count
/// their lost races, and a store outage counts its failures by kind.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn store_operations_races_and_failures_are_counted() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::with_redis(&redis.url(), "replica-r").await;
    let shopper = visitor();
    start_session(&shopper, &app.url("/api/cart/items")).await;
    let before = scrape(&app).await;
    let statuses = simultaneous_adds(&shopper, &[app.url("/api/cart/items")]).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let after = scrape(&app).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert!(moved(r#"elastic_cart_store_command_duration_seconds_count{op="snapshot"}"#) >= 100.0);
    assert!(moved(r#"elastic_cart_store_command_duration_seconds_count{op="replace"}"#) >= 100.0);
    // 100 changes of one session at once: most lose a race at least once.
    assert!(
        moved("elastic_cart_session_change_conflicts_total") > 0.0,
        "{after:#?}"
    );

    redis.stop();
    let refused = shopper.get(app.url("/api/cart")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let down = scrape(&app).await;
    let failures: f64 = down
        .iter()
        .filter(|(series, _)| series.starts_with("elastic_cart_store_errors_total{"))
        .map(|(_, n)| n)
        .sum();
    assert!(failures >= 1.0, "{down:#?}");
}
