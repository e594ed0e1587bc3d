//! The typed session: what a visitor's session holds, over `tower_sessions::Session`.
//!
//! Handlers never touch session keys directly; they ask a [`CartSession`] for the cart, a
//! change to it, or a checkout. Reading is lazy: a visitor without a session cookie costs
//! no store access at all, and a session is created only when the cart first changes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use crate::cart::Cart;
use crate::error::{Error, Result};

const CART_KEY: &str = "cart";
const LAST_ORDER_KEY: &str = "last_order";

/// A line of a placed order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub name: String,
    pub quantity: u32,
    pub line_total_cents: u64,
}

/// What the confirmation page shows after a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub lines: Vec<OrderLine>,
    pub item_count: u32,
    pub total_cents: u64,
}

/// The visitor's session, seen as a cart.
pub struct CartSession(Session);

impl<S: Send + Sync> FromRequestParts<S> for CartSession {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Session::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|(_, message)| Error::Internal(message.to_owned()))
    }
}

impl CartSession {
    /// The cart; a value that no longer decodes (an older format) counts as empty.
    pub async fn cart(&self) -> Result<Cart> {
        self.get_or_default(CART_KEY).await
    }

    /// Applies a change to the cart. The session is written (by the session layer, after
    /// the handler) only if the cart really changed.
    pub async fn change_cart(&self, change: impl FnOnce(&mut Cart) -> Result<()>) -> Result<Cart> {
        let mut cart = self.cart().await?;
        let before = cart.clone();
        change(&mut cart)?;
        if cart != before {
            self.store_cart(&cart).await?;
        }
        Ok(cart)
    }

    /// Places the order: empties the cart, gives the session a new id (the old one is
    /// deleted) and keeps the order for the confirmation page. `None` if the cart is empty.
    pub async fn checkout(&self) -> Result<Option<Order>> {
        let priced = self.cart().await?.priced();
        if priced.lines.is_empty() {
            return Ok(None);
        }
        let order = Order {
            lines: priced
                .lines
                .iter()
                .map(|line| OrderLine {
                    name: line.product.name.to_owned(),
                    quantity: line.quantity,
                    line_total_cents: line.line_total_cents,
                })
                .collect(),
            item_count: priced.item_count,
            total_cents: priced.total_cents,
        };
        self.0.cycle_id().await?;
        self.0.remove_value(CART_KEY).await?;
        self.0.insert(LAST_ORDER_KEY, &order).await?;
        Ok(Some(order))
    }

    /// The order placed last in this session, if any.
    pub async fn last_order(&self) -> Result<Option<Order>> {
        self.get_or_default(LAST_ORDER_KEY).await
    }

    async fn store_cart(&self, cart: &Cart) -> Result<()> {
        if cart.is_empty() {
            self.0.remove_value(CART_KEY).await?;
        } else {
            self.0.insert(CART_KEY, cart).await?;
        }
        Ok(())
    }

    async fn get_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> Result<T> {
        match self.0.get::<T>(key).await {
            Ok(value) => Ok(value.unwrap_or_default()),
            Err(tower_sessions::session::Error::SerdeJson(err)) => {
                tracing::warn!(%err, key, "session value in an unknown format; starting afresh");
                Ok(T::default())
            }
            Err(err) => Err(err.into()),
        }
    }
}
