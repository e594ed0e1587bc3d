//! The typed session: what a visitor's session holds, over `tower_sessions::Session`.
//!
//! Handlers never touch session keys directly; they ask a [`CartSession`] for the cart, a
//! change to it, or a checkout. Reading is lazy: a visitor without a session cookie costs
//! no store access at all, and a session is created only when the cart first changes.
//!
//! Changes of an existing session go through [`update`] (compare-and-set), so overlapping
//! changes on different replicas all count; only the first change of a new session, which
//! nobody else can know yet, is left to tower-sessions' save. [`store`] holds the two
//! places sessions live (Redis, memory).
//!
//! Dependencies point one way: routes -> session -> store.

pub mod cookie;
pub(crate) mod markers;
pub(crate) mod replays;
pub mod store;
pub(crate) mod update;

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tower_sessions::Session;

use self::replays::{Keyed, Prior};
use self::store::{Data, Store};
use self::update::Outcome;
use crate::cart::Cart;
use crate::error::{Error, Result};
use crate::order::Order;

pub use self::cookie::{SECURE_SESSION_COOKIE, SESSION_COOKIE, session_cookie_name};

const CART_KEY: &str = "cart";
const LAST_ORDER_KEY: &str = "last_order";
/// Marks a session whose cart has been checked out, until its record expires a minute later
/// (retired, see `store::RETIRED_FOR`): a change that races with the checkout must not land
/// in it. Holds the time of
/// the checkout (Unix milliseconds) and the order, so that a checkout cut short (the store
/// failed between taking the cart and moving to a new id) can be finished by a retry.
const CHECKED_OUT_KEY: &str = "checked_out";
/// How long a checked-out mark means "a checkout is finishing" (changes get 409); an older
/// one was left by a checkout cut short, and a change then starts a new session.
const CHECKOUT_GRACE_MS: i128 = 10_000;

/// What [`CHECKED_OUT_KEY`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckedOut {
    at_ms: i128,
    order: Order,
}

pub(crate) fn now_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// The checked-out mark of a session's data, if any (an unreadable one counts as stale).
fn checked_out(data: &Data) -> Option<Option<CheckedOut>> {
    data.get(CHECKED_OUT_KEY)
        .map(|value| serde_json::from_value(value.clone()).ok())
}

/// What a change of the cart came to.
#[derive(Debug)]
pub(crate) enum Changed {
    /// Applied now: the new cart.
    Now(Cart),
    /// Applied by an earlier request with the same `Idempotency-Key`: its answer.
    Before(String),
}

/// The visitor's session, seen as a cart.
pub(crate) struct CartSession {
    session: Session,
    store: Store,
    changes: ChangePolicy,
}

/// How changes of an existing session are made.
#[derive(Debug, Clone, Copy)]
pub struct ChangePolicy {
    /// Longest a change keeps retrying against competing changes before it answers 503.
    pub max_wait: Duration,
    /// `true` in production. `false` makes changes plain tower-sessions read-modify-writes,
    /// which lose updates when they overlap; it exists so tests can show that loss.
    pub serialised: bool,
}

impl Default for ChangePolicy {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(5),
            serialised: true,
        }
    }
}

/// What the session needs of the app's state: where sessions live and how changes are
/// made. The app's `AppState` implements it, so this module never names the state (and the
/// state depends on the session, not the other way round).
pub trait SessionState: Send + Sync {
    /// Where sessions live.
    fn store(&self) -> &Store;
    /// How changes of an existing session are made.
    fn change_policy(&self) -> ChangePolicy;
}

impl<S: SessionState> FromRequestParts<S> for CartSession {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let session = Session::from_request_parts(parts, state)
            .await
            .map_err(|(_, message)| Error::Internal(message.to_owned()))?;
        Ok(Self {
            session,
            store: state.store().clone(),
            changes: state.change_policy(),
        })
    }
}

impl CartSession {
    /// The cart, for a handler that only reads it; a value that no longer decodes (an
    /// older format) counts as empty. Read from the store straight into a [`Cart`] when it
    /// can be, else through the session (boxed, as the store's futures are).
    pub(crate) async fn cart(&self) -> Result<Cart> {
        if let Some(id) = self.session.id()
            && let Some(cart) = self.store.read_value::<Cart>(&id, CART_KEY).await?
        {
            return Ok(cart.unwrap_or_default());
        }
        Box::pin(self.get_or_default(CART_KEY)).await
    }

    /// Applies a change to the cart and returns the new cart. `change` may run more than
    /// once (on fresher carts) when other changes of the session compete; its error is
    /// returned and nothing is written.
    pub(crate) async fn change_cart(
        &self,
        change: impl Fn(&mut Cart) -> Result<()>,
    ) -> Result<Cart> {
        match self
            .change_cart_keyed(None, change, |_| String::new())
            .await?
        {
            Changed::Now(cart) => Ok(cart),
            Changed::Before(_) => unreachable!("only keyed changes are answered from before"),
        }
    }

    /// [`Self::change_cart`] for a change made with an `Idempotency-Key`: if the session
    /// already holds the answer to the same request with the same key, that answer comes
    /// back and nothing changes; the same key for another request is refused. A new
    /// keyed change keeps `answer(&new_cart)` in the record with it.
    pub(crate) async fn change_cart_keyed(
        &self,
        keyed: Option<&Keyed>,
        change: impl Fn(&mut Cart) -> Result<()>,
        answer: impl Fn(&Cart) -> String,
    ) -> Result<Changed> {
        // Whether this change would create a record nobody has yet (the visitor's first
        // change, or the first after its session expired): what a flood of new sessions
        // sends, and what the store's memory budget may refuse.
        let mut creates = self.session.id().is_none();
        if let (Some(id), true) = (self.session.id(), self.changes.serialised) {
            let outcome = update::update(&self.store, &id, self.changes.max_wait, |data| {
                if let Some(keyed) = keyed {
                    match replays::prior(data, keyed) {
                        Prior::Answered(body) => return Ok(Some(Changed::Before(body))),
                        Prior::OtherRequest => return Err(Error::IdempotencyKeyReused),
                        Prior::None => {}
                    }
                }
                match checked_out(data) {
                    Some(Some(mark)) if now_ms() - mark.at_ms < CHECKOUT_GRACE_MS => {
                        return Err(Error::CheckedOut);
                    }
                    // Left by a checkout cut short: this session is over.
                    Some(_) => return Ok(None),
                    None => {}
                }
                let mut cart: Cart = value_or_default(data, CART_KEY);
                change(&mut cart)?;
                put_cart(data, &cart)?;
                if let Some(keyed) = keyed {
                    replays::remember(data, keyed, answer(&cart), now_ms());
                }
                Ok(Some(Changed::Now(cart)))
            })
            .await?;
            match outcome {
                Outcome::Applied(Some(changed)) => return Ok(changed),
                // A session closed by a checkout that did not finish: move to a new id
                // (retiring the old record) and start the cart afresh below.
                Outcome::Applied(None) => {
                    self.session.cycle_id().await?;
                    self.session.clear().await;
                }
                // The session expired or was deleted: a new one starts below.
                Outcome::NoSession => creates = true,
            }
        }
        // No session yet (nobody else can know its id), or serialisation switched off:
        // change the tower-sessions record, which its layer saves after the handler.
        // Through the session, which this request may have changed already.
        let mut cart: Cart = self.get_or_default(CART_KEY).await?;
        let before = cart.clone();
        change(&mut cart)?;
        if cart != before {
            if creates && !self.store.admits_new_session() {
                self.store.metrics().new_session_refused();
                return Err(Error::TooManyNewSessions);
            }
            if cart.is_empty() {
                self.session.remove_value(CART_KEY).await?;
            } else {
                self.session.insert(CART_KEY, &cart).await?;
            }
            // The first change of a session is keyed too, so its retry with the new
            // cookie finds it.
            if let Some(keyed) = keyed {
                let mut data = Data::new();
                replays::remember(&mut data, keyed, answer(&cart), now_ms());
                if let Some(replays) = data.remove(replays::REPLAYS_KEY) {
                    self.session.insert(replays::REPLAYS_KEY, replays).await?;
                }
            }
        }
        Ok(Changed::Now(cart))
    }

    /// Places the order: takes the cart (atomically with respect to other changes), then
    /// moves the visitor to a new session id (the old record is retired: it expires a minute
    /// later, keeping the mark for a retry should the new record fail) that keeps only the
    /// order, for the confirmation page. `None` if there is nothing to check out.
    pub(crate) async fn checkout(&self) -> Result<Option<Order>> {
        let Some(id) = self.session.id() else {
            return Ok(None);
        };
        let outcome = update::update(&self.store, &id, self.changes.max_wait, |data| {
            if let Some(mark) = checked_out(data) {
                // A retry of a checkout that was cut short finishes it (or, if the mark is
                // unreadable, there is nothing left to check out).
                return Ok(mark.map(|mark| mark.order));
            }
            let cart: Cart = value_or_default(data, CART_KEY);
            let order = Order::of(&cart);
            if let Some(order) = &order {
                data.remove(CART_KEY);
                let mark = CheckedOut {
                    at_ms: now_ms(),
                    order: order.clone(),
                };
                let mark =
                    serde_json::to_value(mark).map_err(|e| Error::Internal(e.to_string()))?;
                data.insert(CHECKED_OUT_KEY.to_owned(), mark);
            }
            Ok(order)
        })
        .await?;
        let Outcome::Applied(Some(order)) = outcome else {
            return Ok(None);
        };
        self.session.cycle_id().await?;
        self.session.clear().await;
        self.session.insert(LAST_ORDER_KEY, &order).await?;
        Ok(Some(order))
    }

    /// The order placed last in this session, if any.
    pub(crate) async fn last_order(&self) -> Result<Option<Order>> {
        self.get_or_default(LAST_ORDER_KEY).await
    }

    async fn get_or_default<T: DeserializeOwned + Default>(&self, key: &str) -> Result<T> {
        match self.session.get::<T>(key).await {
            Ok(value) => Ok(value.unwrap_or_default()),
            Err(tower_sessions::session::Error::SerdeJson(err)) => {
                tracing::warn!(%err, key, "session value in an unknown format; starting afresh");
                Ok(T::default())
            }
            Err(err) => Err(err.into()),
        }
    }
}

/// The value under `key`, or the default if it is missing or in an unknown format.
fn value_or_default<T: DeserializeOwned + Default>(data: &Data, key: &str) -> T {
    let Some(value) = data.get(key) else {
        return T::default();
    };
    serde_json::from_value(value.clone()).unwrap_or_else(|err| {
        tracing::warn!(%err, key, "session value in an unknown format; starting afresh");
        T::default()
    })
}

fn put_cart(data: &mut Data, cart: &Cart) -> Result<()> {
    if cart.is_empty() {
        data.remove(CART_KEY);
    } else {
        let value = serde_json::to_value(cart).map_err(|err| Error::Internal(err.to_string()))?;
        data.insert(CART_KEY.to_owned(), value);
    }
    Ok(())
}
