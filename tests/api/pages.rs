//! Browser pages and their forms, which work without JavaScript (POST, then 303 to a GET).

use fred::prelude::KeysInterface;
use reqwest::StatusCode;

use crate::helpers::{
    TestApp, bare_client, get_text, record_key, redis_client, session_cookie, two_replicas, visitor,
};

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
    assert!(html.contains(r#"id="served-by" class="chip current">replica-page</strong>"#));
    assert!(
        !html.contains("crash-replica"),
        "the crash button is for demos only"
    );
    for product in elastic_cart::catalog::products() {
        assert!(html.contains(&format!(r#"data-product-id="{}""#, product.id)));
    }
    assert_eq!(html.matches(r#"data-action="add-to-cart""#).count(), 10);
}

/// Adding, updating and removing through forms redirect to the cart, which shows
/// quantities and totals; a bad form gets an HTML error page, not a change.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn cart_forms_redirect_and_the_cart_page_shows_totals() {
    let (_redis, a, b) = two_replicas().await;
    let shopper = visitor();

    let added = shopper
        .post(a.url("/cart/items"))
        .form(&[("product_id", "hand-grinder"), ("quantity", "2")])
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::SEE_OTHER);
    let location = added.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/?notice=added&product=hand-grinder");
    let catalog = get_text(&shopper, &b.url(&location)).await;
    assert!(catalog.contains(r#"role="status">Added Hand grinder to your cart.</p>"#));
    assert!(
        catalog.contains(r#"id="cart-count">2</span><span class="visually-hidden"> items</span>"#)
    );

    let cart = get_text(&shopper, &b.url("/cart")).await;
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
    let cart = get_text(&shopper, &a.url("/cart")).await;
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
    let cart = get_text(&shopper, &b.url("/cart")).await;
    assert!(cart.contains("Your cart is empty"));
}

/// Checkout empties the cart, retires the old session key (it expires within a minute,
/// holding no cart), hands out a new session id and shows the order on the confirmation
/// page, on any replica.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn checkout_confirms_the_order_and_cycles_the_session_id() {
    let (redis, a, b) = two_replicas().await;
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

    let client = redis_client(&redis).await;
    let retired_ms: i64 = client.pttl(record_key(&old_id)).await.unwrap();
    let retired_for = elastic_cart::session::store::RETIRED_FOR.as_millis() as i64;
    assert!(
        (0..=retired_for).contains(&retired_ms),
        "the old record expires within {retired_for} ms: {retired_ms}"
    );
    assert_eq!(
        client.exists::<u32, _>(record_key(&new_id)).await.unwrap(),
        1
    );

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

    // A checkout of an empty cart just goes back to the cart, saying why.
    let again = shopper.post(a.url("/checkout")).send().await.unwrap();
    assert_eq!(again.headers()["location"], "/cart?notice=empty");
}

/// Cart lines have quantity steppers (plain forms), and the notices in redirects show
/// only for known actions and products.
#[tokio::test]
async fn steppers_change_quantities_and_notices_show_only_known_actions() {
    let app = TestApp::in_memory("replica-a").await;
    let shopper = visitor();
    shopper
        .post(app.url("/cart/items"))
        .form(&[("product_id", "ceramic-mug"), ("quantity", "98")])
        .send()
        .await
        .unwrap();
    let cart = get_text(&shopper, &app.url("/cart")).await;
    assert!(
        cart.contains(r#"name="quantity" value="97""#),
        "a − stepper"
    );
    assert!(
        cart.contains(r#"name="quantity" value="99""#),
        "a + stepper"
    );

    let more = shopper
        .post(app.url("/cart/items/ceramic-mug"))
        .form(&[("quantity", "99")])
        .send()
        .await
        .unwrap();
    let location = more.headers()["location"].to_str().unwrap().to_owned();
    let cart = get_text(&shopper, &app.url(&location)).await;
    assert!(cart.contains("Updated the quantity of Ceramic mug."));
    assert!(
        cart.contains(r#"<span data-role="quantity">99</span>"#),
        "the line shows the new quantity"
    );
    assert!(
        !cart.contains(r#"value="100""#),
        "no + stepper at the maximum"
    );

    // (query, the notice it shows, if any): unknown actions, products and replica names
    // show nothing; a repeated field takes its first value; nothing breaks the page.
    let cases = [
        ("?notice=added&product=unicorn", None),
        ("?notice=unknown", None),
        ("?notice=crashed&replica=<script>", None),
        ("?notice=%ZZ", None),
        (
            "?notice=added&notice=removed&product=ceramic-mug",
            Some("Added Ceramic mug"),
        ),
    ];
    for (query, notice) in cases {
        let page = shopper
            .get(app.url(&format!("/cart{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{query}");
        let html = page.text().await.unwrap();
        assert!(!html.contains("<script>"), "{query}");
        match notice {
            Some(text) => assert!(html.contains(text), "{query}"),
            None => assert!(!html.contains(r#"role="status""#), "{query}"),
        }
    }
}

/// Every response carries the security headers, and the policy allows no inline script.
#[tokio::test]
async fn responses_carry_security_headers() {
    let app = TestApp::in_memory("replica-a").await;
    for path in ["/", "/api/cart", "/no-such-page", "/static/app.js"] {
        let response = visitor().get(app.url(path)).send().await.unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "same-origin");
    }
}

/// Unsafe requests that a browser marks as cross-site, or whose Origin is another host,
/// are refused with 403 and change nothing; same-origin ones and clients that send
/// neither header (curl, scripts) pass.
#[tokio::test]
async fn cross_origin_changes_are_refused() {
    let app = TestApp::in_memory("replica-a").await;
    let shopper = visitor();
    let host = app.addr.to_string();
    let add = |headers: &[(&str, String)]| {
        let mut request = shopper
            .post(app.url("/api/cart/items"))
            .json(&serde_json::json!({"product_id": "ceramic-mug", "quantity": 1}));
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send()
    };

    let refused = [
        vec![("sec-fetch-site", "cross-site".to_owned())],
        vec![("sec-fetch-site", "same-site".to_owned())],
        vec![("origin", "https://evil.example".to_owned())],
    ];
    for headers in &refused {
        let response = add(headers).await.unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{headers:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "cross_origin");
    }
    let form = shopper
        .post(app.url("/cart/clear"))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    assert!(
        form.text()
            .await
            .unwrap()
            .contains("cross-origin request refused")
    );

    let allowed = [
        vec![("sec-fetch-site", "same-origin".to_owned())],
        vec![("origin", format!("http://{host}"))],
        vec![],
    ];
    for headers in &allowed {
        assert_eq!(
            add(headers).await.unwrap().status(),
            StatusCode::OK,
            "{headers:?}"
        );
    }
    let cart: serde_json::Value = app.cart(&shopper).await;
    assert_eq!(cart["item_count"], 3, "only the allowed adds counted");
}

/// A folder under /static is not a file: 404 with the JSON error, not a redirect to a
/// folder listing that does not exist.
#[tokio::test]
async fn a_static_folder_is_not_found_rather_than_redirected() {
    let app = TestApp::in_memory("replica-a").await;
    for path in [
        "/static/images",
        "/static/images/",
        "/static/no-such-file.css",
    ] {
        let response = bare_client().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

/// The add form carries the page's token: the same form sent twice (a double click, a
/// resubmission after a 502) adds once, on any replica, also when it was the session's
/// first change; another page's form (another token) adds again.
#[tokio::test]
#[ignore = "integration tier: cargo xtask test integration"]
async fn the_same_add_form_sent_twice_adds_once() {
    let (_redis, a, b) = two_replicas().await;
    let shopper = visitor();
    let response = shopper.get(a.url("/")).send().await.unwrap();
    assert_eq!(
        response.headers()["cache-control"],
        "no-store",
        "pages are not kept"
    );
    let page = response.text().await.unwrap();
    let token = page
        .split(r#"name="token" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a form token on the catalog page")
        .to_owned();
    let send = |app: &TestApp, token: &str| {
        shopper
            .post(app.url("/cart/items"))
            .form(&[
                ("product_id", "ceramic-mug"),
                ("quantity", "2"),
                ("token", token),
            ])
            .send()
    };
    for app in [&a, &b, &a] {
        let response = send(app, &token).await.unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
    }
    let cart = b.cart(&shopper).await;
    assert_eq!(cart["item_count"], 2, "one add of 2: {cart}");
    let other_page = format!("{:016x}", 1234u64);
    send(&b, &other_page).await.unwrap();
    send(&a, &other_page).await.unwrap();
    let cart = a.cart(&shopper).await;
    assert_eq!(
        cart["item_count"], 4,
        "another page's form adds again: {cart}"
    );
}
