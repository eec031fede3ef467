//! A job in the queue: its ticket, its reply channel, and (with
//! `preserve_ordering`) its place in the answer order.

use super::job::{Job, Reply, Ticket};
use super::order::Slot;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

#[derive(Debug)]
pub(crate) struct Entry {
    pub(super) job: Job,
    pub(super) ticket: Arc<Ticket>,
    pub(super) reply: oneshot::Sender<Reply>,
    pub(super) enqueued: Instant,
    /// When a delayed level's request moves behind the others (its deadline,
    /// which then never times it out).
    pub(super) demote_at: Option<Instant>,
    /// Its place in the answer order, with `preserve_ordering`.
    pub(super) order: Option<Slot>,
}

impl Entry {
    /// Answers the caller (in admission order, with `preserve_ordering`).
    pub(super) fn respond(self, reply: Reply) {
        let Entry {
            reply: tx, order, ..
        } = self;
        match order {
            Some(slot) => slot.deliver(tx, reply),
            None => {
                let _ = tx.send(reply);
            }
        }
    }
}
