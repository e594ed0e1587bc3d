//! A placed order: the cart's lines priced at checkout, kept in the session for the
//! confirmation page. Prices are copied here (unlike in the cart) because an order must
//! keep the price it was placed at.

use serde::{Deserialize, Serialize};

use crate::cart::Cart;

/// A line of a placed order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrderLine {
    pub(crate) name: String,
    pub(crate) quantity: u32,
    pub(crate) line_total_cents: u64,
}

/// What the confirmation page shows after a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Order {
    pub(crate) lines: Vec<OrderLine>,
    pub(crate) item_count: u32,
    pub(crate) total_cents: u64,
}

impl Order {
    /// The order for a cart, priced now; `None` for an empty cart.
    pub(crate) fn of(cart: &Cart) -> Option<Self> {
        let priced = cart.priced();
        if priced.lines.is_empty() {
            return None;
        }
        Some(Self {
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cart::AddQuantity;

    #[test]
    fn an_order_prices_every_line_and_an_empty_cart_has_none() {
        assert!(Order::of(&Cart::default()).is_none());
        let mut cart = Cart::default();
        cart.add("ceramic-mug", AddQuantity::try_from(2).unwrap())
            .unwrap();
        let order = Order::of(&cart).unwrap();
        let mug = crate::catalog::find("ceramic-mug").unwrap();
        assert_eq!(order.item_count, 2);
        assert_eq!(order.lines.len(), 1);
        assert_eq!(order.lines[0].line_total_cents, order.total_cents);
        assert_eq!(order.total_cents, 2 * mug.price_cents);
    }
}
