//! Client connections that have not yet authenticated a request: a bounded set, oldest closed
//! first.
//!
//! A connection is admitted unproven. The first request on it that authenticates (any
//! credential, or a successful login) proves it, and it leaves the set. When the set is full,
//! admitting one more closes the oldest unproven connection: a client that opens connections
//! and sends nothing, or trickles a login body, can hold at most
//! `limits.max_unauthenticated_connections` of them, only until others arrive, and never the
//! places of connections that have authenticated.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::sync::Notify;

/// The set of unproven connections.
pub struct Admission {
    capacity: usize,
    /// Admission number (oldest first) → the signal that closes that connection.
    unproven: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next: AtomicU64,
    /// Unproven connections closed to make room.
    pub evicted: AtomicU64,
}

impl Admission {
    /// A set of at most `capacity` unproven connections.
    #[must_use]
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            unproven: Mutex::new(BTreeMap::new()),
            next: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    fn unproven(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Notify>>> {
        self.unproven.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection, closing the oldest unproven ones past the capacity.
    #[must_use]
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        let mut unproven = self.unproven();
        while unproven.len() >= self.capacity {
            let Some((_, oldest)) = unproven.pop_first() else {
                break;
            };
            // `notify_one` keeps the signal for a connection not yet waiting on it.
            oldest.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
        }
        unproven.insert(id, close.clone());
        drop(unproven);
        Ticket {
            admission: self.clone(),
            id,
            proven: AtomicBool::new(false),
            close,
        }
    }

    /// Unproven connections now.
    #[must_use]
    pub fn unproven_count(&self) -> usize {
        self.unproven().len()
    }
}

/// One connection's place in the set, left when proven or dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    proven: AtomicBool,
    close: Arc<Notify>,
}

impl Ticket {
    /// The connection authenticated a request: it can no longer be closed to make room.
    pub fn prove(&self) {
        if !self.proven.load(Ordering::Relaxed) && !self.proven.swap(true, Ordering::AcqRel) {
            self.admission.unproven().remove(&self.id);
        }
    }

    /// Resolves when the connection must close to make room for a newer one.
    pub async fn closed(&self) {
        self.close.notified().await;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !*self.proven.get_mut() {
            self.admission.unproven().remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn is_closed(ticket: &Ticket) -> bool {
        tokio::time::timeout(Duration::from_millis(20), ticket.closed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn the_oldest_unproven_connection_makes_room_and_proven_ones_never_do() {
        let admission = Admission::new(2);
        let first = admission.admit();
        let second = admission.admit();
        second.prove();
        let third = admission.admit();
        assert_eq!(admission.unproven_count(), 2);
        assert!(!is_closed(&first).await, "room left: nobody closed");
        let fourth = admission.admit();
        assert!(is_closed(&first).await, "the oldest unproven closes");
        assert!(!is_closed(&second).await, "proven: never closed");
        assert!(!is_closed(&third).await);
        assert_eq!(admission.evicted.load(Ordering::Relaxed), 1);
        drop(third);
        drop(fourth);
        assert_eq!(admission.unproven_count(), 0);
        drop(first);
        assert_eq!(admission.unproven_count(), 0);
    }
}
