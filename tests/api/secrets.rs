//! The store's password stays secret: a replica given a recognisable password in
//! `REDIS_URL` (one Redis, and Sentinel with a password for the data nodes and one for the
//! sentinels themselves) runs into failures (the store stopped, its password changed under it, a
//! wrong password from the start, a URL that does not parse) and never shows the password
//! in a log line, an answer, `/metrics`, the fleet view or `--help`.

use std::path::Path;
use std::process::{Command, Stdio};

use reqwest::StatusCode;
use testkit::SentinelSet;
use testkit::store_user::{APP_KEY_PREFIX, StoreUser};

use crate::helpers::{RedisServer, Replica, ReplicaSpec, add_item, binary, eventually, visitor};

/// The password under test; every other secret here starts with it, so one search finds
/// them all.
const SECRET: &str = "S3cr3t-Do-Not-Leak-xyz";

/// A replica of the real binary with `REDIS_URL`, its stdout and stderr both in `log`.
async fn replica(id: &str, url: &str, log: &Path) -> Replica {
    let mut spec = ReplicaSpec::new(binary(), &[("REDIS_URL", url), ("REPLICA_ID", id)]);
    spec.log = Some(log.to_owned());
    Replica::start(&spec).await
}

/// What a visitor of `replica` sees now: a change, the cart as JSON and as a page, the
/// fleet as JSON and as a page, the probes and the metrics, each as its status and body.
async fn everything_shown(replica: &Replica, shopper: &reqwest::Client) -> Vec<(String, String)> {
    let mut shown = Vec::new();
    let added = add_item(shopper, &replica.url("/api/cart/items"), "ceramic-mug", 1).await;
    shown.push((
        format!("POST /api/cart/items: {}", added.status()),
        added.text().await.unwrap(),
    ));
    for path in [
        "/api/cart",
        "/cart",
        "/api/fleet",
        "/fleet",
        "/readyz",
        "/healthz",
        "/metrics",
    ] {
        let response = shopper.get(replica.url(path)).send().await.unwrap();
        shown.push((
            format!("GET {path}: {}", response.status()),
            response.text().await.unwrap(),
        ));
    }
    shown
}

/// Fails naming what showed the secret.
fn assert_secret_absent(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "{what} shows the store's password:\n{text}"
    );
}

/// Whether `replica`'s readiness probe says 503 (the store unreachable or refusing it).
async fn not_ready(replica: &Replica) -> bool {
    let readyz = visitor().get(replica.url("/readyz")).send().await.unwrap();
    readyz.status() == StatusCode::SERVICE_UNAVAILABLE
}

/// One Redis and a Sentinel set, each with an app user whose password is [`SECRET`] (and
/// sentinels whose password starts with it); the replicas work, then fail: the store
/// stopped (503s, warnings), its password changed and the connections cut (refused on
/// reconnect), a wrong password from the start, a wrong sentinel password, a URL that does
/// not parse, and `--help` with the variable set. No log line, body, metric, fleet view or help text holds the password.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_store_password_shows_in_no_log_body_metric_or_help() {
    let logs = tempfile::tempdir().unwrap();
    let user = StoreUser::new(APP_KEY_PREFIX, SECRET);
    let mut redis = RedisServer::builder().app_user(user.clone()).start().await;
    let url = redis.url();
    assert!(url.contains(SECRET), "the URL carries the password: {url}");
    let mut shown = Vec::new();

    // Working, then the store stopped: 503 answers, JSON and pages, and warnings.
    let one = replica("secret-1", &url, &logs.path().join("one.log")).await;
    let shopper = visitor();
    let working = everything_shown(&one, &shopper).await;
    assert!(working[0].0.ends_with("200 OK"), "{working:?}");
    shown.extend(working);
    redis.stop();
    eventually("the replica to notice the store is gone", async || {
        not_ready(&one).await
    })
    .await;
    let failing = everything_shown(&one, &shopper).await;
    assert!(
        failing[0].0.ends_with("503 Service Unavailable"),
        "{failing:?}"
    );
    assert!(
        failing[2].0.ends_with("503 Service Unavailable"),
        "{failing:?}"
    );
    shown.extend(failing);

    // The store back with another password, the replica's connections cut: every
    // reconnect is refused.
    redis.restart().await;
    eventually("the replica to reconnect", async || !not_ready(&one).await).await;
    redis.cli(&["ACL", "SETUSER", &user.name, "resetpass", ">changed-pw"]);
    redis.cli(&["CLIENT", "KILL", "USER", &user.name]);
    eventually("the replica to be refused", async || not_ready(&one).await).await;
    shown.extend(everything_shown(&one, &shopper).await);

    // A wrong password from the start (itself a secret: it starts with SECRET).
    let wrong = url.replace(SECRET, &format!("{SECRET}-wrong"));
    let refused = replica("secret-2", &wrong, &logs.path().join("two.log")).await;
    eventually("the wrong password to be refused", async || {
        not_ready(&refused).await
    })
    .await;
    shown.extend(everything_shown(&refused, &visitor()).await);

    // Sentinel: the data nodes' password in the URL's credentials, the sentinels' in its
    // query (`<SECRET>-sentinel`). The first replica works, then its primary stops; the
    // second names a sentinel password that the sentinels refuse.
    let mut set = SentinelSet::start_with_user(0, 1, user.clone()).await;
    let sentinel_url = set.url();
    let sentinel_password = format!("sentinelPassword={SECRET}-sentinel");
    assert!(sentinel_url.contains(&sentinel_password), "{sentinel_url}");
    let three = replica("secret-3", &sentinel_url, &logs.path().join("three.log")).await;
    let sentinel_shopper = visitor();
    let working = everything_shown(&three, &sentinel_shopper).await;
    assert!(working[0].0.ends_with("200 OK"), "{working:?}");
    shown.extend(working);
    set.nodes[0].stop();
    eventually(
        "the Sentinel replica to notice the primary is gone",
        async || not_ready(&three).await,
    )
    .await;
    shown.extend(everything_shown(&three, &sentinel_shopper).await);
    let wrong_sentinel_password = sentinel_url.replace(
        &sentinel_password,
        &format!("sentinelPassword={SECRET}-wrong"),
    );
    let four = replica(
        "secret-4",
        &wrong_sentinel_password,
        &logs.path().join("four.log"),
    )
    .await;
    eventually("the sentinels to refuse the password", async || {
        not_ready(&four).await
    })
    .await;
    shown.extend(everything_shown(&four, &visitor()).await);

    // Stopped (SIGTERM) so that what a replica logs on its way out is read too.
    for mut stopping in [one, refused, three, four] {
        stopping.signal(testkit::Signal::SIGTERM);
        stopping
            .wait_for_exit(std::time::Duration::from_secs(15))
            .await;
    }

    for (what, body) in &shown {
        assert_secret_absent(what, body);
    }
    let mut warnings = 0;
    for name in ["one.log", "two.log", "three.log", "four.log"] {
        let log = std::fs::read_to_string(logs.path().join(name)).unwrap();
        assert_secret_absent(name, &log);
        warnings += log.lines().filter(|line| line.contains("WARN")).count();
    }
    assert!(warnings > 0, "the failures were logged");

    // At start: a URL that does not parse, and --help, each with the variable set.
    let unparsable = format!("redis://elastic-cart:{SECRET}@127.0.0.1:notaport");
    for (env_url, args) in [
        (unparsable.as_str(), &[][..]),
        (url.as_str(), &["--help"][..]),
        (sentinel_url.as_str(), &["--help"][..]),
    ] {
        let output = Command::new(binary())
            .env_clear()
            .env("REDIS_URL", env_url)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running the binary");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(printed.contains("REDIS_URL"), "{args:?}: {printed}");
        assert_secret_absent(&format!("the binary with {args:?}"), &printed);
    }
}
