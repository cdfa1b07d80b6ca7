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
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::task::AbortHandle;

/// How an unproven connection is closed: its serving task is aborted (nothing is polled on the
/// request path for it).
#[derive(Default)]
pub struct Closer {
    task: OnceLock<AbortHandle>,
    closed: AtomicBool,
}

impl Closer {
    /// Names the task serving the connection; aborts it at once if it was already told to close.
    pub fn attach(&self, task: AbortHandle) {
        let task = self.task.get_or_init(|| task);
        if self.closed.load(Ordering::SeqCst) {
            task.abort();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(task) = self.task.get() {
            task.abort();
        }
    }

    /// Whether the connection was told to close.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// The set of unproven connections.
pub struct Admission {
    capacity: usize,
    /// Admission number (oldest first) → what closes that connection.
    unproven: Mutex<BTreeMap<u64, Arc<Closer>>>,
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

    fn unproven(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Closer>>> {
        self.unproven.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a new connection, closing the oldest unproven ones past the capacity.
    #[must_use]
    pub fn admit(self: &Arc<Self>) -> Ticket {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let closer = Arc::new(Closer::default());
        let mut unproven = self.unproven();
        while unproven.len() >= self.capacity {
            let Some((_, oldest)) = unproven.pop_first() else {
                break;
            };
            oldest.close();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closed the oldest unauthenticated connection to make room");
        }
        unproven.insert(id, closer.clone());
        drop(unproven);
        Ticket {
            admission: self.clone(),
            id,
            proven: AtomicBool::new(false),
            closer,
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
    closer: Arc<Closer>,
}

impl Ticket {
    /// The connection authenticated a request: it can no longer be closed to make room.
    pub fn prove(&self) {
        if !self.proven.load(Ordering::Relaxed) && !self.proven.swap(true, Ordering::AcqRel) {
            self.admission.unproven().remove(&self.id);
        }
    }

    /// What closes this connection to make room: give it the serving task.
    #[must_use]
    pub fn closer(&self) -> Arc<Closer> {
        self.closer.clone()
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
    use super::*;

    /// A ticket whose connection is a task that never ends on its own.
    fn connection(admission: &Arc<Admission>) -> (Ticket, tokio::task::JoinHandle<()>) {
        let ticket = admission.admit();
        let task = tokio::spawn(std::future::pending::<()>());
        ticket.closer().attach(task.abort_handle());
        (ticket, task)
    }

    async fn is_closed(task: &tokio::task::JoinHandle<()>) -> bool {
        tokio::task::yield_now().await;
        task.is_finished()
    }

    #[tokio::test]
    async fn the_oldest_unproven_connection_makes_room_and_proven_ones_never_do() {
        let admission = Admission::new(2);
        let (first, first_task) = connection(&admission);
        let (second, second_task) = connection(&admission);
        second.prove();
        let (third, third_task) = connection(&admission);
        assert_eq!(admission.unproven_count(), 2);
        assert!(!is_closed(&first_task).await, "room left: nobody closed");
        let (fourth, _fourth_task) = connection(&admission);
        assert!(is_closed(&first_task).await, "the oldest unproven closes");
        assert!(!is_closed(&second_task).await, "proven: never closed");
        assert!(!is_closed(&third_task).await);
        assert_eq!(admission.evicted.load(Ordering::Relaxed), 1);
        drop(third);
        drop(fourth);
        assert_eq!(admission.unproven_count(), 0);
        drop(first);
        assert_eq!(admission.unproven_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_told_to_close_before_its_task_is_named_closes_once_named() {
        let admission = Admission::new(1);
        let early = admission.admit();
        let _newer = admission.admit();
        assert!(early.closer().is_closed());
        let task = tokio::spawn(std::future::pending::<()>());
        early.closer().attach(task.abort_handle());
        assert!(is_closed(&task).await);
    }
}
