//! What a replica counts, for Prometheus: requests by route and status, their duration,
//! the session store's commands and errors, lost compare-and-set races, busy sessions,
//! expiry refreshes, whether the replica is draining, and its version.
//!
//! One [`Metrics`] per replica (in [`crate::AppState`] and in the session store), each with
//! its own registry rather than a process-wide one, so tests that run several replicas in
//! one process see each replica's own counts. Everything here is a few atomic operations
//! per request; `GET /metrics` renders the registry in the OpenMetrics text format, which
//! Prometheus reads.
//!
//! Every series with labels known in advance (each store error `kind`, each store
//! operation `op`, each route pattern) exists at 0 from the first scrape: an alert on
//! `increase(...)` can only see a series that was there before it moved, and a dashboard
//! can tell "none" from "not reported". Creating them once, up front, costs nothing per
//! request.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::http::{self, Request};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tower::{Layer, Service};

/// The content type of `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Request durations, from half a millisecond (a page from a warm replica) to 5 s (the
/// longest a change may wait on a busy session).
const REQUEST_BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Store command durations: a Redis round trip on loopback is a tenth of a millisecond;
/// the command timeout is a second by default.
const STORE_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A session store operation, the `op` label of
/// `elastic_cart_store_command_duration_seconds`: an enum, so the set of labels the first
/// scrape shows at 0 is the set the store can use.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum StoreOp {
    /// A session read by tower-sessions, or one value read straight from its record.
    Load,
    /// A new session written.
    Create,
    /// A session written back by tower-sessions.
    Save,
    /// A session removed.
    Delete,
    /// A record read for a compare-and-set.
    Snapshot,
    /// The compare-and-set write.
    Replace,
    /// Waiting for replicas to hold a record a change did not write.
    Confirm,
    /// The readiness probe (`/readyz`, the connection watchdog).
    Probe,
    /// The store's memory read (`INFO memory`), every second, for the new-session budget.
    Memory,
    /// A fleet heartbeat written.
    Heartbeat,
    /// The fleet's heartbeats read.
    Fleet,
    /// A replica's heartbeat removed as it stops.
    Leave,
}

impl StoreOp {
    /// Every operation, in the order the docs list them.
    pub const ALL: [StoreOp; 12] = [
        Self::Load,
        Self::Create,
        Self::Save,
        Self::Delete,
        Self::Snapshot,
        Self::Replace,
        Self::Confirm,
        Self::Probe,
        Self::Memory,
        Self::Heartbeat,
        Self::Fleet,
        Self::Leave,
    ];

    /// The `op` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Load => "load",
            Self::Create => "create",
            Self::Save => "save",
            Self::Delete => "delete",
            Self::Snapshot => "snapshot",
            Self::Replace => "replace",
            Self::Confirm => "confirm",
            Self::Probe => "probe",
            Self::Memory => "memory",
            Self::Heartbeat => "heartbeat",
            Self::Fleet => "fleet",
            Self::Leave => "leave",
        }
    }
}

/// The `route` labels this module gives itself rather than take from the router: every
/// static file, and a path no route matches.
pub const OWN_ROUTES: [&str; 2] = [STATIC_ROUTE, UNMATCHED_ROUTE];
const STATIC_ROUTE: &str = "/static/{file}";
const UNMATCHED_ROUTE: &str = "unmatched";
/// The route Prometheus scrapes (`routes::health`).
const METRICS_ROUTE: &str = "/metrics";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Cow<'static, str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// A replica's instruments; cloning shares them.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, Histogram>,
    store_duration: Family<OpLabel, Histogram>,
    store_errors: Family<KindLabel, Counter>,
    conflicts: Counter,
    busy: Counter,
    expiry_refreshes: Counter,
    new_sessions_refused: Counter,
    store_memory_used: Gauge,
    store_memory_max: Gauge,
    draining: Gauge,
    /// Every request answered, whatever its route (what the fleet heartbeat reports).
    served: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(env!("CARGO_PKG_VERSION"))
    }
}

impl Metrics {
    /// Fresh instruments for a replica running `version`.
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::with_prefix("elastic_cart");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route pattern and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteLabel, Histogram>::new_with_constructor(request_histogram as fn() -> _);
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response, by route pattern",
            request_duration.clone(),
        );
        let store_duration =
            Family::<OpLabel, Histogram>::new_with_constructor(store_histogram as fn() -> _);
        registry.register(
            "store_command_duration_seconds",
            "Time of one session store operation (one or a few Redis commands), by operation",
            store_duration.clone(),
        );
        let store_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "store_errors",
            "Session store operations that failed, by kind",
            store_errors.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "session_change_conflicts",
            "Cart changes that lost a compare-and-set race to another change and retried",
            conflicts.clone(),
        );
        let busy = Counter::default();
        registry.register(
            "session_busy",
            "Cart changes answered 503 session_busy after retrying too long",
            busy.clone(),
        );
        let expiry_refreshes = Counter::default();
        registry.register(
            "expiry_refreshes",
            "Reads that moved a session's expiry (past half its time to live)",
            expiry_refreshes.clone(),
        );
        let new_sessions_refused = Counter::default();
        registry.register(
            "new_sessions_refused",
            "New sessions refused (429 too_many_new_sessions) while the store's memory was \
             above its budget for new sessions (STORE_MEMORY_BUDGET_PERCENT)",
            new_sessions_refused.clone(),
        );
        let store_memory_used = Gauge::default();
        registry.register(
            "store_memory_used_bytes",
            "The session store's used memory (INFO memory used_memory; the fullest primary \
             of a cluster), as this replica last read it; 0 before the first reading",
            store_memory_used.clone(),
        );
        let store_memory_max = Gauge::default();
        registry.register(
            "store_memory_max_bytes",
            "The session store's memory ceiling (INFO memory maxmemory); 0 if it has none",
            store_memory_max.clone(),
        );
        let draining = Gauge::default();
        registry.register(
            "draining",
            "1 while the replica is stopping (answering with Connection: close), else 0",
            draining.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: version.to_owned(),
            })
            .set(1);
        registry.register("build_info", "The version this replica runs", build_info);
        Self(Arc::new(Inner {
            registry,
            requests,
            request_duration,
            store_duration,
            store_errors,
            conflicts,
            busy,
            expiry_refreshes,
            new_sessions_refused,
            store_memory_used,
            store_memory_max,
            draining,
            served: AtomicU64::new(0),
        }))
        .with_known_children()
    }

    /// Creates, at 0, the children whose labels are known before anything happens: each
    /// store error kind, each store operation, the routes of [`OWN_ROUTES`]. The router's
    /// own patterns come later, from [`Self::expect_routes`].
    fn with_known_children(self) -> Self {
        for kind in crate::error::STORE_ERROR_KINDS {
            let _ = self.0.store_errors.get_or_create(&KindLabel { kind });
        }
        for op in StoreOp::ALL {
            let _ = self
                .0
                .store_duration
                .get_or_create(&OpLabel { op: op.label() });
        }
        self.expect_routes(OWN_ROUTES);
        // The request counter has an open-ended `status`, so none of its children is
        // known in advance; but a family without children is not rendered at all. The
        // scrape itself is the one request every replica answers: its child stands for
        // the family from the first scrape on.
        let _ = self.0.requests.get_or_create(&RequestLabels {
            method: "GET",
            route: Cow::Borrowed(METRICS_ROUTE),
            status: 200,
        });
        self
    }

    /// Creates the duration histogram of each route pattern in `patterns` at 0 (the
    /// request counter has a `status` too, which is not known in advance). Called once
    /// when the router is built; calling it again changes nothing.
    pub fn expect_routes(&self, patterns: impl IntoIterator<Item = &'static str>) {
        for route in patterns {
            let _ = self.0.request_duration.get_or_create(&RouteLabel {
                route: Cow::Borrowed(route),
            });
        }
    }

    /// Counts an answered request and its duration.
    pub fn record_request(
        &self,
        method: &'static str,
        route: Cow<'static, str>,
        status: u16,
        took: Duration,
    ) {
        let inner = &self.0;
        inner.served.fetch_add(1, Ordering::Relaxed);
        inner
            .request_duration
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        inner
            .requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status,
            })
            .inc();
    }

    /// Every request answered so far.
    pub fn served(&self) -> u64 {
        self.0.served.load(Ordering::Relaxed)
    }

    /// Counts one session store operation `op` that took `took`, and its failure's `kind`.
    pub fn record_store(&self, op: StoreOp, took: Duration, failure: Option<&'static str>) {
        self.0
            .store_duration
            .get_or_create(&OpLabel { op: op.label() })
            .observe(took.as_secs_f64());
        if let Some(kind) = failure {
            self.0.store_errors.get_or_create(&KindLabel { kind }).inc();
        }
    }

    /// A change lost a compare-and-set race.
    pub fn conflict(&self) {
        self.0.conflicts.inc();
    }

    /// A change gave up on a busy session.
    pub fn busy(&self) {
        self.0.busy.inc();
    }

    /// A read moved a session's expiry.
    pub fn expiry_refreshed(&self) {
        self.0.expiry_refreshes.inc();
    }

    /// A new session was refused for the store's memory budget.
    pub fn new_session_refused(&self) {
        self.0.new_sessions_refused.inc();
    }

    /// The store's memory as last read: `used` bytes of at most `max` (0: no ceiling).
    pub fn store_memory(&self, used: u64, max: u64) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.0.store_memory_used.set(gauge(used));
        self.0.store_memory_max.set(gauge(max));
    }

    /// The registry in the OpenMetrics text format, with `draining` as it is now.
    pub fn render(&self, draining: bool) -> String {
        self.0.draining.set(i64::from(draining));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.0.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

/// The method as a label: the standard ones by name, anything else as `other`, so a
/// client cannot make up label values.
fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method)
        .unwrap_or("other")
}

/// The route label of a request: the pattern the router matched (`/api/cart/items/{id}`),
/// never the raw path, which would make a series per product id or per probe of a
/// scanner. Static files are one route; a path no route matches is `unmatched`.
pub fn route_label(matched: Option<&MatchedPath>, path: &str) -> Cow<'static, str> {
    if path.starts_with("/static/") {
        return Cow::Borrowed(STATIC_ROUTE);
    }
    match matched {
        Some(matched) => Cow::Borrowed(interned(matched.as_str())),
        None => Cow::Borrowed(UNMATCHED_ROUTE),
    }
}

/// `pattern` as a `&'static str`, each distinct one leaked once: route patterns are the
/// router's, a fixed handful, so this saves two allocations per request (the label of
/// the counter and that of the histogram) for a few bytes kept for good.
fn interned(pattern: &str) -> &'static str {
    static PATTERNS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(known) = PATTERNS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(pattern)
    {
        return known;
    }
    let mut patterns = PATTERNS.write().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = patterns.get(pattern) {
        return known;
    }
    let leaked: &'static str = Box::leak(pattern.to_owned().into_boxed_str());
    patterns.insert(leaked);
    leaked
}

/// The layer that counts every answered request with its route pattern, status and
/// duration (a request whose client went away before the answer is not counted).
///
/// A hand-written tower layer rather than `axum::middleware::from_fn`: `from_fn` clones
/// the whole inner stack and boxes it for every request, which cost more than all the
/// counting (docs/benchmark.md has the instruction counts).
#[derive(Debug, Clone)]
pub struct CountRequestsLayer(Metrics);

impl CountRequestsLayer {
    /// Counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self(metrics)
    }
}

impl<S> Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountRequests {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// See [`CountRequestsLayer`].
#[derive(Debug, Clone)]
pub struct CountRequests<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> Service<Request<B>> for CountRequests<S>
where
    S: Service<Request<B>, Response = http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let route = route_label(
            request.extensions().get::<MatchedPath>(),
            request.uri().path(),
        );
        let method = method_label(request.method().as_str());
        Counted {
            inner: self.inner.call(request),
            metrics: Some(self.metrics.clone()),
            started,
            method,
            route,
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CountRequests`]: counts the request when it is answered.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        metrics: Option<Metrics>,
        started: Instant,
        method: &'static str,
        route: Cow<'static, str>,
    }
}

impl<F, R, E> Future for Counted<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some(metrics)) = (&result, this.metrics.take()) {
            metrics.record_request(
                this.method,
                std::mem::take(this.route),
                response.status().as_u16(),
                this.started.elapsed(),
            );
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_named_series_with_its_labels() {
        let metrics = Metrics::new("1.2.3");
        metrics.record_request(
            method_label("GET"),
            Cow::Borrowed("/cart"),
            200,
            Duration::from_millis(3),
        );
        metrics.record_store(StoreOp::Load, Duration::from_micros(200), Some("timeout"));
        metrics.conflict();
        metrics.busy();
        metrics.expiry_refreshed();
        metrics.new_session_refused();
        metrics.store_memory(27_000_000, 33_554_432);
        let text = metrics.render(true);
        for line in [
            r#"elastic_cart_http_requests_total{method="GET",route="/cart",status="200"} 1"#,
            r#"elastic_cart_http_request_duration_seconds_count{route="/cart"} 1"#,
            r#"elastic_cart_store_command_duration_seconds_count{op="load"} 1"#,
            r#"elastic_cart_store_errors_total{kind="timeout"} 1"#,
            "elastic_cart_session_change_conflicts_total 1",
            "elastic_cart_session_busy_total 1",
            "elastic_cart_expiry_refreshes_total 1",
            "elastic_cart_new_sessions_refused_total 1",
            "elastic_cart_store_memory_used_bytes 27000000",
            "elastic_cart_store_memory_max_bytes 33554432",
            "elastic_cart_draining 1",
            r#"elastic_cart_build_info{version="1.2.3"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(metrics.served(), 1);
    }

    /// A fresh replica shows every store error kind, store operation and own route at 0,
    /// so that `increase()` sees the first error and a dashboard sees "none yet".
    #[test]
    fn known_children_exist_at_zero_before_anything_happens() {
        let text = Metrics::new("1.2.3").render(false);
        let mut expected: Vec<String> = crate::error::STORE_ERROR_KINDS
            .iter()
            .map(|kind| format!(r#"elastic_cart_store_errors_total{{kind="{kind}"}} 0"#))
            .collect();
        expected.extend(StoreOp::ALL.iter().map(|op| {
            format!(
                r#"elastic_cart_store_command_duration_seconds_count{{op="{}"}} 0"#,
                op.label()
            )
        }));
        expected.push(
            r#"elastic_cart_http_requests_total{method="GET",route="/metrics",status="200"} 0"#
                .to_owned(),
        );
        expected.extend(OWN_ROUTES.iter().map(|route| {
            format!(r#"elastic_cart_http_request_duration_seconds_count{{route="{route}"}} 0"#)
        }));
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let ops: HashSet<_> = StoreOp::ALL.iter().map(|op| op.label()).collect();
        assert_eq!(
            ops.len(),
            StoreOp::ALL.len(),
            "two operations share a label"
        );
    }

    #[test]
    fn labels_are_patterns_and_known_methods_only() {
        assert_eq!(route_label(None, "/no/such/page"), "unmatched");
        assert_eq!(route_label(None, "/static/style.css"), "/static/{file}");
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("DELETE"), "DELETE");
    }
}
