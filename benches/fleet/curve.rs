//! The cost curve's live sessions: fills the fleet's Redis with `n` sessions like a
//! shopper's with a one-line cart, so `fleet-3` can be measured with 1,000, 100,000 and
//! 1,000,000 sessions besides its own shoppers', and says how much Redis memory one takes.
//!
//! The record is a real one: one add through the shop, whose stored bytes are then
//! written under `n` other session keys (with the product's TTL), pipelined.

use std::time::Duration;

use fred::prelude::{Builder, ClientLike, Config, Expiration, KeysInterface, Pool};
use testkit::RedisServer;

/// How many keys one pipelined batch writes.
const BATCH: usize = 2_000;

/// Fills `redis` with `n` copies of a real one-line-cart session made through `shop`;
/// returns the Redis memory one session takes, in bytes (`used_memory` before and after,
/// divided by `n`).
pub(crate) fn prefill(shop: &str, redis: &RedisServer, n: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = Builder::from_config(Config::from_url(&redis.url()).expect("a Redis URL"))
            .build_pool(1)
            .expect("a Redis pool");
        pool.init().await.expect("connecting to Redis");
        let record = one_line_cart(shop, &pool).await;
        let before = used_memory(&pool).await;
        let ttl = Expiration::PX(Duration::from_secs(1800).as_millis() as i64);
        for start in (0..n).step_by(BATCH) {
            let pipeline = pool.next().pipeline();
            for i in start..(start + BATCH).min(n) {
                let key = format!("elastic-cart:session:{{prefill-{i:016x}}}");
                let _: () = pipeline
                    .set(key, record.as_slice(), Some(ttl.clone()), None, false)
                    .await
                    .expect("queueing a SET");
            }
            let _: Vec<fred::types::Value> = pipeline.all().await.expect("a pipelined batch");
        }
        let after = used_memory(&pool).await;
        let _ = pool.quit().await;
        (after - before) as f64 / n.max(1) as f64
    })
}

/// A session with one cart line, made through the shop; its stored bytes.
async fn one_line_cart(shop: &str, pool: &Pool) -> Vec<u8> {
    let response = reqwest::Client::new()
        .post(format!("{shop}/api/cart/items"))
        .json(&serde_json::json!({"product_id": "ceramic-mug", "quantity": 1}))
        .send()
        .await
        .expect("an add through the shop");
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|pair| pair.split_once('='))
        .map(|(_, id)| id.to_owned())
        .expect("a session cookie from the first add");
    let key = format!("elastic-cart:session:{{{cookie}}}");
    let stored: Option<Vec<u8>> = pool.get(&key).await.expect("reading the session");
    stored.expect("the session's record in Redis")
}

async fn used_memory(pool: &Pool) -> i64 {
    let info: String = pool
        .info(Some(fred::types::InfoKind::Memory))
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory")
}
