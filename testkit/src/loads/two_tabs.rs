//! The lost-update experiment: shoppers who change one cart from two tabs at once. Each
//! shopper's session is made first (one add, whose cookie both tabs then send); then two
//! tabs, each on a connection of its own, add one unit at a time, overlapping. Every add a
//! server acknowledges (a 2xx) is a unit the shopper was promised; at the end each cart is
//! read back, and the units missing from it are units the store lost. A server that applies
//! every change exactly once loses none; one whose session layer writes the whole session
//! back at the end of a request (the last write wins) loses the adds that overlapped.

use std::time::{Duration, Instant};

use crate::http::SESSION_COOKIE;
// The tabs add these in turn (see `MAX_ADDS_PER_TAB`).
use crate::load::PRODUCTS;

/// How many shoppers, and how many adds each of their two tabs sends.
#[derive(Debug, Clone, Copy)]
pub struct TwoTabsOptions {
    /// Shoppers at once, each with two tabs.
    pub shoppers: usize,
    /// Adds of one unit each tab sends, one after the other.
    pub adds_per_tab: u32,
}

/// What the shoppers were promised and what their carts hold.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TwoTabsTally {
    /// Units of every acknowledged add (a 2xx), the session's first add included, of the
    /// shoppers whose cart was read back.
    pub acknowledged: u64,
    /// Units in those shoppers' carts when read back at the end.
    pub in_carts: u64,
    /// Acknowledged units missing from their shopper's cart, summed over the shoppers.
    pub lost: u64,
    /// Units in a shopper's cart beyond its acknowledged ones, summed over the shoppers: an
    /// add applied but not acknowledged (refused after it was applied, or its answer lost),
    /// or one applied twice. Counted apart, so that it cannot hide a loss.
    pub unacknowledged_in_carts: u64,
    /// Adds not acknowledged (another status, or no answer): promised nothing.
    pub refused: u64,
    /// Shoppers whose session could not be made or whose cart could not be read back
    /// (their units are left out of the counts above).
    pub failed_shoppers: u64,
    /// How long the tabs ran.
    pub elapsed: Duration,
}

impl TwoTabsTally {
    fn merge(&mut self, other: Self) {
        self.acknowledged += other.acknowledged;
        self.in_carts += other.in_carts;
        self.lost += other.lost;
        self.unacknowledged_in_carts += other.unacknowledged_in_carts;
        self.refused += other.refused;
        self.failed_shoppers += other.failed_shoppers;
    }
}

/// The most adds a tab may send: ten lines of at most 99 units hold a shopper's adds
/// (1 + 2 x 400 units, about 80 a line), so the product never refuses one for its limit
/// while a server without limits would take it.
pub const MAX_ADDS_PER_TAB: u32 = 400;

/// Runs `options.shoppers` shoppers against `base` (`http://host:port`), all at once, and
/// tallies their units.
pub async fn two_tabs(base: &str, options: TwoTabsOptions) -> TwoTabsTally {
    assert!(
        options.adds_per_tab <= MAX_ADDS_PER_TAB,
        "at most {MAX_ADDS_PER_TAB} adds per tab"
    );
    let started = Instant::now();
    let mut shoppers = tokio::task::JoinSet::new();
    for shopper in 0..options.shoppers {
        shoppers.spawn(one_shopper(base.to_owned(), shopper, options.adds_per_tab));
    }
    let mut tally = TwoTabsTally::default();
    while let Some(result) = shoppers.join_next().await {
        tally.merge(result.expect("a shopper's task"));
    }
    tally.elapsed = started.elapsed();
    tally
}

/// A client of its own: one tab, one connection.
fn tab() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTP client")
}

/// `POST /api/cart/items` of one unit; whether it was acknowledged, and the response (for
/// its cookie).
async fn add(
    client: &reqwest::Client,
    base: &str,
    product: &str,
    cookie: Option<&str>,
) -> Option<reqwest::Response> {
    let mut request = client
        .post(format!("{base}/api/cart/items"))
        .json(&serde_json::json!({ "product_id": product, "quantity": 1 }));
    if let Some(cookie) = cookie {
        request = request.header(reqwest::header::COOKIE, cookie);
    }
    let response = request.send().await.ok()?;
    response.status().is_success().then_some(response)
}

async fn one_shopper(base: String, shopper: usize, adds_per_tab: u32) -> TwoTabsTally {
    let mut tally = TwoTabsTally::default();
    let first = tab();
    // The session first, so both tabs share it.
    let cookie = add(&first, &base, PRODUCTS[shopper % PRODUCTS.len()], None)
        .await
        .and_then(|response| session_cookie(&response));
    let Some(cookie) = cookie else {
        tally.failed_shoppers = 1;
        return tally;
    };
    tally.acknowledged = 1;
    let tabs = [first, tab()].map(|client| {
        let base = base.clone();
        let cookie = cookie.clone();
        tokio::spawn(async move {
            let (mut acknowledged, mut refused) = (0, 0);
            for n in 0..adds_per_tab as usize {
                let product = PRODUCTS[(shopper + n) % PRODUCTS.len()];
                match add(&client, &base, product, Some(&cookie)).await {
                    Some(_) => acknowledged += 1,
                    None => refused += 1,
                }
            }
            (acknowledged, refused)
        })
    });
    for handle in tabs {
        let (acknowledged, refused) = handle.await.expect("a tab's task");
        tally.acknowledged += acknowledged;
        tally.refused += refused;
    }
    let Some(in_cart) = units_in_cart(&tab(), &base, &cookie).await else {
        return TwoTabsTally {
            failed_shoppers: 1,
            refused: tally.refused,
            ..TwoTabsTally::default()
        };
    };
    tally.in_carts = in_cart;
    tally.lost = tally.acknowledged.saturating_sub(in_cart);
    tally.unacknowledged_in_carts = in_cart.saturating_sub(tally.acknowledged);
    tally
}

/// `name=value` of the session cookie a response sets.
fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok()?.split(';').next())
        .find(|pair| pair.starts_with(&format!("{SESSION_COOKIE}=")))
        .map(str::to_owned)
}

/// `item_count` of `GET /api/cart`.
async fn units_in_cart(client: &reqwest::Client, base: &str, cookie: &str) -> Option<u64> {
    let response = client
        .get(format!("{base}/api/cart"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .ok()?;
    let cart: serde_json::Value = response.error_for_status().ok()?.json().await.ok()?;
    cart.get("item_count")?.as_u64()
}
