//! What the pages show: the view models behind the templates (`templates/`), built from
//! plain data, and the error page. No I/O: the handlers read the session and pass what
//! they found.

use std::sync::{Arc, LazyLock};

use askama::Template;
use askama_web::WebTemplate;
use axum::http::StatusCode;
use axum::response::Redirect;

use crate::cart::{MAX_LINE_QUANTITY, PricedCart};
use crate::catalog::{self, Price, Product, format_price};
use crate::error::ErrorReport;
use crate::fleet;
use crate::order::Order;
use crate::state::AppState;

/// What the header of every page shows.
pub(super) struct Layout {
    /// Shared with the state, not copied per page.
    pub(super) served_by: Arc<str>,
    /// The version the serving replica runs.
    pub(super) version: Arc<str>,
    /// Units in the cart; `None` where it is unknown (error pages).
    pub(super) cart_count: Option<u32>,
    /// A one-time message about the last action.
    pub(super) notice: Option<String>,
    /// Whether to offer the "crash this replica" button.
    pub(super) chaos: bool,
    /// A fresh token for this page's add forms: the same form sent twice (a double click,
    /// a resubmission after a 502) adds once. Made here, stored nowhere until it is used,
    /// so browsing still writes nothing.
    pub(super) form_token: String,
}

impl Layout {
    pub(super) fn new(state: &AppState, cart_count: Option<u32>) -> Self {
        Self {
            served_by: state.replica_id.clone(),
            version: state.version.clone(),
            cart_count,
            notice: None,
            chaos: state.chaos,
            form_token: format!("{:016x}", fastrand::u64(..)),
        }
    }

    pub(super) fn with_notice(mut self, notice: &NoticeQuery) -> Self {
        self.notice = notice.text();
        self
    }
}

/// The notice named in a page's query string, as the redirect after an action left it.
#[derive(Debug, Default)]
pub(super) struct NoticeQuery {
    pub(super) notice: Option<String>,
    pub(super) product: Option<String>,
    pub(super) replica: Option<String>,
}

impl NoticeQuery {
    /// Reads the query leniently: a notice is a nicety, so a query it cannot use (repeated
    /// or unknown fields, bad escapes) shows no notice rather than failing the page.
    pub(super) fn parse(query: Option<&str>) -> Self {
        let pairs: Vec<(String, String)> = query
            .and_then(|query| serde_urlencoded::from_str(query).ok())
            .unwrap_or_default();
        let first = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, value)| value.clone())
        };
        Self {
            notice: first("notice"),
            product: first("product"),
            replica: first("replica"),
        }
    }

    /// The message to show; unknown notices and products show nothing.
    pub(super) fn text(&self) -> Option<String> {
        let product = || {
            self.product
                .as_deref()
                .and_then(catalog::find)
                .map(|p| p.name)
        };
        Some(match self.notice.as_deref()? {
            "added" => format!("Added {} to your cart.", product()?),
            "updated" => format!("Updated the quantity of {}.", product()?),
            "removed" => format!("Removed {} from your cart.", product()?),
            "cleared" => "Your cart is empty now.".to_owned(),
            "empty" => "Your cart is empty: add something before checking out.".to_owned(),
            "crashed" => format!(
                "Replica {} answered the crash button and crashed on purpose. This page \
                 came from another replica, and your cart is intact.",
                self.replica
                    .as_deref()
                    .filter(|r| crate::config::is_replica_id(r))?
            ),
            _ => return None,
        })
    }
}

/// Where to go after an action, with its notice.
pub(super) fn after(path: &str, notice: &str, product: Option<&Product>) -> Redirect {
    let product = product
        .map(|p| format!("&product={}", p.id))
        .unwrap_or_default();
    Redirect::to(&format!("{path}?notice={notice}{product}"))
}

/// A product as pages show it: every field escaped for HTML once, when the card is made.
pub(super) struct ProductCard {
    /// The product's slug, to find its card (unescaped).
    pub(super) slug: &'static str,
    pub(super) id: Escaped,
    pub(super) name: Escaped,
    pub(super) description: Escaped,
    pub(super) price: Escaped,
    pub(super) image: Escaped,
}

/// Text already escaped for HTML. askama writes an `HtmlSafe` value as it is, so the
/// catalog's text, the same on every page, is not escaped again for each one.
pub(super) struct Escaped(String);

impl Escaped {
    pub(super) fn new(text: &str) -> Self {
        use askama::filters::Escaper;
        let mut escaped = String::with_capacity(text.len());
        askama::filters::Html
            .write_escaped_str(&mut escaped, text)
            .expect("writing to a String cannot fail");
        Self(escaped)
    }
}

impl std::fmt::Display for Escaped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for Escaped {}

/// Every product's card, made once: pages show the same ten, over and over.
pub(super) static CARDS: LazyLock<Vec<ProductCard>> =
    LazyLock::new(|| catalog::products().iter().map(ProductCard::from).collect());

/// The card of a product of the catalog.
pub(super) fn card(product: &Product) -> &'static ProductCard {
    CARDS
        .iter()
        .find(|card| card.slug == product.id)
        .expect("every product of the catalog has a card")
}

impl From<&Product> for ProductCard {
    fn from(product: &Product) -> Self {
        Self {
            slug: product.id,
            id: Escaped::new(product.id),
            name: Escaped::new(product.name),
            description: Escaped::new(product.description),
            price: Escaped::new(&format_price(product.price_cents)),
            image: Escaped::new(&product.image_path()),
        }
    }
}

pub(super) struct CartRow {
    pub(super) product: &'static ProductCard,
    pub(super) quantity: u32,
    pub(super) line_total: Price,
    /// The quantities the steppers set (the maximum has no "+").
    pub(super) fewer: u32,
    pub(super) more: Option<u32>,
}

#[derive(Template, WebTemplate)]
#[template(path = "catalog.html")]
pub(super) struct CatalogPage {
    pub(super) layout: Layout,
    pub(super) products: &'static [ProductCard],
}

#[derive(Template, WebTemplate)]
#[template(path = "cart.html")]
pub(super) struct CartPage {
    pub(super) layout: Layout,
    pub(super) rows: Vec<CartRow>,
    pub(super) total: Price,
}

impl CartPage {
    pub(super) fn new(state: &AppState, cart: PricedCart) -> Self {
        Self {
            layout: Layout::new(state, Some(cart.item_count)),
            total: Price(cart.total_cents),
            rows: cart
                .lines
                .iter()
                .map(|line| CartRow {
                    product: card(line.product),
                    quantity: line.quantity,
                    line_total: Price(line.line_total_cents),
                    fewer: line.quantity.saturating_sub(1),
                    more: (line.quantity < MAX_LINE_QUANTITY).then_some(line.quantity + 1),
                })
                .collect(),
        }
    }
}

/// One replica in the fleet page's snapshot (`static/fleet.js` redraws the same cells).
pub(super) struct FleetRow {
    pub(super) id: String,
    pub(super) version: String,
    pub(super) started_at: String,
    pub(super) total: u64,
    pub(super) rate: String,
    /// Its fraction of the fleet's requests/s, and that as a percentage.
    pub(super) share: String,
    pub(super) share_pct: String,
    pub(super) state: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "fleet.html")]
pub(super) struct FleetPage {
    pub(super) layout: Layout,
    pub(super) rows: Vec<FleetRow>,
    pub(super) total_rate: String,
    pub(super) store_shared: bool,
    pub(super) fresh_secs: u64,
}

impl FleetPage {
    pub(super) fn new(state: &AppState, layout: Layout, members: Vec<fleet::Member>) -> Self {
        let total: f64 = members.iter().map(|m| m.report.requests_per_sec).sum();
        let rows = members
            .into_iter()
            .map(|member| {
                let report = member.report;
                let share = share_of(report.requests_per_sec, total);
                FleetRow {
                    share: format!("{share:.3}"),
                    share_pct: format!("{:.0}%", share * 100.0),
                    rate: format!("{:.1}", report.requests_per_sec),
                    total: report.requests_total,
                    state: if report.draining {
                        "draining"
                    } else {
                        "serving"
                    },
                    id: report.id,
                    version: report.version,
                    started_at: report.started_at,
                }
            })
            .collect();
        Self {
            layout,
            rows,
            total_rate: format!("{total:.1}"),
            store_shared: state.store.is_shared(),
            fresh_secs: fleet::FRESH_FOR.as_secs(),
        }
    }
}

/// A replica's share of the fleet's requests/s; 0 when the fleet is idle.
pub(super) fn share_of(rate: f64, total: f64) -> f64 {
    if total > 0.0 { rate / total } else { 0.0 }
}

pub(super) struct OrderRow {
    pub(super) name: String,
    pub(super) quantity: u32,
    pub(super) line_total: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "confirmation.html")]
pub(super) struct ConfirmationPage {
    pub(super) layout: Layout,
    pub(super) rows: Vec<OrderRow>,
    pub(super) item_count: u32,
    pub(super) total: String,
}

impl ConfirmationPage {
    pub(super) fn new(state: &AppState, order: Order) -> Self {
        Self {
            layout: Layout::new(state, Some(0)),
            item_count: order.item_count,
            total: format_price(order.total_cents),
            rows: order
                .lines
                .into_iter()
                .map(|line| OrderRow {
                    name: line.name,
                    quantity: line.quantity,
                    line_total: format_price(line.line_total_cents),
                })
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub(super) struct ErrorPage<'a> {
    pub(super) layout: Layout,
    pub(super) status: u16,
    pub(super) reason: &'static str,
    pub(super) message: &'a str,
}

/// Renders the error page for a failed browser request.
pub(crate) fn error_page(state: &AppState, status: StatusCode, report: &ErrorReport) -> String {
    let page = ErrorPage {
        layout: Layout::new(state, None),
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("Error"),
        message: &report.message,
    };
    page.render().unwrap_or_else(|err| {
        tracing::error!(%err, "could not render the error page");
        report.message.clone()
    })
}
