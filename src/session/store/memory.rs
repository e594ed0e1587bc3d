//! Sessions in this process's memory, for a single replica without Redis (demos, the fast
//! tests). The same rules as the Redis store: expiry on inactivity that counts reads,
//! compare-and-set by comparing whole records under the map's mutex.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::record::{Data, Snapshot, needs_refresh};
use crate::metrics::Metrics;

/// Sessions in this process's memory. Expired records are dropped when met.
#[derive(Debug, Clone)]
pub(super) struct MemoryStore {
    records: Arc<Mutex<HashMap<Id, Record>>>,
    /// When (Unix seconds) abandoned records are next swept out; sweeping on every new
    /// session would scan the whole map each time.
    next_sweep: Arc<AtomicI64>,
    ttl: Duration,
    /// Counts the reads that move an expiry.
    metrics: Metrics,
}

impl MemoryStore {
    /// Seconds between two sweeps of expired records.
    const SWEEP_EVERY_SECS: i64 = 60;

    pub(super) fn new(ttl: Duration, metrics: Metrics) -> Self {
        Self {
            records: Arc::default(),
            next_sweep: Arc::default(),
            ttl,
            metrics,
        }
    }

    pub(super) fn snapshot(&self, id: &Id) -> Option<Snapshot> {
        let now = OffsetDateTime::now_utc();
        let records = self.records();
        let record = records.get(id).filter(|record| record.expiry_date > now)?;
        Some(Snapshot {
            record: record.clone(),
            stored: bytes::Bytes::new(),
        })
    }

    /// As the Redis store's; nothing here is ever sent twice, so the token is not needed.
    pub(super) fn replace_if_unchanged(&self, snapshot: &Snapshot, data: Data) -> bool {
        let mut records = self.records();
        match records.get_mut(&snapshot.record.id) {
            Some(current) if *current == snapshot.record => {
                current.data = data;
                current.expiry_date = OffsetDateTime::now_utc() + self.ttl;
                true
            }
            _ => false,
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<Id, Record>> {
        // A panic while holding the lock cannot leave a map half-written; keep serving.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let now = OffsetDateTime::now_utc();
        record.expiry_date = now + self.ttl;
        let mut records = self.records();
        let now_secs = now.unix_timestamp();
        if now_secs >= self.next_sweep.load(Ordering::Relaxed) {
            records.retain(|_, stored| stored.expiry_date > now);
            self.next_sweep
                .store(now_secs + Self::SWEEP_EVERY_SECS, Ordering::Relaxed);
        }
        while records.contains_key(&record.id) {
            record.id = Id::default();
        }
        records.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let record = Record {
            expiry_date: OffsetDateTime::now_utc() + self.ttl,
            ..record.clone()
        };
        self.records().insert(record.id, record);
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let now = OffsetDateTime::now_utc();
        let mut records = self.records();
        let Some(record) = records.get_mut(session_id) else {
            return Ok(None);
        };
        if record.expiry_date <= now {
            records.remove(session_id);
            return Ok(None);
        }
        if needs_refresh(record.expiry_date, now, self.ttl) {
            record.expiry_date = now + self.ttl;
            self.metrics.expiry_refreshed();
        }
        Ok(Some(record.clone()))
    }

    /// Deletes at once. The Redis store retires a record instead ([`super::RETIRED_FOR`]),
    /// so that a checkout whose new record fails can be retried; here writing the new
    /// record cannot fail.
    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.records().remove(session_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(1800);

    fn record_expiring_in(ttl: Duration) -> Record {
        Record {
            id: Id::default(),
            data: HashMap::default(),
            expiry_date: OffsetDateTime::now_utc() + ttl,
        }
    }

    #[tokio::test]
    async fn memory_store_moves_the_expiry_of_a_record_read_late() {
        let store = MemoryStore::new(TTL, Metrics::default());
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() + Duration::from_secs(60);

        let loaded = store.load(&record.id).await.unwrap().unwrap();
        assert!(loaded.expiry_date - OffsetDateTime::now_utc() > TTL / 2);
    }

    #[tokio::test]
    async fn memory_store_forgets_expired_records() {
        let store = MemoryStore::new(TTL, Metrics::default());
        let mut record = record_expiring_in(TTL);
        store.create(&mut record).await.unwrap();
        store.records().get_mut(&record.id).unwrap().expiry_date =
            OffsetDateTime::now_utc() - Duration::from_secs(1);
        assert!(store.load(&record.id).await.unwrap().is_none());
    }
}
