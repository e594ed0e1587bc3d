//! The JSON API: `/api/products` and `/api/cart`. Its field names are a contract that
//! other tools depend on.

use axum::Router;
use axum::extract::State;
use axum::middleware;
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;

use crate::cart::{AddQuantity, Cart, LineQuantity};
use crate::catalog::{self, Product};
use crate::error::{Error, Result};
use crate::extract::{AppJson, AppPath};
use crate::security;
use crate::session::CartSession;
use crate::state::AppState;

/// The JSON API, nested under `/api`. Its errors, and any unknown path under `/api`, are
/// the JSON error (the global [`super::json_errors`] layer fills in bare ones).
pub(crate) fn router(sessions: super::Sessions) -> Router<AppState> {
    Router::new()
        .route("/products", get(list_products))
        .route("/cart", get(show_cart).delete(clear_cart))
        .route("/cart/items", axum::routing::post(add_item))
        .route(
            "/cart/items/{product_id}",
            put(set_item).delete(remove_item),
        )
        .fallback(super::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(security::reject_cross_origin))
                .layer(sessions),
        )
}

#[derive(Debug, Serialize)]
pub(crate) struct CartItem {
    pub product_id: &'static str,
    pub name: &'static str,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub line_total_cents: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct CartBody {
    pub items: Vec<CartItem>,
    pub item_count: u32,
    pub total_cents: u64,
    pub served_by: String,
}

impl CartBody {
    fn new(cart: &Cart, state: &AppState) -> AppJson<Self> {
        let priced = cart.priced();
        AppJson(Self {
            items: priced
                .lines
                .iter()
                .map(|line| CartItem {
                    product_id: line.product.id,
                    name: line.product.name,
                    quantity: line.quantity,
                    unit_price_cents: line.product.price_cents,
                    line_total_cents: line.line_total_cents,
                })
                .collect(),
            item_count: priced.item_count,
            total_cents: priced.total_cents,
            served_by: state.replica_id.to_string(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AddItem {
    pub product_id: String,
    pub quantity: AddQuantity,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SetItem {
    pub quantity: LineQuantity,
}

fn known_product(id: &str) -> Result<&'static Product> {
    catalog::find(id).ok_or_else(|| Error::UnknownProduct(id.to_owned()))
}

async fn list_products() -> AppJson<&'static [Product]> {
    AppJson(catalog::products())
}

async fn show_cart(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<AppJson<CartBody>> {
    Ok(CartBody::new(&session.cart().await?, &state))
}

async fn add_item(
    State(state): State<AppState>,
    session: CartSession,
    AppJson(body): AppJson<AddItem>,
) -> Result<AppJson<CartBody>> {
    let product = known_product(&body.product_id)?;
    let cart = session
        .change_cart(|cart| Ok(cart.add(product.id, body.quantity)?))
        .await?;
    Ok(CartBody::new(&cart, &state))
}

async fn set_item(
    State(state): State<AppState>,
    session: CartSession,
    AppPath(product_id): AppPath<String>,
    AppJson(body): AppJson<SetItem>,
) -> Result<AppJson<CartBody>> {
    let product = known_product(&product_id)?;
    let cart = session
        .change_cart(|cart| Ok(cart.set(product.id, body.quantity)?))
        .await?;
    Ok(CartBody::new(&cart, &state))
}

async fn remove_item(
    State(state): State<AppState>,
    session: CartSession,
    AppPath(product_id): AppPath<String>,
) -> Result<AppJson<CartBody>> {
    let product = known_product(&product_id)?;
    let cart = session
        .change_cart(|cart| {
            cart.remove(product.id);
            Ok(())
        })
        .await?;
    Ok(CartBody::new(&cart, &state))
}

async fn clear_cart(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<AppJson<CartBody>> {
    let cart = session
        .change_cart(|cart| {
            cart.clear();
            Ok(())
        })
        .await?;
    Ok(CartBody::new(&cart, &state))
}
