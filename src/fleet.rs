//! The live fleet view, with no service besides the session store: every replica writes a
//! heartbeat about once a second ([`heartbeats`]), and any replica answers `/api/fleet`
//! and `/fleet` from the heartbeats that are fresh.
//!
//! The heartbeats are fields of one Redis hash (`<prefix>fleet`, see
//! [`crate::session::store::keys`]): one write per replica per second, never one per
//! request, so anonymous browsing still writes nothing. Each field holds the time Redis
//! wrote it (Redis's own clock, so replicas' clocks need not agree) and the replica's
//! report. A report older than [`FRESH_FOR`] is not shown (a killed replica vanishes
//! within that time) and is deleted by the next heartbeat of any replica; the hash itself
//! expires [`KEY_TTL`] after the last heartbeat of the last replica. A replica that stops
//! gracefully deletes its field on the way out; while it drains it reports `draining`.
//!
//! With sessions in memory there is no shared store: the fleet is the replica itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, oneshot};
use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;
use crate::session::store::{Heartbeat, Store};
use crate::shutdown::Drain;

/// How often a replica writes its heartbeat.
pub const BEAT_EVERY: Duration = Duration::from_secs(1);

/// How long a heartbeat counts: a replica whose last one is older is gone from the view.
pub const FRESH_FOR: Duration = Duration::from_secs(3);

/// How long the hash outlives the last heartbeat written into it.
pub const KEY_TTL: Duration = Duration::from_secs(5);

/// What a replica says of itself in its heartbeat (and, with `last_seen_ms`, what
/// `/api/fleet` shows of it). The field names are the API's contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// The replica's `REPLICA_ID`.
    pub id: String,
    /// The version it runs (`APP_VERSION`).
    pub version: String,
    /// When the replica started, RFC 3339 in UTC.
    pub started_at: String,
    /// Requests it answered since it started.
    pub requests_total: u64,
    /// Requests it answered per second, over the last heartbeat interval.
    pub requests_per_sec: f64,
    /// Whether it is stopping (still answering, with `Connection: close`).
    pub draining: bool,
}

/// A replica in the fleet view: its last report and how long ago the store got it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Member {
    /// What it said in its last heartbeat.
    #[serde(flatten)]
    pub report: Report,
    /// How long ago, by the store's clock, that heartbeat was written.
    pub last_seen_ms: u64,
}

/// This replica's side of the fleet view: when it started, its latest request rate, and
/// a way to send a heartbeat at once (when it starts draining).
#[derive(Debug)]
pub struct Presence {
    started_at: String,
    /// The latest requests/s, as the bits of an `f64`.
    rate: AtomicU64,
    beat_now: Notify,
}

impl Default for Presence {
    fn default() -> Self {
        Self {
            started_at: OffsetDateTime::now_utc()
                .replace_nanosecond(0)
                .unwrap_or_else(|_| OffsetDateTime::now_utc())
                .format(&Rfc3339)
                .unwrap_or_default(),
            rate: AtomicU64::new(0f64.to_bits()),
            beat_now: Notify::new(),
        }
    }
}

impl Presence {
    /// Asks the heartbeat task to write one now rather than at its next tick.
    pub fn beat_now(&self) {
        self.beat_now.notify_one();
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn set_rate(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }
}

/// What the fleet view needs of this replica, and nothing else of its state: its name and
/// version, its presence, its request count and whether it drains.
#[derive(Debug, Clone)]
pub struct Local {
    /// The replica's `REPLICA_ID`.
    pub replica_id: Arc<str>,
    /// The version it runs (`APP_VERSION`).
    pub version: Arc<str>,
    /// When it started and its latest request rate.
    pub presence: Arc<Presence>,
    /// Where its request count comes from.
    pub metrics: Metrics,
    /// Whether it is stopping.
    pub drain: Drain,
}

/// What this replica reports now.
pub fn own_report(local: &Local) -> Report {
    Report {
        id: local.replica_id.to_string(),
        version: local.version.to_string(),
        started_at: local.presence.started_at.clone(),
        requests_total: local.metrics.served(),
        requests_per_sec: local.presence.rate(),
        draining: local.drain.is_draining(),
    }
}

/// The replicas whose heartbeat is fresh, by id; with sessions in memory, this replica.
pub async fn members(
    store: &Store,
    local: &Local,
) -> tower_sessions::session_store::Result<Vec<Member>> {
    Ok(match store.fleet().await? {
        Some((now_ms, fields)) => fresh_members(now_ms, &fields),
        None => vec![Member {
            report: own_report(local),
            last_seen_ms: 0,
        }],
    })
}

/// A report as the heartbeat carries it (the store puts its own time in front).
pub fn encode_beat(report: &Report) -> String {
    serde_json::to_string(report).expect("a report always serialises")
}

/// The fresh members among the hash's `fields` (name, value, name, value...), as the
/// store's clock read `now_ms`. Values that do not parse (another version's format) are
/// left out rather than failing the view.
pub fn fresh_members(now_ms: u64, fields: &[String]) -> Vec<Member> {
    let fresh_ms = FRESH_FOR.as_millis() as u64;
    let mut members: Vec<Member> = fields
        .chunks_exact(2)
        .filter_map(|pair| {
            let (seen, report) = pair[1].split_once(' ')?;
            let seen: u64 = seen.parse().ok()?;
            let report: Report = serde_json::from_str(report).ok()?;
            let last_seen_ms = now_ms.saturating_sub(seen);
            (last_seen_ms < fresh_ms && report.id == pair[0]).then_some(Member {
                report,
                last_seen_ms,
            })
        })
        .collect();
    members.sort_by(|a, b| a.report.id.cmp(&b.report.id));
    members
}

/// Writes this replica's heartbeat every [`BEAT_EVERY`] (and at once when asked, see
/// [`Presence::beat_now`]) until `stop`, then deletes it. A failed write is logged once
/// per outage; the next tick tries again.
pub async fn heartbeats(store: Store, local: Local, mut stop: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(BEAT_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut counted_at, mut counted) = (Instant::now(), local.metrics.served());
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = local.presence.beat_now.notified() => {}
            _ = &mut stop => break,
        }
        let elapsed = counted_at.elapsed();
        // A beat asked for between ticks keeps the last rate: a few milliseconds of
        // requests say nothing about the rate.
        if elapsed >= BEAT_EVERY / 2 {
            let served = local.metrics.served();
            let rate = served.saturating_sub(counted) as f64 / elapsed.as_secs_f64();
            local.presence.set_rate((rate * 10.0).round() / 10.0);
            (counted_at, counted) = (Instant::now(), served);
        }
        let report = encode_beat(&own_report(&local));
        let beat = Heartbeat {
            id: &local.replica_id,
            report: &report,
            fresh_for: FRESH_FOR,
            key_ttl: KEY_TTL,
        };
        match store.heartbeat(&beat).await {
            Ok(()) if failing => {
                tracing::info!("fleet heartbeats are written again");
                failing = false;
            }
            Ok(()) => {}
            Err(err) if !failing => {
                tracing::warn!(%err, "a fleet heartbeat could not be written; retrying every second");
                failing = true;
            }
            Err(_) => {}
        }
    }
    if let Err(err) = store.leave_fleet(&local.replica_id).await {
        tracing::warn!(%err, "could not remove this replica's fleet heartbeat; it expires in seconds");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str) -> Report {
        Report {
            id: id.to_owned(),
            version: "1.0.0".to_owned(),
            started_at: "2026-12-03T10:00:00Z".to_owned(),
            requests_total: 7,
            requests_per_sec: 2.5,
            draining: false,
        }
    }

    fn field(id: &str, seen_ms: u64) -> [String; 2] {
        [
            id.to_owned(),
            format!("{seen_ms} {}", encode_beat(&report(id))),
        ]
    }

    #[test]
    fn only_fresh_heartbeats_count_sorted_by_id() {
        let now = 1_000_000;
        let fields: Vec<String> = [
            field("replica-b", now - 200),
            field("replica-a", now - 2_999),
            field("replica-c", now - 3_000),
        ]
        .concat();
        let members = fresh_members(now, &fields);
        let ids: Vec<&str> = members.iter().map(|m| m.report.id.as_str()).collect();
        assert_eq!(ids, ["replica-a", "replica-b"]);
        assert_eq!(members[1].last_seen_ms, 200);
        assert_eq!(members[1].report, report("replica-b"));
    }

    #[test]
    fn unreadable_or_mislabelled_heartbeats_are_left_out() {
        let now = 50_000;
        let mut fields: Vec<String> = vec!["x".into(), "not a beat".into()];
        fields.extend(["y".into(), format!("{now} {{\"id\":1}}")]);
        // A field whose report names another replica.
        fields.extend(["z".into(), format!("{now} {}", encode_beat(&report("w")))]);
        fields.push("dangling".into());
        assert!(fresh_members(now, &fields).is_empty());
    }

    #[test]
    fn a_heartbeat_from_the_stores_future_counts_as_just_seen() {
        let fields = field("replica-a", 10_500);
        let members = fresh_members(10_000, &fields);
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].last_seen_ms, 0);
    }

    #[test]
    fn the_api_fields_are_the_contract() {
        let member = Member {
            report: report("replica-a"),
            last_seen_ms: 12,
        };
        let json = serde_json::to_value(&member).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "draining",
                "id",
                "last_seen_ms",
                "requests_per_sec",
                "requests_total",
                "started_at",
                "version"
            ]
        );
    }
}
