//! Response ordering (Triton's `preserve_ordering`): with it on, answers
//! leave in the order the requests were admitted.
//!
//! Each admitted entry takes a sequence number under the queue lock (so
//! numbers follow admission order) and a [`Slot`]. An answer is handed to
//! the [`Gate`] with its number; the gate sends every answer whose
//! predecessors have all been settled. A slot dropped without an answer (the
//! caller went away, the waiter timed out, the batch was dropped) settles
//! its number with nothing to send, so one lost request never blocks the
//! rest. Answers held back count against the queue bound (see
//! [`Gate::held`]), so memory stays bounded.
//!
//! Lock order: the queue lock may be held when a slot drops (a purge); the
//! gate never takes the queue lock.

use super::job::Reply;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

type Delivery = Option<(oneshot::Sender<Reply>, Reply)>;

#[derive(Debug, Default)]
pub(crate) struct Gate {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The next sequence number to hand out.
    issued: u64,
    /// The lowest number not yet sent.
    next: u64,
    /// Settled numbers waiting for their predecessors.
    ready: BTreeMap<u64, Delivery>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for the next admitted entry. Call under the queue lock.
    pub(crate) fn issue(self: &Arc<Self>) -> Slot {
        let mut state = self.lock();
        let seq = state.issued;
        state.issued += 1;
        Slot {
            seq,
            gate: Some(self.clone()),
        }
    }

    /// Answers settled but held back behind an earlier request.
    pub(crate) fn held(&self) -> usize {
        self.lock().ready.len()
    }

    fn settle(&self, seq: u64, delivery: Delivery) {
        let mut state = self.lock();
        state.ready.insert(seq, delivery);
        while let Some(delivery) = {
            let next = state.next;
            state.ready.remove(&next)
        } {
            state.next += 1;
            if let Some((tx, reply)) = delivery {
                let _ = tx.send(reply);
            }
        }
    }
}

/// An entry's place in the order; settles itself when dropped unanswered.
#[derive(Debug)]
pub(crate) struct Slot {
    seq: u64,
    gate: Option<Arc<Gate>>,
}

impl Slot {
    /// Sends `reply` once every earlier entry has been settled.
    pub(crate) fn deliver(mut self, tx: oneshot::Sender<Reply>, reply: Reply) {
        if let Some(gate) = self.gate.take() {
            gate.settle(self.seq, Some((tx, reply)));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.settle(self.seq, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn reply(tag: usize) -> Reply {
        Err(Error::internal(format!("{tag}")))
    }

    fn tag(rx: &mut oneshot::Receiver<Reply>) -> Option<String> {
        match rx.try_recv() {
            Ok(Err(e)) => Some(e.to_string()),
            _ => None,
        }
    }

    #[test]
    fn answers_leave_in_admission_order() {
        let gate = Arc::new(Gate::default());
        let slots: Vec<Slot> = (0..3).map(|_| gate.issue()).collect();
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        for _ in 0..3 {
            let (tx, rx) = oneshot::channel();
            txs.push(tx);
            rxs.push(rx);
        }
        let mut slots = slots.into_iter();
        let (s0, s1, s2) = (
            slots.next().unwrap(),
            slots.next().unwrap(),
            slots.next().unwrap(),
        );
        let mut txs = txs.into_iter();
        let (t0, t1, t2) = (
            txs.next().unwrap(),
            txs.next().unwrap(),
            txs.next().unwrap(),
        );
        s2.deliver(t2, reply(2));
        s1.deliver(t1, reply(1));
        assert_eq!(gate.held(), 2);
        assert!(tag(&mut rxs[1]).is_none() && tag(&mut rxs[2]).is_none());
        s0.deliver(t0, reply(0));
        assert_eq!(gate.held(), 0);
        for (i, rx) in rxs.iter_mut().enumerate() {
            assert!(tag(rx).unwrap().contains(&i.to_string()));
        }
    }

    #[test]
    fn a_dropped_slot_releases_those_behind_it() {
        let gate = Arc::new(Gate::default());
        let first = gate.issue();
        let second = gate.issue();
        let (tx, mut rx) = oneshot::channel();
        second.deliver(tx, reply(1));
        assert!(tag(&mut rx).is_none());
        drop(first); // the caller went away, or it timed out in the queue
        assert!(tag(&mut rx).is_some());
        assert_eq!(gate.held(), 0);
    }
}
