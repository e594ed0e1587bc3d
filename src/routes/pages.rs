//! Browser pages: catalog, cart, checkout confirmation, the fleet and error pages.
//!
//! Forms work without JavaScript: every change is a POST answered by a 303 to a GET page,
//! whose query string names a one-time notice ("Added ..."), so notices cost no store
//! write. Every page shows the replica that served it, so a person sees there is no
//! stickiness; `static/app.js` adds the replicas that served the tab before.

use std::sync::{Arc, LazyLock};

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Redirect;
use axum::routing::{get, post};
use serde::Deserialize;
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::cart::{AddQuantity, LineQuantity, MAX_LINE_QUANTITY, PricedCart};
use crate::catalog::{self, Product, format_price};
use crate::error::{Error, ErrorReport, Result};
use crate::extract::{AppForm, AppPath};
use crate::fleet;
use crate::order::Order;
use crate::security;
use crate::session::CartSession;
use crate::session::replays::Keyed;
use crate::state::AppState;

/// The browser pages. Their errors are HTML pages ([`super::html_errors`]), and so is the
/// answer to any unknown path (the fallback), since a person typed or followed it.
pub(crate) fn router(state: &AppState, sessions: super::Sessions) -> Router<AppState> {
    let mut router = Router::new()
        .route("/", get(catalog_page))
        .route("/cart", get(cart_page))
        .route("/cart/items", post(add_item).layer(super::body_guards()))
        .route(
            "/cart/items/{product_id}",
            post(set_item).layer(super::body_guards()),
        )
        .route("/cart/items/{product_id}/remove", post(remove_item))
        .route("/cart/clear", post(clear_cart))
        .route("/checkout", post(checkout))
        .route("/checkout/complete", get(confirmation_page))
        .route("/fleet", get(fleet_page));
    if state.chaos {
        router = router.merge(super::chaos::router());
    }
    let errors_state = state.clone();
    router.fallback(super::not_found).layer(
        ServiceBuilder::new()
            // Never kept by the browser: a page restored by "back" would bring back an
            // old cart and an add form token that was already used.
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-store"),
            ))
            .layer(MapResponseLayer::new(move |response| {
                super::html_errors(&errors_state, response)
            }))
            .layer(security::reject_cross_origin())
            .layer(sessions),
    )
}

/// What the header of every page shows.
struct Layout {
    /// Shared with the state, not copied per page.
    served_by: Arc<str>,
    /// The version the serving replica runs.
    version: Arc<str>,
    /// Units in the cart; `None` where it is unknown (error pages).
    cart_count: Option<u32>,
    /// A one-time message about the last action.
    notice: Option<String>,
    /// Whether to offer the "crash this replica" button.
    chaos: bool,
    /// A fresh token for this page's add forms: the same form sent twice (a double click,
    /// a resubmission after a 502) adds once. Made here, stored nowhere until it is used,
    /// so browsing still writes nothing.
    form_token: String,
}

impl Layout {
    fn new(state: &AppState, cart_count: Option<u32>) -> Self {
        Self {
            served_by: state.replica_id.clone(),
            version: state.version.clone(),
            cart_count,
            notice: None,
            chaos: state.chaos,
            form_token: format!("{:016x}", fastrand::u64(..)),
        }
    }

    fn with_notice(mut self, notice: &NoticeQuery) -> Self {
        self.notice = notice.text();
        self
    }
}

/// The notice named in a page's query string, as the redirect after an action left it.
#[derive(Debug, Default)]
struct NoticeQuery {
    notice: Option<String>,
    product: Option<String>,
    replica: Option<String>,
}

impl NoticeQuery {
    /// Reads the query leniently: a notice is a nicety, so a query it cannot use (repeated
    /// or unknown fields, bad escapes) shows no notice rather than failing the page.
    fn parse(query: Option<&str>) -> Self {
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
    fn text(&self) -> Option<String> {
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
fn after(path: &str, notice: &str, product: Option<&Product>) -> Redirect {
    let product = product
        .map(|p| format!("&product={}", p.id))
        .unwrap_or_default();
    Redirect::to(&format!("{path}?notice={notice}{product}"))
}

/// A product as pages show it: every field escaped for HTML once, when the card is made.
struct ProductCard {
    /// The product's slug, to find its card (unescaped).
    slug: &'static str,
    id: Escaped,
    name: Escaped,
    description: Escaped,
    price: Escaped,
    image: Escaped,
}

/// Text already escaped for HTML. askama writes an `HtmlSafe` value as it is, so the
/// catalog's text, the same on every page, is not escaped again for each one.
struct Escaped(String);

impl Escaped {
    fn new(text: &str) -> Self {
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
static CARDS: LazyLock<Vec<ProductCard>> =
    LazyLock::new(|| catalog::products().iter().map(ProductCard::from).collect());

/// The card of a product of the catalog.
fn card(product: &Product) -> &'static ProductCard {
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

struct CartRow {
    product: &'static ProductCard,
    quantity: u32,
    line_total: String,
    /// The quantities the steppers set (the maximum has no "+").
    fewer: u32,
    more: Option<u32>,
}

#[derive(Template, WebTemplate)]
#[template(path = "catalog.html")]
struct CatalogPage {
    layout: Layout,
    products: &'static [ProductCard],
}

#[derive(Template, WebTemplate)]
#[template(path = "cart.html")]
struct CartPage {
    layout: Layout,
    rows: Vec<CartRow>,
    total: String,
}

impl CartPage {
    fn new(state: &AppState, cart: PricedCart) -> Self {
        Self {
            layout: Layout::new(state, Some(cart.item_count)),
            total: format_price(cart.total_cents),
            rows: cart
                .lines
                .iter()
                .map(|line| CartRow {
                    product: card(line.product),
                    quantity: line.quantity,
                    line_total: format_price(line.line_total_cents),
                    fewer: line.quantity.saturating_sub(1),
                    more: (line.quantity < MAX_LINE_QUANTITY).then_some(line.quantity + 1),
                })
                .collect(),
        }
    }
}

/// One replica in the fleet page's snapshot (`static/fleet.js` redraws the same cells).
struct FleetRow {
    id: String,
    version: String,
    started_at: String,
    total: u64,
    rate: String,
    /// Its fraction of the fleet's requests/s, and that as a percentage.
    share: String,
    share_pct: String,
    state: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "fleet.html")]
struct FleetPage {
    layout: Layout,
    rows: Vec<FleetRow>,
    total_rate: String,
    store_shared: bool,
    fresh_secs: u64,
}

impl FleetPage {
    fn new(state: &AppState, layout: Layout, members: Vec<fleet::Member>) -> Self {
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
            store_shared: state.sessions.is_shared(),
            fresh_secs: fleet::FRESH_FOR.as_secs(),
        }
    }
}

/// A replica's share of the fleet's requests/s; 0 when the fleet is idle.
fn share_of(rate: f64, total: f64) -> f64 {
    if total > 0.0 { rate / total } else { 0.0 }
}

struct OrderRow {
    name: String,
    quantity: u32,
    line_total: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "confirmation.html")]
struct ConfirmationPage {
    layout: Layout,
    rows: Vec<OrderRow>,
    item_count: u32,
    total: String,
}

impl ConfirmationPage {
    fn new(state: &AppState, order: Order) -> Self {
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
struct ErrorPage<'a> {
    layout: Layout,
    status: u16,
    reason: &'static str,
    message: &'a str,
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

#[derive(Debug, Deserialize)]
struct AddForm {
    product_id: String,
    quantity: AddQuantity,
    /// The page's form token ([`Layout::form_token`]); forms from older pages lack it.
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SetForm {
    quantity: LineQuantity,
}

fn known_product(id: &str) -> Result<&'static Product> {
    catalog::find(id).ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

async fn catalog_page(
    State(state): State<AppState>,
    session: CartSession,
    RawQuery(query): RawQuery,
) -> Result<CatalogPage> {
    let cart = session.cart().await?.priced();
    let notice = NoticeQuery::parse(query.as_deref());
    Ok(CatalogPage {
        layout: Layout::new(&state, Some(cart.item_count)).with_notice(&notice),
        products: &CARDS,
    })
}

async fn cart_page(
    State(state): State<AppState>,
    session: CartSession,
    RawQuery(query): RawQuery,
) -> Result<CartPage> {
    let mut page = CartPage::new(&state, session.cart().await?.priced());
    page.layout = page
        .layout
        .with_notice(&NoticeQuery::parse(query.as_deref()));
    Ok(page)
}

/// The fleet as its heartbeats say now; `static/fleet.js` keeps it live.
async fn fleet_page(State(state): State<AppState>, session: CartSession) -> Result<FleetPage> {
    let count = session.cart().await?.priced().item_count;
    let members = fleet::members(&state).await?;
    Ok(FleetPage::new(
        &state,
        Layout::new(&state, Some(count)),
        members,
    ))
}

async fn add_item(session: CartSession, AppForm(form): AppForm<AddForm>) -> Result<Redirect> {
    let product = known_product(&form.product_id)?;
    let quantity = form.quantity;
    // The same page's add of the same product and quantity, sent again, is the same
    // change; a malformed token is ignored (it only guards against doubles).
    let request = format!("POST /cart/items {} {}", product.id, quantity.get());
    let keyed = form
        .token
        .filter(|token| token.len() <= 64 && token.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(|token| Keyed::new(&format!("form-{token}-{request}"), &request));
    session
        .change_cart_keyed(
            keyed.as_ref(),
            |cart| Ok(cart.add(product.id, quantity)?),
            |_| String::new(),
        )
        .await?;
    Ok(after("/", "added", Some(product)))
}

async fn set_item(
    session: CartSession,
    AppPath(product_id): AppPath<String>,
    AppForm(form): AppForm<SetForm>,
) -> Result<Redirect> {
    let product = known_product(&product_id)?;
    session
        .change_cart(|cart| Ok(cart.set(product.id, form.quantity)?))
        .await?;
    let notice = if form.quantity.get() == 0 {
        "removed"
    } else {
        "updated"
    };
    Ok(after("/cart", notice, Some(product)))
}

async fn remove_item(
    session: CartSession,
    AppPath(product_id): AppPath<String>,
) -> Result<Redirect> {
    let product = known_product(&product_id)?;
    session
        .change_cart(|cart| {
            cart.remove(product.id);
            Ok(())
        })
        .await?;
    Ok(after("/cart", "removed", Some(product)))
}

async fn clear_cart(session: CartSession) -> Result<Redirect> {
    session
        .change_cart(|cart| {
            cart.clear();
            Ok(())
        })
        .await?;
    Ok(after("/cart", "cleared", None))
}

async fn checkout(session: CartSession) -> Result<Redirect> {
    Ok(match session.checkout().await? {
        Some(_) => Redirect::to("/checkout/complete"),
        None => after("/cart", "empty", None),
    })
}

async fn confirmation_page(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    Ok(match session.last_order().await? {
        Some(order) => ConfirmationPage::new(&state, order).into_response(),
        None => Redirect::to("/").into_response(),
    })
}
