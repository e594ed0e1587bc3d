//! The pages' handlers: each reads or changes the session and answers with a view or a
//! 303 to one (a POST never answers with a page, so reloading repeats nothing).

use axum::extract::{RawQuery, State};
use axum::response::Redirect;
use serde::Deserialize;

use crate::cart::{AddQuantity, LineQuantity};
use crate::error::Result;
use crate::extract::{AppForm, AppPath};
use crate::fleet;
use crate::session::CartSession;
use crate::session::replays::Keyed;
use crate::state::AppState;

use super::super::known_product;
use super::views::*;

#[derive(Debug, Deserialize)]
pub(super) struct AddForm {
    product_id: String,
    quantity: AddQuantity,
    /// The page's form token ([`Layout::form_token`]); forms from older pages lack it.
    #[serde(default)]
    token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SetForm {
    quantity: LineQuantity,
}

pub(super) async fn catalog_page(
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

pub(super) async fn cart_page(
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
pub(super) async fn fleet_page(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<FleetPage> {
    let count = session.cart().await?.priced().item_count;
    let members = fleet::members(&state.store, &state.local()).await?;
    Ok(FleetPage::new(
        &state,
        Layout::new(&state, Some(count)),
        members,
    ))
}

pub(super) async fn add_item(
    session: CartSession,
    AppForm(form): AppForm<AddForm>,
) -> Result<Redirect> {
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

pub(super) async fn set_item(
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

pub(super) async fn remove_item(
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

pub(super) async fn clear_cart(session: CartSession) -> Result<Redirect> {
    session
        .change_cart(|cart| {
            cart.clear();
            Ok(())
        })
        .await?;
    Ok(after("/cart", "cleared", None))
}

pub(super) async fn checkout(session: CartSession) -> Result<Redirect> {
    Ok(match session.checkout().await? {
        Some(_) => Redirect::to("/checkout/complete"),
        None => after("/cart", "empty", None),
    })
}

pub(super) async fn confirmation_page(
    State(state): State<AppState>,
    session: CartSession,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    Ok(match session.last_order().await? {
        Some(order) => ConfirmationPage::new(&state, order).into_response(),
        None => Redirect::to("/").into_response(),
    })
}
