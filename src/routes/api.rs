//! The JSON API: `/api/products`, `/api/cart` and `/api/fleet`. Its field names are a
//! contract that other tools depend on.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;

use super::known_product;
use crate::cart::{AddQuantity, Cart, LineQuantity};
use crate::catalog::{self, Product};
use crate::error::Result;
use crate::extract::{AppJson, AppPath, IdempotencyKey};
use crate::fleet;
use crate::security;
use crate::session::replays::Keyed;
use crate::session::{CartSession, Changed};
use crate::state::AppState;

/// The JSON API, nested under `/api`. Its errors, and any unknown path under `/api`, are
/// the JSON error (the global [`super::json_errors`] layer fills in bare ones).
pub(crate) fn router(sessions: super::SessionLayer) -> Router<AppState> {
    Router::new()
        .route("/products", get(list_products))
        .route("/fleet", get(show_fleet))
        .route("/cart", get(show_cart).delete(clear_cart))
        .route(
            "/cart/items",
            axum::routing::post(add_item).layer(super::body_guards()),
        )
        .route(
            "/cart/items/{product_id}",
            put(set_item)
                .layer(super::body_guards())
                .delete(remove_item),
        )
        .fallback(super::not_found)
        .layer(
            ServiceBuilder::new()
                .layer(security::reject_cross_origin())
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
        AppJson(Self::of(cart, state))
    }

    fn of(cart: &Cart, state: &AppState) -> Self {
        let priced = cart.priced();
        Self {
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
        }
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

async fn list_products() -> AppJson<&'static [Product]> {
    AppJson(catalog::products())
}

#[derive(Debug, Serialize)]
pub(crate) struct FleetBody {
    pub replicas: Vec<fleet::Member>,
    pub served_by: String,
}

/// The replicas whose heartbeat is fresh (see `crate::fleet`); never cached, since the
/// fleet page polls it.
async fn show_fleet(State(state): State<AppState>) -> Result<Response> {
    let replicas = fleet::members(&state.store, &state.local()).await?;
    let body = FleetBody {
        replicas,
        served_by: state.replica_id.to_string(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], AppJson(body)).into_response())
}

async fn show_cart(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<AppJson<CartBody>> {
    Ok(CartBody::new(&session.cart().await?, &state))
}

/// Applies a change of the cart made through the API and answers with the new cart. With
/// an `Idempotency-Key` the answer is kept with the change, and a retry of the same
/// `request` (method, path, what it asks) with the same key gets it again, changing
/// nothing, on any replica.
async fn change(
    state: &AppState,
    session: &CartSession,
    key: IdempotencyKey,
    request: String,
    change: impl Fn(&mut Cart) -> Result<()>,
) -> Result<Response> {
    let keyed = key.0.map(|key| Keyed::new(&key, &request));
    let answer =
        |cart: &Cart| serde_json::to_string(&CartBody::of(cart, state)).unwrap_or_default();
    Ok(
        match session
            .change_cart_keyed(keyed.as_ref(), change, answer)
            .await?
        {
            Changed::Now(cart) => CartBody::new(&cart, state).into_response(),
            Changed::Before(body) => {
                ([(header::CONTENT_TYPE, "application/json")], body).into_response()
            }
        },
    )
}

async fn add_item(
    State(state): State<AppState>,
    session: CartSession,
    key: IdempotencyKey,
    AppJson(body): AppJson<AddItem>,
) -> Result<Response> {
    let product = known_product(&body.product_id)?;
    let quantity = body.quantity;
    let request = format!("POST /api/cart/items {} {}", product.id, quantity.get());
    change(&state, &session, key, request, |cart| {
        Ok(cart.add(product.id, quantity)?)
    })
    .await
}

async fn set_item(
    State(state): State<AppState>,
    session: CartSession,
    key: IdempotencyKey,
    AppPath(product_id): AppPath<String>,
    AppJson(body): AppJson<SetItem>,
) -> Result<Response> {
    let product = known_product(&product_id)?;
    let quantity = body.quantity;
    let request = format!("PUT /api/cart/items/{} {}", product.id, quantity.get());
    change(&state, &session, key, request, |cart| {
        Ok(cart.set(product.id, quantity)?)
    })
    .await
}

async fn remove_item(
    State(state): State<AppState>,
    session: CartSession,
    key: IdempotencyKey,
    AppPath(product_id): AppPath<String>,
) -> Result<Response> {
    let product = known_product(&product_id)?;
    let request = format!("DELETE /api/cart/items/{}", product.id);
    change(&state, &session, key, request, |cart| {
        cart.remove(product.id);
        Ok(())
    })
    .await
}

async fn clear_cart(
    State(state): State<AppState>,
    session: CartSession,
    key: IdempotencyKey,
) -> Result<Response> {
    change(
        &state,
        &session,
        key,
        "DELETE /api/cart".to_owned(),
        |cart| {
            cart.clear();
            Ok(())
        },
    )
    .await
}
