//! Serialisable session changes across replicas: optimistic compare-and-set with retry.
//!
//! tower-sessions loads a session when a request starts and writes the whole record back
//! when it ends, so two overlapping changes of one session on two replicas both start from
//! the old cart and the later write silently undoes the earlier one. Every handler that
//! changes an existing session therefore goes through [`update`]:
//!
//! 1. read the record together with its stored bytes (one `GET`, as any read);
//! 2. apply the change to a copy of its data, in memory;
//! 3. write the new data only if the stored bytes are still the ones read (one `EVALSHA`
//!    of a compare-and-set script, instead of the `SET` a plain save would send);
//! 4. if another change won the race, start again from 1 after a short random pause.
//!
//! A write that Redis may or may not have done (its answer never came) is never retried:
//! the change answers `outcome_unknown`, which an `Idempotency-Key` makes safe to retry.
//!
//! Each change is applied at most once, to the latest cart: the changes of one session are
//! serialised in the order their compare-and-sets succeed.
//!
//! Why not a per-session lock, as ASP.NET's RedisSessionStateProvider takes? A lock costs
//! two more round trips on every change (acquire, release) even when nobody competes, a
//! waiter has to poll or hold a connection, and a replica that dies holding the lock
//! blocks the session until its lease runs out. Compare-and-set costs nothing extra
//! without contention (a `GET` and one write, like before), reads never wait, and a replica
//! that dies mid-change blocks nobody: its compare-and-set either happened or did not.
//! Under contention, a change that cannot win within the configured wait (default 5 s)
//! gives up with 503 and `Retry-After`, having changed nothing.
//!
//! The memory store keeps the same guarantee by comparing records under its mutex.

use std::time::{Duration, Instant};

use tower_sessions::session::Id;

use super::markers::ChangeToken;
use super::store::{Data, Store};
use crate::error::{Error, Result};

/// The longest pause between two attempts; pauses are random up to a bound that doubles
/// with each lost race (full jitter), so competing replicas spread out.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// What became of a change.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<T> {
    /// The change was applied (or changed nothing); `T` is what the change returned.
    Applied(T),
    /// There is no such session (expired, deleted, or never existed).
    NoSession,
}

/// Applies `change` to the data of session `id` atomically with respect to every other
/// change made through this function, on any replica, and at most once.
///
/// `change` may run several times (once per attempt), each time on fresh data, so it must
/// not have side effects beyond the data it is given. An error from it is returned as is
/// and nothing is written. Data that `change` leaves equal is not written at all.
///
/// Every attempt carries the same [`ChangeToken`], and the store's compare-and-set
/// answers "already applied" when it meets that token's marker, so a write that went
/// through although its answer said otherwise is never done again. A
/// write whose answer never came (a timeout, a dropped connection) may or may not have
/// happened: that is [`Error::OutcomeUnknown`], not a plain store outage, and the change
/// is not tried again; so is a write that too few replicas confirmed (`WAIT`). A write
/// that Redis refused (out of memory) was not done: [`Error::StoreRefusingWrites`].
pub(crate) async fn update<T>(
    store: &Store,
    id: &Id,
    max_wait: Duration,
    mut change: impl FnMut(&mut Data) -> Result<T>,
) -> Result<Outcome<T>> {
    let deadline = Instant::now() + max_wait;
    let token = ChangeToken::random();
    let mut lost_races = 0u32;
    loop {
        let Some(snapshot) = store.snapshot(id).await? else {
            return Ok(Outcome::NoSession);
        };
        let mut data = snapshot.record.data.clone();
        let value = change(&mut data)?;
        if data == snapshot.record.data {
            // Answered from what is stored (a replay, a change that changes nothing): with
            // replicas to confirm changes, only once they hold it.
            store
                .confirm_unchanged(&snapshot, &token)
                .await
                .map_err(|err| Error::from_failed_write(err.to_string()))?;
            return Ok(Outcome::Applied(value));
        }
        let written = store
            .replace_if_unchanged(&snapshot, data, &token)
            .await
            .map_err(|err| Error::from_failed_write(err.to_string()))?;
        if written {
            return Ok(Outcome::Applied(value));
        }
        lost_races += 1;
        store.metrics().conflict();
        let pause = random_pause(lost_races);
        if Instant::now() + pause >= deadline {
            store.metrics().busy();
            return Err(Error::SessionBusy);
        }
        tokio::time::sleep(pause).await;
    }
}

/// A random pause of up to 2^(lost_races-1) ms, at most [`MAX_PAUSE`].
fn random_pause(lost_races: u32) -> Duration {
    let bound_ms = 1u64
        .checked_shl(lost_races.saturating_sub(1))
        .unwrap_or(u64::MAX)
        .min(MAX_PAUSE.as_millis() as u64);
    Duration::from_micros(fastrand::u64(0..=bound_ms * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tower_sessions::SessionStore;
    use tower_sessions::session::Record;

    #[test]
    fn pauses_grow_with_lost_races_up_to_the_bound() {
        for _ in 0..100 {
            assert!(random_pause(1) <= Duration::from_millis(1));
            assert!(random_pause(3) <= Duration::from_millis(4));
            assert!(random_pause(40) <= MAX_PAUSE);
        }
    }

    async fn session_with_counter(store: &Store) -> Id {
        let mut record = Record {
            id: Id::default(),
            data: [("n".to_owned(), 0.into())].into(),
            expiry_date: time::OffsetDateTime::now_utc(),
        };
        store.create(&mut record).await.unwrap();
        record.id
    }

    fn increment(data: &mut Data) -> Result<()> {
        let n = data["n"].as_u64().unwrap();
        data.insert("n".into(), (n + 1).into());
        Ok(())
    }

    /// 200 concurrent increments of one session all count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_of_one_session_all_count() {
        let store = Arc::new(Store::memory(Duration::from_secs(60), &Default::default()));
        let id = session_with_counter(&store).await;
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(
                    async move { update(&store, &id, Duration::from_secs(5), increment).await },
                )
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), Outcome::Applied(()));
        }
        let record = store.load(&id).await.unwrap().unwrap();
        assert_eq!(record.data["n"], 200);
    }

    /// A refused change writes nothing; a change of a missing session reports it.
    #[tokio::test]
    async fn refused_changes_and_missing_sessions_write_nothing() {
        let store = Store::memory(Duration::from_secs(60), &Default::default());
        let id = session_with_counter(&store).await;
        let refused = update(&store, &id, Duration::from_secs(1), |data| {
            increment(data)?;
            Err::<(), _>(Error::InvalidInput("no".into()))
        })
        .await;
        assert!(matches!(refused, Err(Error::InvalidInput(_))));
        assert_eq!(store.load(&id).await.unwrap().unwrap().data["n"], 0);

        let missing = update(&store, &Id::default(), Duration::from_secs(1), increment).await;
        assert_eq!(missing.unwrap(), Outcome::NoSession);
    }

    mod properties {
        use std::collections::BTreeMap;

        use std::sync::atomic::Ordering;

        use proptest::prelude::*;
        use serde_json::json;

        use super::*;

        /// A change of one product: add units, set units, or remove the line.
        #[derive(Debug, Clone, Copy)]
        enum Change {
            Add(u8, u64),
            Set(u8, u64),
            Remove(u8),
        }

        type Lines = BTreeMap<String, u64>;

        fn apply(lines: &mut Lines, change: Change) {
            match change {
                Change::Add(p, q) => *lines.entry(format!("p{p}")).or_default() += q,
                Change::Set(p, q) => {
                    lines.insert(format!("p{p}"), q);
                }
                Change::Remove(p) => {
                    lines.remove(&format!("p{p}"));
                }
            }
        }

        fn change() -> impl Strategy<Value = Change> {
            prop_oneof![
                3 => (0u8..4, 1u64..4).prop_map(|(p, q)| Change::Add(p, q)),
                1 => (0u8..4, 1u64..4).prop_map(|(p, q)| Change::Set(p, q)),
                1 => (0u8..4).prop_map(Change::Remove),
            ]
        }

        /// Changes from several replicas at once, in any interleaving, give the cart that
        /// applying them one by one in the order their writes succeeded gives: each change is
        /// in the record's log exactly once, the record equals the fold of the log, and what
        /// each change saw is the fold of the log up to it. The changes run on three worker
        /// threads and yield the thread between read and write, so they do lose races, and
        /// the test fails if none ever did.
        #[test]
        fn concurrent_changes_equal_their_serial_order() {
            let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let replicas = prop::collection::vec(prop::collection::vec(change(), 1..12), 2..5);
            let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(64));
            runner
                .run(&replicas, |replicas| {
                    let (attempts, changes) = (attempts.clone(), changes.clone());
                    changes.fetch_add(replicas.iter().map(Vec::len).sum(), Ordering::Relaxed);
                    run_case(replicas, attempts);
                    Ok(())
                })
                .unwrap();
            assert!(
                attempts.load(Ordering::Relaxed) > changes.load(Ordering::Relaxed),
                "no change ever lost a race: nothing was interleaved"
            );
        }

        fn run_case(replicas: Vec<Vec<Change>>, attempts: Arc<std::sync::atomic::AtomicUsize>) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(3)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let store = Arc::new(Store::memory(Duration::from_secs(60), &Default::default()));
                let mut record = Record {
                    id: Id::default(),
                    data: [
                        ("lines".to_owned(), json!({})),
                        ("log".to_owned(), json!([])),
                    ]
                    .into(),
                    expiry_date: time::OffsetDateTime::now_utc(),
                };
                store.create(&mut record).await.unwrap();
                let id = record.id;
                let mut all = BTreeMap::new();
                let mut tasks = Vec::new();
                for (r, changes) in replicas.iter().enumerate() {
                    for (n, change) in changes.iter().enumerate() {
                        all.insert(format!("{r}.{n}"), *change);
                    }
                    let (store, changes) = (store.clone(), changes.clone());
                    let attempts = attempts.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut seen = Vec::new();
                        for (n, change) in changes.into_iter().enumerate() {
                            let name = format!("{r}.{n}");
                            let outcome = update(&store, &id, Duration::from_secs(10), |data| {
                                attempts.fetch_add(1, Ordering::Relaxed);
                                // Between this change's read and its write, let others run.
                                std::thread::yield_now();
                                let mut lines: Lines =
                                    serde_json::from_value(data["lines"].clone()).unwrap();
                                apply(&mut lines, change);
                                let mut log: Vec<String> =
                                    serde_json::from_value(data["log"].clone()).unwrap();
                                log.push(name.clone());
                                data.insert("lines".into(), json!(lines));
                                data.insert("log".into(), json!(log));
                                Ok(lines)
                            })
                            .await
                            .unwrap();
                            let Outcome::Applied(lines) = outcome else {
                                panic!("the session is there");
                            };
                            seen.push((name, lines));
                        }
                        seen
                    }));
                }
                let mut seen = BTreeMap::new();
                for task in tasks {
                    seen.extend(task.await.unwrap());
                }
                let data = store.load(&id).await.unwrap().unwrap().data;
                let log: Vec<String> = serde_json::from_value(data["log"].clone()).unwrap();
                let stored: Lines = serde_json::from_value(data["lines"].clone()).unwrap();
                let mut sorted = log.clone();
                sorted.sort();
                let mut names: Vec<String> = all.keys().cloned().collect();
                names.sort();
                assert_eq!(sorted, names, "every change once in the log");
                let mut folded = Lines::new();
                for name in &log {
                    apply(&mut folded, all[name]);
                    assert_eq!(&seen[name], &folded, "what {name} saw");
                }
                assert_eq!(stored, folded);
            });
        }
    }
}
