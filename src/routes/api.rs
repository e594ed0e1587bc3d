//! The JSON API: `/api/products`, `/api/cart` and `/api/fleet`. Its field names are a
//! contract that other tools depend on.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use serde::{Deserialize, Serialize};
use tower::ServiceBuilder;
use utoipa::{OpenApi, ToSchema};

use super::known_product;
use super::openapi::shared::IdempotencyKeyParam;
use super::openapi::shared::error_sets::{
    CartChangeErrors, LineBodyChangeErrors, LineChangeErrors, ReadErrors,
};
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

/// The routes of the OpenAPI document (`super::openapi`).
#[derive(OpenApi)]
#[openapi(paths(
    list_products,
    show_cart,
    add_item,
    set_item,
    remove_item,
    clear_cart,
    show_fleet
))]
pub(crate) struct Doc;

/// A line of the cart, priced from the catalogue.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CartItem {
    pub product_id: &'static str,
    pub name: &'static str,
    pub quantity: u32,
    pub unit_price_cents: u64,
    pub line_total_cents: u64,
}

/// The cart, as every cart route answers it.
#[derive(Debug, Serialize, ToSchema)]
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

/// What `POST /api/cart/items` adds.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct AddItem {
    #[schema(schema_with = super::openapi::shared::product_id)]
    pub product_id: String,
    #[schema(schema_with = super::openapi::shared::add_quantity)]
    pub quantity: AddQuantity,
}

/// What `PUT /api/cart/items/{product_id}` sets the line to.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct SetItem {
    #[schema(schema_with = super::openapi::shared::line_quantity)]
    pub quantity: LineQuantity,
}

/// The product of a line, in the path.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code, reason = "only its OpenAPI description is used")]
pub(crate) struct LinePath {
    /// The product whose line to change.
    #[param(schema_with = super::openapi::shared::product_id)]
    product_id: String,
}

#[utoipa::path(
    get,
    path = "/api/products",
    tag = "catalog",
    responses((status = 200, description = "The catalogue.", body = [Product])),
)]
async fn list_products() -> AppJson<&'static [Product]> {
    AppJson(catalog::products())
}

/// The replicas that serve the shop.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FleetBody {
    pub replicas: Vec<fleet::Member>,
    pub served_by: String,
}

/// The replicas whose heartbeat is fresh (see `crate::fleet`); never cached, since the
/// fleet page polls it.
#[utoipa::path(
    get,
    path = "/api/fleet",
    tag = "fleet",
    responses(
        (status = 200, description = "The replicas whose heartbeat is fresh, by id; \
            `Cache-Control: no-store`.", body = FleetBody),
        ReadErrors,
    ),
)]
async fn show_fleet(State(state): State<AppState>) -> Result<Response> {
    let replicas = fleet::members(&state.store, &state.local()).await?;
    let body = FleetBody {
        replicas,
        served_by: state.replica_id.to_string(),
    };
    Ok(([(header::CACHE_CONTROL, "no-store")], AppJson(body)).into_response())
}

#[utoipa::path(
    get,
    path = "/api/cart",
    tag = "cart",
    responses(
        (status = 200, description = "The visitor's cart (empty without a session).",
            body = CartBody),
        ReadErrors,
    ),
)]
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

/// Adds 1 to 99 units of a product to its line.
#[utoipa::path(
    post,
    path = "/api/cart/items",
    tag = "cart",
    params(IdempotencyKeyParam),
    request_body = AddItem,
    responses(
        (status = 200, description = "The cart after the change; for a retry with the same \
            `Idempotency-Key`, the first answer again.", body = CartBody,
            links(
                ("SetTheLine" = (operation_id = "set_item",
                    parameters(("product_id" = "$request.body#/product_id")))),
                ("RemoveTheLine" = (operation_id = "remove_item",
                    parameters(("product_id" = "$request.body#/product_id")))),
            ),
        ),
        LineBodyChangeErrors,
    ),
)]
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

/// Sets a line to 0 to 99 units (0 removes it).
#[utoipa::path(
    put,
    path = "/api/cart/items/{product_id}",
    tag = "cart",
    params(LinePath, IdempotencyKeyParam),
    request_body = SetItem,
    responses(
        (status = 200, description = "The cart after the change; for a retry with the same \
            `Idempotency-Key`, the first answer again.", body = CartBody,
        ),
        LineBodyChangeErrors,
    ),
)]
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

/// Removes a product's line.
#[utoipa::path(
    delete,
    path = "/api/cart/items/{product_id}",
    tag = "cart",
    params(LinePath, IdempotencyKeyParam),
    responses(
        (status = 200, description = "The cart after the change; for a retry with the same \
            `Idempotency-Key`, the first answer again.", body = CartBody,
        ),
        LineChangeErrors,
    ),
)]
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

/// Empties the cart.
#[utoipa::path(
    delete,
    path = "/api/cart",
    tag = "cart",
    params(IdempotencyKeyParam),
    responses(
        (status = 200, description = "The cart after the change; for a retry with the same \
            `Idempotency-Key`, the first answer again.", body = CartBody,
        ),
        CartChangeErrors,
    ),
)]
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
