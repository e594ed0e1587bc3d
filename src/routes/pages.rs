//! Browser pages: catalog, cart, checkout confirmation and error pages.
//!
//! Forms work without JavaScript: every change is a POST answered by a 303 to a GET page.
//! Every page shows the replica that served it, so a person sees there is no stickiness.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use serde::Deserialize;

use crate::AppState;
use crate::cart::{AddQuantity, LineQuantity, PricedCart};
use crate::catalog::{self, Product, format_price};
use crate::error::{Error, ErrorReport, Result};
use crate::extract::{Form, Path};
use crate::session::{CartSession, Order};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(catalog_page))
        .route("/cart", get(cart_page))
        .route("/cart/items", post(add_item))
        .route("/cart/items/{product_id}", post(set_item))
        .route("/cart/items/{product_id}/remove", post(remove_item))
        .route("/cart/clear", post(clear_cart))
        .route("/checkout", post(checkout))
        .route("/checkout/complete", get(confirmation_page))
}

/// What the header of every page shows.
struct Layout {
    served_by: String,
    /// Units in the cart; `None` where it is unknown (error pages).
    cart_count: Option<u32>,
}

impl Layout {
    fn new(state: &AppState, cart_count: Option<u32>) -> Self {
        Self {
            served_by: state.replica_id.to_string(),
            cart_count,
        }
    }
}

struct ProductCard {
    id: &'static str,
    name: &'static str,
    description: &'static str,
    price: String,
    image: String,
}

impl From<&Product> for ProductCard {
    fn from(product: &Product) -> Self {
        Self {
            id: product.id,
            name: product.name,
            description: product.description,
            price: format_price(product.price_cents),
            image: product.image_path(),
        }
    }
}

struct CartRow {
    product: ProductCard,
    quantity: u32,
    line_total: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "catalog.html")]
struct CatalogPage {
    layout: Layout,
    products: Vec<ProductCard>,
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
                    product: line.product.into(),
                    quantity: line.quantity,
                    line_total: format_price(line.line_total_cents),
                })
                .collect(),
        }
    }
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
pub fn error_page(state: &AppState, status: StatusCode, report: &ErrorReport) -> String {
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
}

#[derive(Debug, Deserialize)]
struct SetForm {
    quantity: LineQuantity,
}

fn known_product(id: &str) -> Result<&'static Product> {
    catalog::find(id).ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

fn to_cart() -> Redirect {
    Redirect::to("/cart")
}

async fn catalog_page(State(state): State<AppState>, session: CartSession) -> Result<CatalogPage> {
    let cart = session.cart().await?.priced();
    Ok(CatalogPage {
        layout: Layout::new(&state, Some(cart.item_count)),
        products: catalog::products().iter().map(ProductCard::from).collect(),
    })
}

async fn cart_page(State(state): State<AppState>, session: CartSession) -> Result<CartPage> {
    Ok(CartPage::new(&state, session.cart().await?.priced()))
}

async fn add_item(session: CartSession, Form(form): Form<AddForm>) -> Result<Redirect> {
    let product = known_product(&form.product_id)?;
    session
        .change_cart(|cart| Ok(cart.add(product.id, form.quantity)?))
        .await?;
    Ok(to_cart())
}

async fn set_item(
    session: CartSession,
    Path(product_id): Path<String>,
    Form(form): Form<SetForm>,
) -> Result<Redirect> {
    let product = known_product(&product_id)?;
    session
        .change_cart(|cart| Ok(cart.set(product.id, form.quantity)?))
        .await?;
    Ok(to_cart())
}

async fn remove_item(session: CartSession, Path(product_id): Path<String>) -> Result<Redirect> {
    let product = known_product(&product_id)?;
    session
        .change_cart(|cart| {
            cart.remove(product.id);
            Ok(())
        })
        .await?;
    Ok(to_cart())
}

async fn clear_cart(session: CartSession) -> Result<Redirect> {
    session
        .change_cart(|cart| {
            cart.clear();
            Ok(())
        })
        .await?;
    Ok(to_cart())
}

async fn checkout(session: CartSession) -> Result<Redirect> {
    Ok(match session.checkout().await? {
        Some(_) => Redirect::to("/checkout/complete"),
        None => to_cart(),
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
