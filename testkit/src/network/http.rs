//! HTTP clients for fixtures and tests, and the few requests every test makes.

use std::time::Duration;

use serde_json::{Value, json};

/// Name of the session cookie the app sets.
pub const SESSION_COOKIE: &str = "cart_session";

/// An HTTP client with a cookie jar. Cookies ignore ports, so one client is one visitor
/// across every replica on 127.0.0.1.
pub fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// A client without cookies, for probes and requests that carry hand-made ones.
pub fn bare_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client")
}

/// POSTs `quantity` of `product` to the JSON API's `items_url` (`.../api/cart/items`) with
/// the visitor's session cookie.
pub async fn add_item(
    shopper: &reqwest::Client,
    items_url: &str,
    product: &str,
    quantity: u32,
) -> reqwest::Response {
    shopper
        .post(items_url)
        .json(&json!({"product_id": product, "quantity": quantity}))
        .send()
        .await
        .expect("sending an add")
}

/// GETs `url` and returns its JSON body.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.expect("sending a GET");
    response.json().await.expect("a JSON body")
}

/// GETs `url` and returns its body as text.
pub async fn get_text(client: &reqwest::Client, url: &str) -> String {
    let response = client.get(url).send().await.expect("sending a GET");
    response.text().await.expect("a text body")
}

/// The session cookie's value in a response, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(|cookie| cookie.strip_prefix(&format!("{SESSION_COOKIE}=")))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}
