//! The least-privileged Redis user the app connects as: only the keys under its prefix,
//! only the commands it sends. Every store the test kit starts (one server, each node of a
//! Sentinel set or a Cluster) has this user, and the URLs the test kit hands to replicas
//! name it, so the integration tier runs the app with exactly these rights; the tests' own
//! `redis-cli` and inspection clients keep the default user.
//!
//! This is the one place the ACL is written down. docs/security.md quotes what
//! [`StoreUser::acl_setuser`] and [`StoreUser::access_string`] render for the default
//! prefix, and `tests/api/store_user.rs` checks that it still does.
//!
//! The commands, and who sends them (elastic-cart's `src/session/store/`, fred 10 on
//! connect):
//!
//! | Command | Why |
//! |---|---|
//! | `GET` | a session's record (every read, and the compare-and-set script) |
//! | `SET` | a new session (`SET .. EXAT .. NX`), a save (`XX`), a change's marker; in the compare-and-set script |
//! | `EVALSHA`, `EVAL` | the compare-and-set (by hash, whole on `NOSCRIPT`), the retirement at checkout, the fleet heartbeat and read |
//! | `EXISTS` | in the compare-and-set script: is the change's marker there |
//! | `PTTL`, `PEXPIRE` | in the retirement script: shorten a checked-out record's life |
//! | `TIME`, `HSET`, `HGETALL` | in the fleet scripts: Redis's clock, the heartbeat hash |
//! | `HDEL` | a stopping replica leaves the fleet hash (also in the heartbeat script) |
//! | `WAIT` | `REDIS_WAIT_REPLICAS` > 0: replicas confirm a change |
//! | `PING` | the readiness probe (`/readyz`) |
//! | `INFO` | fred reads `INFO server` on connect; the store's memory (`INFO memory`) |
//! | `CLIENT ID` | fred on every connection |
//!
//! `AUTH`, `HELLO` and `QUIT` need no permission. A Sentinel set's data nodes also get
//! `ROLE` (fred checks that the node the sentinels name is a primary); a Cluster's nodes
//! `CLUSTER INFO` (fred's health check on connect), `CLUSTER SLOTS` (where the slots are)
//! and `ASKING` (a slot being migrated). `SELECT` only if `REDIS_URL` names a database.

/// The app's default `SESSION_KEY_PREFIX` (elastic-cart's `DEFAULT_KEY_PREFIX`; the test
/// kit does not depend on the app, and `tests/api/store_user.rs` checks they agree).
pub const APP_KEY_PREFIX: &str = "elastic-cart:";

/// The app user's password on every store the test kit starts, unless a test sets another.
pub const APP_PASSWORD: &str = "app-user-pw-for-tests";

/// The commands the app sends to any store, one server, Sentinel's or Cluster's nodes.
pub const COMMANDS: [&str; 15] = [
    "get",
    "set",
    "evalsha",
    "eval",
    "exists",
    "pttl",
    "pexpire",
    "time",
    "hset",
    "hgetall",
    "hdel",
    "wait",
    "ping",
    "info",
    "client|id",
];

/// What kind of store a user is for: the replicated ones need a few more commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// One server, or a primary reached by name (ElastiCache without cluster mode).
    #[default]
    Single,
    /// The data nodes of a Sentinel set.
    Sentinel,
    /// The nodes of a Redis Cluster.
    Cluster,
}

impl StoreKind {
    /// The commands this kind of store needs beyond [`COMMANDS`].
    pub fn extra_commands(self) -> &'static [&'static str] {
        match self {
            Self::Single => &[],
            Self::Sentinel => &["role"],
            Self::Cluster => &["cluster|info", "cluster|slots", "asking"],
        }
    }
}

/// One app user: its name, password, key prefix and kind of store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUser {
    /// The user's name: the prefix without its trailing `:` (`elastic-cart`).
    pub name: String,
    /// Its password (`>password` in the rules, and in the URLs).
    pub password: String,
    /// `SESSION_KEY_PREFIX` of the apps that connect as this user.
    pub prefix: String,
    /// The store it is on, which decides the commands beyond [`COMMANDS`].
    pub kind: StoreKind,
}

impl Default for StoreUser {
    fn default() -> Self {
        Self::new(APP_KEY_PREFIX, APP_PASSWORD)
    }
}

impl StoreUser {
    /// The user for apps with key prefix `prefix`, on one server. The password goes into
    /// URLs as is, so it may hold only letters, digits, `-`, `_` and `.`.
    pub fn new(prefix: &str, password: &str) -> Self {
        assert!(
            password
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "a test password that needs no escaping in a URL: {password:?}"
        );
        let name = prefix.trim_end_matches(':');
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        Self {
            name,
            password: password.to_owned(),
            prefix: prefix.to_owned(),
            kind: StoreKind::Single,
        }
    }

    /// The same user on another kind of store.
    pub fn on(mut self, kind: StoreKind) -> Self {
        self.kind = kind;
        self
    }

    /// The ACL rules after the name, as separate words (a `redis-server --user` argument
    /// each): enabled, the password, the prefix's keys, no command but ours (so no
    /// channel either).
    pub fn rules(&self) -> Vec<String> {
        let mut rules = vec![
            "reset".to_owned(),
            "on".to_owned(),
            format!(">{}", self.password),
        ];
        rules.extend(self.permissions());
        rules
    }

    /// The rules without the password and state: keys and commands.
    fn permissions(&self) -> Vec<String> {
        let mut rules = vec![format!("~{}*", self.prefix), "-@all".to_owned()];
        rules.extend(
            COMMANDS
                .iter()
                .chain(self.kind.extra_commands())
                .map(|command| format!("+{command}")),
        );
        rules
    }

    /// `ACL SETUSER <name> <rules>`: the command an operator runs (on every node).
    pub fn acl_setuser(&self) -> String {
        format!("ACL SETUSER {} {}", self.name, self.rules().join(" "))
    }

    /// The access string of an ElastiCache RBAC user (`aws elasticache create-user
    /// --access-string`): the same rules without `reset` and the password, which
    /// ElastiCache takes separately (`--passwords`).
    pub fn access_string(&self) -> String {
        let mut rules = vec!["on".to_owned()];
        rules.extend(self.permissions());
        rules.join(" ")
    }

    /// `<name>:<password>@`, the credentials part of a URL.
    pub fn userinfo(&self) -> String {
        format!("{}:{}@", self.name, self.password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_user_is_named_for_the_prefix_and_fenced_to_it() {
        let user = StoreUser::default();
        assert_eq!(user.name, "elastic-cart");
        let line = user.acl_setuser();
        assert!(
            line.starts_with(
                "ACL SETUSER elastic-cart reset on >app-user-pw-for-tests ~elastic-cart:* -@all +get +set "
            ),
            "{line}"
        );
        assert!(
            !line.contains("+role") && !line.contains("+cluster"),
            "{line}"
        );
        assert!(!user.access_string().contains(APP_PASSWORD));
        assert!(!user.access_string().contains("reset "));
    }

    #[test]
    fn replicated_stores_add_only_their_own_commands() {
        let sentinel = StoreUser::default().on(StoreKind::Sentinel).rules();
        let cluster = StoreUser::default().on(StoreKind::Cluster).rules();
        let single = StoreUser::default().rules();
        assert_eq!(sentinel.len(), single.len() + 1);
        assert!(sentinel.contains(&"+role".to_owned()));
        assert!(cluster.contains(&"+cluster|slots".to_owned()));
        assert!(!cluster.contains(&"+role".to_owned()));
    }

    #[test]
    fn other_prefixes_get_users_of_their_own() {
        assert_eq!(StoreUser::new("shop-eu:", "x").name, "shop-eu");
        assert_eq!(StoreUser::new("a.b:c:", "x").name, "a-b-c");
    }
}
