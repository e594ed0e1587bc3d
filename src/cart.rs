//! The cart and its rules, as plain data and functions.
//!
//! A cart stores only product ids and quantities; names and prices come from the catalog
//! when the cart is shown, so a price change never leaves stale copies in sessions. This
//! module touches neither HTTP nor Redis.

use serde::{Deserialize, Serialize};

use crate::catalog::{self, Product};

/// Most units one cart line may hold.
pub(crate) const MAX_LINE_QUANTITY: u32 = 99;
/// Most distinct products one cart may hold.
pub(crate) const MAX_LINES: usize = 50;

/// How many units to add in one request: 1 to 99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WholeNumber")]
pub(crate) struct AddQuantity(u32);

impl TryFrom<u32> for AddQuantity {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        if (1..=MAX_LINE_QUANTITY).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "quantity must be between 1 and {MAX_LINE_QUANTITY}, got {value}"
            ))
        }
    }
}

impl TryFrom<WholeNumber> for AddQuantity {
    type Error = String;

    fn try_from(value: WholeNumber) -> Result<Self, Self::Error> {
        Self::try_from(value.0)
    }
}

impl AddQuantity {
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// The quantity a line is set to: 0 (removes the line) to 99.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "WholeNumber")]
pub(crate) struct LineQuantity(u32);

impl TryFrom<u32> for LineQuantity {
    type Error = String;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        if value <= MAX_LINE_QUANTITY {
            Ok(Self(value))
        } else {
            Err(format!(
                "quantity must be between 0 and {MAX_LINE_QUANTITY}, got {value}"
            ))
        }
    }
}

impl TryFrom<WholeNumber> for LineQuantity {
    type Error = String;

    fn try_from(value: WholeNumber) -> Result<Self, Self::Error> {
        Self::try_from(value.0)
    }
}

/// A quantity as a client may write it: a whole number, also when written as a float with
/// no fraction (`2.0`, which is an `integer` to JSON Schema and what a client whose numbers
/// are all floats sends). A form's text goes through `u32`'s own parsing, as before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WholeNumber(u32);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = WholeNumber;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<WholeNumber, E> {
                // Anything over u32 is out of every quantity's range: say so with its value.
                u32::try_from(value).map(WholeNumber).map_err(|_| {
                    E::custom(format!(
                        "quantity must be at most {MAX_LINE_QUANTITY}, got {value}"
                    ))
                })
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<WholeNumber, E> {
                match u64::try_from(value) {
                    Ok(value) => self.visit_u64(value),
                    Err(_) => Err(E::custom(format!(
                        "quantity must not be negative, got {value}"
                    ))),
                }
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<WholeNumber, E> {
                // Not -0.0: a negative zero is no quantity a client means.
                if value.fract() == 0.0
                    && value.is_sign_positive()
                    && (0.0..=f64::from(u32::MAX)).contains(&value)
                {
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    return Ok(WholeNumber(value as u32));
                }
                if value.fract() == 0.0 && value > 0.0 {
                    return Err(E::custom(format!(
                        "quantity must be at most {MAX_LINE_QUANTITY}, got {value}"
                    )));
                }
                Err(E::invalid_type(serde::de::Unexpected::Float(value), &self))
            }
        }

        // `deserialize_u32`: JSON visits whatever number it holds (so `2.0` arrives as a
        // float), and a form parses its text as a `u32`.
        deserializer.deserialize_u32(Visitor)
    }
}

impl LineQuantity {
    pub(crate) fn get(self) -> u32 {
        self.0
    }
}

/// Why a cart change was refused; the cart is left as it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CartError {
    #[error("a cart line holds at most {MAX_LINE_QUANTITY} units; this line has {current}")]
    LineFull { current: u32 },
    #[error("a cart holds at most {MAX_LINES} different products")]
    TooManyLines,
}

/// One product in the cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Line {
    pub product_id: String,
    pub quantity: u32,
}

/// The session's cart: lines in the order they were first added.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cart {
    lines: Vec<Line>,
}

impl Cart {
    #[cfg(test)]
    fn lines(&self) -> &[Line] {
        &self.lines
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds units to a product's line, creating the line if needed.
    pub(crate) fn add(&mut self, product_id: &str, quantity: AddQuantity) -> Result<(), CartError> {
        match self.position(product_id) {
            Some(index) => {
                let line = &mut self.lines[index];
                let total = line.quantity + quantity.get();
                if total > MAX_LINE_QUANTITY {
                    return Err(CartError::LineFull {
                        current: line.quantity,
                    });
                }
                line.quantity = total;
            }
            None => self.push(product_id, quantity.get())?,
        }
        Ok(())
    }

    /// Sets a product's line to a quantity; 0 removes the line.
    pub(crate) fn set(
        &mut self,
        product_id: &str,
        quantity: LineQuantity,
    ) -> Result<(), CartError> {
        match (self.position(product_id), quantity.get()) {
            (Some(index), 0) => {
                self.lines.remove(index);
            }
            (Some(index), units) => self.lines[index].quantity = units,
            (None, 0) => {}
            (None, units) => self.push(product_id, units)?,
        }
        Ok(())
    }

    /// Removes a product's line; removing a line that is not there changes nothing.
    pub(crate) fn remove(&mut self, product_id: &str) {
        self.lines.retain(|line| line.product_id != product_id);
    }

    pub(crate) fn clear(&mut self) {
        self.lines.clear();
    }

    /// The lines with their catalog products and totals, skipping products that the
    /// catalog no longer has.
    pub(crate) fn priced(&self) -> PricedCart {
        let lines: Vec<PricedLine> = self
            .lines
            .iter()
            .filter_map(|line| {
                catalog::find(&line.product_id).map(|product| PricedLine {
                    product,
                    quantity: line.quantity,
                    line_total_cents: product.price_cents * u64::from(line.quantity),
                })
            })
            .collect();
        PricedCart {
            item_count: lines.iter().map(|line| line.quantity).sum(),
            total_cents: lines.iter().map(|line| line.line_total_cents).sum(),
            lines,
        }
    }

    fn position(&self, product_id: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|line| line.product_id == product_id)
    }

    fn push(&mut self, product_id: &str, quantity: u32) -> Result<(), CartError> {
        if self.lines.len() >= MAX_LINES {
            return Err(CartError::TooManyLines);
        }
        self.lines.push(Line {
            product_id: product_id.to_owned(),
            quantity,
        });
        Ok(())
    }
}

/// A cart line with its product and total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PricedLine {
    pub product: &'static Product,
    pub quantity: u32,
    pub line_total_cents: u64,
}

/// A cart with prices, ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PricedCart {
    pub lines: Vec<PricedLine>,
    pub item_count: u32,
    pub total_cents: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantity_may_be_a_whole_float_but_not_a_fraction_or_a_negative() {
        let read = |json: &str| serde_json::from_str::<AddQuantity>(json).map(AddQuantity::get);
        assert_eq!(read("48").unwrap(), 48);
        assert_eq!(read("48.0").unwrap(), 48);
        assert_eq!(read("4.8e1").unwrap(), 48);
        assert!(read("48.5").is_err());
        assert!(read("-1").is_err());
        assert!(read("-1.0").is_err());
        assert!(serde_json::from_str::<LineQuantity>("-0.0").is_err());
        assert!(read("0").is_err());
        assert!(read("1e300").is_err());
        assert!(read("\"48\"").is_err());
        let line = |json: &str| serde_json::from_str::<LineQuantity>(json).map(LineQuantity::get);
        assert_eq!(line("0.0").unwrap(), 0);
        assert!(line("100.0").is_err());
    }

    fn add(n: u32) -> AddQuantity {
        AddQuantity::try_from(n).unwrap()
    }

    fn set(n: u32) -> LineQuantity {
        LineQuantity::try_from(n).unwrap()
    }

    #[test]
    fn quantities_parse_only_within_their_range() {
        assert!(AddQuantity::try_from(0).is_err());
        assert!(AddQuantity::try_from(1).is_ok());
        assert!(AddQuantity::try_from(99).is_ok());
        assert!(AddQuantity::try_from(100).is_err());
        assert!(LineQuantity::try_from(0).is_ok());
        assert!(LineQuantity::try_from(100).is_err());
    }

    #[test]
    fn adding_twice_grows_one_line() {
        let mut cart = Cart::default();
        cart.add("ceramic-mug", add(2)).unwrap();
        cart.add("ceramic-mug", add(3)).unwrap();
        assert_eq!(
            cart.lines(),
            [Line {
                product_id: "ceramic-mug".into(),
                quantity: 5
            }]
        );
    }

    #[test]
    fn adding_past_99_is_refused_and_changes_nothing() {
        let mut cart = Cart::default();
        cart.add("ceramic-mug", add(60)).unwrap();
        let before = cart.clone();
        assert_eq!(
            cart.add("ceramic-mug", add(40)),
            Err(CartError::LineFull { current: 60 })
        );
        assert_eq!(cart, before);
        cart.add("ceramic-mug", add(39)).unwrap();
        assert_eq!(cart.lines()[0].quantity, 99);
    }

    #[test]
    fn setting_zero_removes_the_line_and_setting_creates_it() {
        let mut cart = Cart::default();
        cart.set("tea-sampler", set(4)).unwrap();
        assert_eq!(cart.lines()[0].quantity, 4);
        cart.set("tea-sampler", set(7)).unwrap();
        assert_eq!(cart.lines()[0].quantity, 7);
        cart.set("tea-sampler", set(0)).unwrap();
        assert!(cart.is_empty());
        cart.set("tea-sampler", set(0)).unwrap();
        assert!(cart.is_empty());
    }

    #[test]
    fn remove_and_clear_empty_the_cart() {
        let mut cart = Cart::default();
        cart.add("ceramic-mug", add(1)).unwrap();
        cart.add("tea-sampler", add(1)).unwrap();
        cart.remove("ceramic-mug");
        cart.remove("not-there");
        assert_eq!(cart.lines().len(), 1);
        cart.clear();
        assert!(cart.is_empty());
    }

    #[test]
    fn a_cart_holds_at_most_50_lines() {
        let mut cart = Cart::default();
        for i in 0..MAX_LINES {
            cart.add(&format!("product-{i}"), add(1)).unwrap();
        }
        let before = cart.clone();
        assert_eq!(cart.add("one-more", add(1)), Err(CartError::TooManyLines));
        assert_eq!(cart.set("one-more", set(1)), Err(CartError::TooManyLines));
        assert_eq!(cart, before);
        // Existing lines can still change.
        cart.add("product-0", add(5)).unwrap();
    }

    #[test]
    fn totals_multiply_integer_cents() {
        let mut cart = Cart::default();
        cart.add("digital-scale", add(3)).unwrap(); // 3 x 3999
        cart.add("paper-filters", add(2)).unwrap(); // 2 x 650
        let priced = cart.priced();
        assert_eq!(priced.item_count, 5);
        assert_eq!(priced.lines[0].line_total_cents, 11_997);
        assert_eq!(priced.total_cents, 11_997 + 1_300);
    }

    #[test]
    fn products_gone_from_the_catalog_are_not_priced() {
        let mut cart = Cart::default();
        cart.add("discontinued", add(1)).unwrap();
        cart.add("ceramic-mug", add(1)).unwrap();
        let priced = cart.priced();
        assert_eq!(priced.lines.len(), 1);
        assert_eq!(priced.total_cents, 1400);
    }
}

/// The cart's rules against a model: a map from product to units, with the two limits.
#[cfg(test)]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Add(u8, u32),
        Set(u8, u32),
        Remove(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        // 60 products, so the 50-line limit is reached; quantities up to the line limit.
        prop_oneof![
            // Clear rarely, so carts grow to the line limit.
            120 => (0u8..60, 1..=MAX_LINE_QUANTITY).prop_map(|(p, q)| Op::Add(p, q)),
            60 => (0u8..60, 0..=MAX_LINE_QUANTITY).prop_map(|(p, q)| Op::Set(p, q)),
            15 => (0u8..60).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    /// What the model says `op` does to `model`: `false` if it is refused (and changes
    /// nothing).
    fn apply_to_model(model: &mut BTreeMap<String, u32>, op: &Op) -> bool {
        let has_room = |model: &BTreeMap<String, u32>, id: &str| {
            model.contains_key(id) || model.len() < MAX_LINES
        };
        match op {
            Op::Add(p, q) => {
                let id = format!("p{p}");
                let now = model.get(&id).copied().unwrap_or(0);
                if now + q > MAX_LINE_QUANTITY || !has_room(model, &id) {
                    return false;
                }
                model.insert(id, now + q);
            }
            Op::Set(p, 0) | Op::Remove(p) => {
                model.remove(&format!("p{p}"));
            }
            Op::Set(p, q) => {
                let id = format!("p{p}");
                if !has_room(model, &id) {
                    return false;
                }
                model.insert(id, *q);
            }
            Op::Clear => model.clear(),
        }
        true
    }

    proptest! {
        /// Any sequence of changes leaves the cart equal to the model; a refused change
        /// leaves it as it was; lines always hold 1 to 99 units, at most 50 of them.
        #[test]
        fn any_sequence_of_changes_follows_the_model(ops in prop::collection::vec(op(), 0..400)) {
            let mut cart = Cart::default();
            let mut model = BTreeMap::new();
            for op in &ops {
                let before = cart.clone();
                let done = match op {
                    Op::Add(p, q) => cart.add(&format!("p{p}"), AddQuantity(*q)).is_ok(),
                    Op::Set(p, q) => cart.set(&format!("p{p}"), LineQuantity(*q)).is_ok(),
                    Op::Remove(p) => {
                        cart.remove(&format!("p{p}"));
                        true
                    }
                    Op::Clear => {
                        cart.clear();
                        true
                    }
                };
                prop_assert_eq!(done, apply_to_model(&mut model, op), "{:?}", op);
                if !done {
                    prop_assert_eq!(&cart, &before);
                }
                let lines: BTreeMap<String, u32> = cart
                    .lines()
                    .iter()
                    .map(|line| (line.product_id.clone(), line.quantity))
                    .collect();
                prop_assert_eq!(&lines, &model);
                prop_assert_eq!(cart.lines().len(), model.len(), "one line per product");
                prop_assert!(cart.lines().len() <= MAX_LINES);
                prop_assert!(cart.lines().iter().all(|l| (1..=MAX_LINE_QUANTITY).contains(&l.quantity)));
            }
        }
    }
}
