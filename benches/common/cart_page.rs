//! The cart page of the benchmark's stand-in servers, shared by `bare-3`'s
//! (`benches/fleet/bare.rs`) and `stock-3`'s (`benches/stock`; each includes this file):
//! an HTML page of the product's size for a cart, so that nginx and the load generator
//! move the same bytes whichever server answers.

use std::collections::BTreeMap;

/// A cart: units per product.
pub(crate) type Cart = BTreeMap<String, u32>;

/// Page sizes of the product's `/cart`, measured on its release binary.
const EMPTY_PAGE: usize = 1639;
const PAGE_BASE: usize = 2170;
const PAGE_PER_LINE: usize = 1040;

/// The cart page: one table row per line, padded to the product's size.
pub(crate) fn page(cart: &Cart) -> String {
    let size = if cart.is_empty() {
        EMPTY_PAGE
    } else {
        PAGE_BASE + PAGE_PER_LINE * cart.len()
    };
    let mut html = String::with_capacity(size);
    html.push_str("<!doctype html><html><head><title>Cart</title></head><body><table>");
    for (product, quantity) in cart {
        html.push_str(&format!("<tr><td>{product}</td><td>{quantity}</td></tr>"));
    }
    html.push_str("</table><!--");
    while html.len() + 17 < size {
        html.push('.');
    }
    html.push_str("--></body></html>");
    html
}
