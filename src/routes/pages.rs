//! Browser pages: catalog, cart, checkout confirmation, the fleet and error pages.
//!
//! Forms work without JavaScript: every change is a POST answered by a 303 to a GET page,
//! whose query string names a one-time notice ("Added ..."), so notices cost no store
//! write. Every page shows the replica that served it, so a person sees there is no
//! stickiness; `static/app.js` adds the replicas that served the tab before.

//!
//! [`views`] holds what the pages show, [`handlers`] what each route does.

mod handlers;
mod views;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::routing::{get, post};
use tower::ServiceBuilder;
use tower::util::MapResponseLayer;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::security;
use crate::state::AppState;

use self::handlers::*;
pub(crate) use self::views::error_page;

/// The browser pages. Their errors are HTML pages ([`super::html_errors`]), and so is the
/// answer to any unknown path (the fallback), since a person typed or followed it.
pub(crate) fn router(state: &AppState, sessions: super::SessionLayer) -> Router<AppState> {
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
