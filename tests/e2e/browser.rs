//! The shop in a real browser: headless Chromium, driven over WebDriver (chromedriver),
//! against the fleet (nginx, three replicas, Redis). It saves screenshots under
//! `target/e2e/` for people to look at.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use testkit::Signal;
use testkit::binaries::require;
use testkit::http::bare_client;
use testkit::process::Process;
use testkit::{FleetOptions, LoopbackFleet, eventually, eventually_within, free_port};

/// chromedriver on a free loopback port; stopped on drop, with the browsers it started
/// (they share its process group).
pub(crate) struct ChromeDriver {
    port: u16,
    _process: Process,
}

impl ChromeDriver {
    pub(crate) async fn start() -> Self {
        let binary = require("chromedriver", "chromium-driver");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process::spawn(&mut command, Signal::SIGTERM).expect("starting chromedriver");
        let status = format!("http://127.0.0.1:{port}/status");
        let client = bare_client();
        eventually("chromedriver to answer", async || {
            client.get(&status).send().await.is_ok()
        })
        .await;
        Self {
            port,
            _process: process,
        }
    }

    pub(crate) async fn browser(&self) -> Client {
        let chromium = require("chromium", "chromium");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=1280,1000", "--lang=en-US"]
            }
        });
        // fantoccini's client is built with rustls, which needs a process-wide crypto
        // provider when more than one is compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ClientBuilder::rustls()
            .expect("a TLS-capable WebDriver client")
            .capabilities(capabilities.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save_screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

async fn text(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The cart as the page shows it: (product id, quantity) per line.
async fn cart_lines(browser: &Client) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for row in browser
        .find_all(Locator::Css("tr[data-product-id]"))
        .await
        .unwrap()
    {
        let id = row.attr("data-product-id").await.unwrap().unwrap();
        let quantity = row
            .find(Locator::Css("[data-role=quantity]"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        lines.push((id, quantity));
    }
    lines
}

/// Waits until the element at `css` exists and its text contains `needle` (the page
/// that a click leads to has loaded).
async fn wait_for_text(browser: &Client, css: &str, needle: &str) {
    eventually(&format!("{css} to say {needle:?}"), async || match browser
        .find(Locator::Css(css))
        .await
    {
        Ok(element) => element.text().await.is_ok_and(|text| text.contains(needle)),
        Err(_) => false,
    })
    .await;
}

async fn add_to_cart(browser: &Client, product: &str, name: &str) {
    let button = format!(r#"form[data-action="add-to-cart"][data-product-id="{product}"] button"#);
    browser
        .find(Locator::Css(&button))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(browser, ".notice", &format!("Added {name}")).await;
}

/// Add two products, reload the cart six times (at least two replicas, same cart each
/// time), crash the replica that served the page (the next page comes from another, with
/// the cart intact), and check out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "e2e tier: cargo xtask test e2e"]
async fn a_shopper_in_chromium_sees_round_robin_and_survives_a_crash() {
    let options = FleetOptions::new(env!("CARGO_BIN_EXE_elastic-cart")).env("DEMO_CHAOS", "1");
    let fleet = LoopbackFleet::start(options).await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;

    browser.goto(&fleet.url("/")).await.unwrap();
    assert_eq!(
        browser
            .find_all(Locator::Css("[data-action=add-to-cart]"))
            .await
            .unwrap()
            .len(),
        10
    );
    add_to_cart(&browser, "espresso-beans", "Espresso beans").await;
    add_to_cart(&browser, "ceramic-mug", "Ceramic mug").await;
    assert_eq!(text(&browser, "#cart-count").await, "2");
    save_screenshot(&browser, "catalog").await;

    let mut replicas = HashSet::new();
    let mut expected = None;
    for _ in 0..6 {
        browser.goto(&fleet.url("/cart")).await.unwrap();
        replicas.insert(text(&browser, "#served-by").await);
        let lines = cart_lines(&browser).await;
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(expected.get_or_insert_with(|| lines.clone()), &lines);
    }
    assert!(
        replicas.len() >= 2,
        "one replica served every page: {replicas:?}"
    );
    let chips = browser
        .find_all(Locator::Css("#replica-history li"))
        .await
        .unwrap();
    assert!(
        chips.len() >= 6,
        "the tab's replica history shows {} chips",
        chips.len()
    );
    save_screenshot(&browser, "cart").await;

    browser
        .find(Locator::Css("#crash-replica"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, ".notice", "crashed on purpose").await;
    // The balancer chose which replica answered the button; the notice names it.
    let notice = text(&browser, ".notice").await;
    let crashed = (0..3)
        .map(|i| format!("replica-{i}"))
        .find(|id| notice.contains(&format!("Replica {id} ")))
        .unwrap_or_else(|| panic!("no replica named in {notice:?}"));
    let survivor = text(&browser, "#served-by").await;
    assert_ne!(
        survivor, crashed,
        "the page after the crash came from the crashed replica"
    );
    assert_eq!(
        &cart_lines(&browser).await,
        expected.as_ref().unwrap(),
        "the cart changed"
    );
    save_screenshot(&browser, "after-crash").await;

    browser
        .find(Locator::Css("#checkout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&browser, "h1", "order is placed").await;
    save_screenshot(&browser, "confirmation").await;
    browser.close().await.unwrap();
}

/// The fleet page's rows as (replica id, state class).
async fn fleet_rows(browser: &Client) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for row in browser
        .find_all(Locator::Css("#fleet-replicas tr[data-replica]"))
        .await
        .unwrap_or_default()
    {
        let (Ok(Some(id)), Ok(class)) = (row.attr("data-replica").await, row.attr("class").await)
        else {
            continue; // redrawn while read
        };
        rows.push((id, class.unwrap_or_default()));
    }
    rows
}

/// Waits until the fleet page's rows satisfy `check`, within `limit`.
async fn wait_for_rows(
    browser: &Client,
    what: &str,
    limit: std::time::Duration,
    check: impl Fn(&[(String, String)]) -> bool,
) {
    eventually_within(what, limit, async || check(&fleet_rows(browser).await)).await;
}

/// `/fleet` in Chromium, under a gentle load through nginx: a row per replica, each with
/// a share of the requests; a SIGKILLed replica is marked gone and then dropped within
/// seconds; replicas started later appear, marked joined, without a reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "e2e tier: cargo xtask test e2e"]
async fn the_fleet_page_draws_replicas_joining_and_vanishing_live() {
    use std::time::Duration;
    use testkit::scenario::Fleet;

    let mut fleet =
        LoopbackFleet::start(FleetOptions::new(env!("CARGO_BIN_EXE_elastic-cart"))).await;
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    let shop = fleet.url("/");
    let load = tokio::spawn(async move {
        let client = bare_client();
        loop {
            let _ = client.get(&shop).send().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    browser.goto(&fleet.url("/fleet")).await.unwrap();
    let three: Vec<String> = (0..3).map(|i| format!("replica-{i}")).collect();
    wait_for_rows(
        &browser,
        "three serving rows",
        Duration::from_secs(5),
        |rows| {
            rows.iter().map(|(id, _)| id).eq(three.iter())
                && rows.iter().all(|(_, c)| c == "serving")
        },
    )
    .await;
    wait_for_text(&browser, "#fleet-status", "Live").await;
    eventually_within(
        "every replica to get a share",
        Duration::from_secs(5),
        async || {
            let Ok(shares) = browser
                .find_all(Locator::Css("#fleet-replicas .share-value"))
                .await
            else {
                return false;
            };
            let mut positive = 0;
            for share in shares {
                if share
                    .text()
                    .await
                    .is_ok_and(|t| t != "0%" && t.ends_with('%'))
                {
                    positive += 1;
                }
            }
            positive == 3
        },
    )
    .await;
    save_screenshot(&browser, "fleet").await;

    fleet.kill("replica-1").await;
    wait_for_rows(
        &browser,
        "replica-1 marked gone",
        Duration::from_secs(5),
        |rows| rows.iter().any(|(id, c)| id == "replica-1" && c == "gone"),
    )
    .await;
    save_screenshot(&browser, "fleet-after-kill").await;
    wait_for_rows(
        &browser,
        "replica-1's row dropped",
        Duration::from_secs(6),
        |rows| rows.iter().all(|(id, _)| id != "replica-1"),
    )
    .await;

    // Scaling out starts replica-1 again and adds replica-3.
    fleet.scale(4).await;
    wait_for_rows(
        &browser,
        "two replicas marked joined",
        Duration::from_secs(4),
        |rows| {
            ["replica-1", "replica-3"]
                .iter()
                .all(|new| rows.iter().any(|(id, c)| id == new && c == "joined"))
                && rows.len() == 4
        },
    )
    .await;
    save_screenshot(&browser, "fleet-after-scale-out").await;
    load.abort();
    browser.close().await.unwrap();
}
