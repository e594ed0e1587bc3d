//! The product catalog, compiled into the binary.
//!
//! Every replica carries the same catalog, so it needs no shared store. Prices are integer
//! cents: money is never a float.

use serde::Serialize;

/// One product for sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Product {
    /// Stable slug used in URLs, forms and carts.
    pub id: &'static str,
    /// What pages show.
    pub name: &'static str,
    /// One sentence for the catalog page.
    pub description: &'static str,
    /// Integer cents, so totals never round.
    pub price_cents: u64,
}

impl Product {
    /// Where the product's picture is served from (one SVG per product under static/).
    pub fn image_path(&self) -> String {
        format!("/static/images/{}.svg", self.id)
    }
}

const PRODUCTS: [Product; 10] = [
    Product {
        id: "espresso-beans",
        name: "Espresso beans",
        description: "A kilo of dark-roasted beans that taste the same on every replica.",
        price_cents: 2450,
    },
    Product {
        id: "pour-over-kettle",
        name: "Pour-over kettle",
        description: "Gooseneck kettle for a slow, even pour.",
        price_cents: 5900,
    },
    Product {
        id: "ceramic-mug",
        name: "Ceramic mug",
        description: "Holds 350 ml and survives any number of restarts.",
        price_cents: 1400,
    },
    Product {
        id: "hand-grinder",
        name: "Hand grinder",
        description: "Steel burrs, forty clicks from espresso to French press.",
        price_cents: 8900,
    },
    Product {
        id: "paper-filters",
        name: "Paper filters",
        description: "A hundred unbleached filters.",
        price_cents: 650,
    },
    Product {
        id: "milk-frother",
        name: "Milk frother",
        description: "Stainless jug with a spring whisk.",
        price_cents: 3200,
    },
    Product {
        id: "travel-tumbler",
        name: "Travel tumbler",
        description: "Keeps coffee hot for six hours on the move.",
        price_cents: 2700,
    },
    Product {
        id: "digital-scale",
        name: "Digital scale",
        description: "Weighs to a tenth of a gram, with a timer.",
        price_cents: 3999,
    },
    Product {
        id: "cold-brew-jar",
        name: "Cold-brew jar",
        description: "Two litres, mesh filter included.",
        price_cents: 2250,
    },
    Product {
        id: "tea-sampler",
        name: "Tea sampler",
        description: "Twelve loose-leaf teas for the guests who skip coffee.",
        price_cents: 1875,
    },
];

/// All products, in display order.
pub fn products() -> &'static [Product] {
    &PRODUCTS
}

/// The product with this slug, if the catalog has it.
pub fn find(id: &str) -> Option<&'static Product> {
    PRODUCTS.iter().find(|product| product.id == id)
}

/// Formats cents as a price for people, e.g. 2450 -> "$24.50".
pub fn format_price(cents: u64) -> String {
    Price(cents).to_string()
}

/// A price in cents that writes itself for people ("$24.50") straight into a page, with
/// no `String` of its own: a cart page shows one per line and its total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(pub u64);

impl std::fmt::Display for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // "$", up to 18 digits of dollars, ".", two of cents.
        let mut text = [0u8; 24];
        let mut at = text.len();
        let mut put = |digit: u64| {
            at -= 1;
            text[at] = b'0' + (digit % 10) as u8;
        };
        put(self.0);
        put(self.0 / 10);
        at -= 1;
        text[at] = b'.';
        let mut dollars = self.0 / 100;
        loop {
            at -= 1;
            text[at] = b'0' + (dollars % 10) as u8;
            dollars /= 10;
            if dollars == 0 {
                break;
            }
        }
        at -= 1;
        text[at] = b'$';
        // `pad`, as a `String` would: a width or fill in the format still applies.
        f.pad(std::str::from_utf8(&text[at..]).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_url_safe_slugs() {
        let ids: HashSet<_> = products().iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), products().len());
        for id in ids {
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{id}"
            );
        }
    }

    #[test]
    fn every_product_has_an_image_in_static() {
        for product in products() {
            let file = format!("{}{}", env!("CARGO_MANIFEST_DIR"), product.image_path());
            assert!(std::path::Path::new(&file).is_file(), "missing {file}");
        }
    }

    #[test]
    fn finds_products_by_slug_only() {
        assert_eq!(find("ceramic-mug").unwrap().price_cents, 1400);
        assert!(find("Ceramic mug").is_none());
    }

    #[test]
    fn formats_cents_without_floats() {
        assert_eq!(format_price(0), "$0.00");
        assert_eq!(format_price(5), "$0.05");
        assert_eq!(format_price(3999), "$39.99");
        assert_eq!(format_price(123_456), "$1234.56");
        assert_eq!(format_price(100), "$1.00");
        assert_eq!(format_price(u64::MAX), "$184467440737095516.15");
        assert_eq!(format!("{:>7}", Price(250)), "  $2.50");
    }
}
