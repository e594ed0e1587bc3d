//! Browser pages and their forms, which work without JavaScript (POST, then 303 to a GET).

use fred::prelude::KeysInterface;
use reqwest::StatusCode;

use crate::helpers::{RedisServer, TestApp, session_cookie, visitor};

/// The catalog shows every product with an add form and the replica that served it.
#[tokio::test]
async fn the_catalog_page_lists_products_and_the_replica() {
    let app = TestApp::in_memory("replica-page").await;
    let page = visitor().get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<strong id="served-by">replica-page</strong>"#));
    for product in elastic_cart::catalog::products() {
        assert!(html.contains(&format!(r#"data-product-id="{}""#, product.id)));
    }
    assert_eq!(html.matches(r#"data-action="add-to-cart""#).count(), 10);
}

/// Adding, updating and removing through forms redirect to the cart, which shows
/// quantities and totals; a bad form gets an HTML error page, not a change.
#[tokio::test]
async fn cart_forms_redirect_and_the_cart_page_shows_totals() {
    let redis = RedisServer::start().await;
    let a = TestApp::with_redis(&redis.url(), "replica-a").await;
    let b = TestApp::with_redis(&redis.url(), "replica-b").await;
    let shopper = visitor();

    let added = shopper
        .post(a.url("/cart/items"))
        .form(&[("product_id", "hand-grinder"), ("quantity", "2")])
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    assert_eq!(added.headers()["location"], "/cart");

    let cart = shopper
        .get(b.url("/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cart.contains(r#"<tr data-product-id="hand-grinder">"#));
    assert!(cart.contains(r#"<span data-role="quantity">2</span>"#));
    assert!(cart.contains("$178.00"));

    let updated = shopper
        .post(b.url("/cart/items/hand-grinder"))
        .form(&[("quantity", "3")])
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::SEE_OTHER);
    let cart = shopper
        .get(a.url("/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cart.contains(r#"<span data-role="quantity">3</span>"#));

    let refused = shopper
        .post(a.url("/cart/items/hand-grinder"))
        .form(&[("quantity", "lots")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(refused.text().await.unwrap().contains("role=\"alert\""));

    let removed = shopper
        .post(a.url("/cart/items/hand-grinder/remove"))
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    let cart = shopper
        .get(b.url("/cart"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cart.contains("Your cart is empty"));
}

/// Checkout empties the cart, deletes the old session key, hands out a new session id
/// and shows the order on the confirmation page, on any replica.
#[tokio::test]
async fn checkout_confirms_the_order_and_cycles_the_session_id() {
    let redis = RedisServer::start().await;
    let a = TestApp::with_redis(&redis.url(), "replica-a").await;
    let b = TestApp::with_redis(&redis.url(), "replica-b").await;
    let shopper = visitor();

    let added = shopper
        .post(a.url("/cart/items"))
        .form(&[("product_id", "paper-filters"), ("quantity", "4")])
        .send()
        .await
        .unwrap();
    let old_id = session_cookie(&added).expect("the first change sets the session cookie");

    let checkout = shopper.post(b.url("/checkout")).send().await.unwrap();
    assert_eq!(checkout.status(), StatusCode::SEE_OTHER);
    assert_eq!(checkout.headers()["location"], "/checkout/complete");
    let new_id = session_cookie(&checkout).expect("checkout sets a new session cookie");
    assert_ne!(new_id, old_id);

    let client = redis.client().await;
    assert_eq!(client.exists::<u32, _>(&old_id).await.unwrap(), 0);
    assert_eq!(client.exists::<u32, _>(&new_id).await.unwrap(), 1);

    let confirmation = shopper
        .get(a.url("/checkout/complete"))
        .send()
        .await
        .unwrap();
    assert_eq!(confirmation.status(), StatusCode::OK);
    let html = confirmation.text().await.unwrap();
    assert!(html.contains("4 × Paper filters"));
    assert!(html.contains("$26.00"));

    let cart = shopper.get(b.url("/api/cart")).send().await.unwrap();
    let cart: serde_json::Value = cart.json().await.unwrap();
    assert_eq!(cart["item_count"], 0);

    // A checkout of an empty cart just goes back to the cart.
    let again = shopper.post(a.url("/checkout")).send().await.unwrap();
    assert_eq!(again.headers()["location"], "/cart");
}
