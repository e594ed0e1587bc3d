//! The least-privileged store user (`testkit::store_user`, docs/security.md): the app works
//! with only its prefix's keys and its own commands, on one Redis, Sentinel and Cluster;
//! the same credentials cannot read other keys or administer the store; the docs quote the
//! ACL the test kit gives every store.

use std::time::Duration;

use elastic_cart::session::store::keys::DEFAULT_KEY_PREFIX;
use fred::cmd;
use fred::prelude::{ClientLike, Config as RedisConfig, Pool};
use fred::types::Value;
use reqwest::StatusCode;
use testkit::store_user::{APP_KEY_PREFIX, StoreKind, StoreUser};
use testkit::{RedisCluster, SentinelSet, Signal};

use crate::helpers::{
    RedisServer, Replica, add_item, eventually, get_json, primary_with_replica, start_binary,
    visitor,
};

/// The placeholder docs/security.md writes for the password.
const DOCS_PASSWORD: &str = "YOUR-PASSWORD";

/// docs/security.md gives the ACL line of each kind of store, and the ElastiCache access
/// string of the two ElastiCache has (no Sentinel there), exactly as the test kit renders
/// them for the default prefix; and the test kit's prefix is the app's.
#[test]
fn the_docs_quote_the_store_user_the_tests_run_with() {
    assert_eq!(APP_KEY_PREFIX, DEFAULT_KEY_PREFIX);
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/security.md"))
        .expect("docs/security.md");
    for kind in [StoreKind::Single, StoreKind::Sentinel, StoreKind::Cluster] {
        let user = StoreUser::new(DEFAULT_KEY_PREFIX, DOCS_PASSWORD).on(kind);
        let mut lines = vec![user.acl_setuser()];
        if kind != StoreKind::Sentinel {
            lines.push(user.access_string());
        }
        for line in lines {
            assert!(
                docs.lines().any(|docs_line| docs_line.trim() == line),
                "docs/security.md lacks, on a line of its own:\n{line}"
            );
        }
    }
}

/// A client connected as the app's user of `url`.
async fn app_client(url: &str) -> Pool {
    let config = RedisConfig::from_url(url).expect("a valid redis url");
    let pool = Pool::new(config, None, None, None, 1).expect("building a redis client");
    pool.init().await.expect("connecting as the app's user");
    pool
}

/// What the store answered to `command args...`, as text (`Err: ...` for an error).
async fn answer(client: &Pool, command: &'static str, args: Vec<Value>) -> String {
    match client.next().custom::<Value, _>(cmd!(command), args).await {
        Ok(value) => format!("Ok: {value:?}"),
        Err(err) => format!("Err: {err}"),
    }
}

/// One shopper's visit through `replica`: two adds (a new session, then a change), the
/// cart read back, the fleet view, readiness, and a checkout.
async fn shop(replica: &Replica) {
    let shopper = visitor();
    let items = replica.url("/api/cart/items");
    for _ in 0..2 {
        let added = add_item(&shopper, &items, "ceramic-mug", 1).await;
        assert_eq!(added.status(), StatusCode::OK);
    }
    let cart = get_json(&shopper, &replica.url("/api/cart")).await;
    assert_eq!(cart["item_count"], 2, "{cart}");
    let id = replica.id.clone().expect("a replica id");
    eventually("the replica in the fleet view", async || {
        let fleet = get_json(&shopper, &replica.url("/api/fleet")).await;
        fleet.to_string().contains(&id)
    })
    .await;
    let ready = shopper.get(replica.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let checkout = shopper.post(replica.url("/checkout")).send().await.unwrap();
    assert_eq!(checkout.status(), StatusCode::SEE_OTHER);
}

/// Stops `replica` with SIGTERM, so it also leaves the fleet view (`HDEL`).
async fn stop(mut replica: Replica) {
    replica.signal(Signal::SIGTERM);
    replica.wait_for_exit(Duration::from_secs(15)).await;
}

/// Every command the store refused the app's user (`ACL LOG`): none, or the test fails
/// naming them.
fn assert_nothing_refused(node: &RedisServer) {
    let log = node.cli(&["ACL", "LOG"]);
    assert!(
        log.trim().is_empty(),
        "the store refused the app's user on port {}:\n{log}",
        node.port
    );
}

/// With the store user (its prefix's keys, its commands), a replica creates, changes,
/// reads and checks out a cart with changes confirmed by a replica (`WAIT`), shows the
/// fleet view and leaves it, and the store refuses it nothing. The same credentials cannot
/// read or write a key outside the prefix (directly or in a script), nor run `FLUSHALL`,
/// `CONFIG GET` or `KEYS`: `NOPERM`.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_store_user_keeps_carts_but_cannot_touch_other_keys_or_administer() {
    let (primary, _follower) = primary_with_replica().await;
    primary.cli(&["SET", "other:key", "not the app's"]);
    let url = primary.url();
    assert!(url.starts_with("redis://elastic-cart:"), "{url}");

    let replica = start_binary(&[
        ("REDIS_URL", &url),
        ("REPLICA_ID", "least-1"),
        ("REDIS_WAIT_REPLICAS", "1"),
    ])
    .await;
    shop(&replica).await;
    stop(replica).await;
    assert_nothing_refused(&primary);

    let client = app_client(&url).await;
    let refused = [
        ("GET", vec!["other:key".into()]),
        ("SET", vec!["other:key".into(), "overwritten".into()]),
        ("FLUSHALL", vec![]),
        ("CONFIG", vec!["GET".into(), "maxmemory".into()]),
        ("KEYS", vec!["*".into()]),
    ];
    for (command, args) in refused {
        let answer = answer(&client, command, args.clone()).await;
        assert!(answer.contains("NOPERM"), "{command} {args:?}: {answer}");
    }
    // A script runs with its caller's rights.
    for script in [
        "return redis.call('GET', KEYS[1])",
        "return redis.call('FLUSHALL')",
    ] {
        let keys: i64 = if script.contains("KEYS[1]") { 1 } else { 0 };
        let mut args = vec![script.into(), keys.into()];
        if keys == 1 {
            args.push("other:key".into());
        }
        let answer = answer(&client, "EVAL", args).await;
        // Redis says NOPERM or "can't run"; Valkey "has no permissions".
        assert!(
            ["NOPERM", "can't run", "no permissions"]
                .iter()
                .any(|refusal| answer.contains(refusal)),
            "EVAL {script}: {answer}"
        );
    }
    assert_eq!(primary.cli(&["GET", "other:key"]).trim(), "not the app's");
    assert!(primary.cli(&["DBSIZE"]).trim().parse::<u64>().unwrap() > 1);
}

/// On a Sentinel set and a Cluster, the store user with the few commands their kind of
/// store adds (`ROLE`; `CLUSTER INFO`, `CLUSTER SLOTS`, `ASKING`) is all a replica needs:
/// it shops through each, and no node refused it anything.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn on_sentinel_and_cluster_the_store_user_needs_only_their_few_commands() {
    let sentinel = SentinelSet::start(1, 1).await;
    let replica = start_binary(&[("REDIS_URL", &sentinel.url()), ("REPLICA_ID", "least-s")]).await;
    shop(&replica).await;
    stop(replica).await;
    sentinel.nodes.iter().for_each(assert_nothing_refused);

    let cluster = RedisCluster::start(3).await;
    let replica = start_binary(&[("REDIS_URL", &cluster.url()), ("REPLICA_ID", "least-c")]).await;
    shop(&replica).await;
    stop(replica).await;
    cluster.nodes.iter().for_each(assert_nothing_refused);
}
