//! The queue of one model version and the rule that forms batches from it.
//!
//! Pure bookkeeping under the scheduler's mutex: no threads, no clocks of its
//! own (callers pass `now`), so every rule here is unit-tested exactly.

use super::entry::Entry;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Batch formation knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPolicy {
    /// Most rows in one batch; 0 means no batching (one request per run).
    pub max_batch_size: usize,
    /// How long the oldest request may wait for a fuller batch.
    pub max_queue_delay: Duration,
    /// Sizes that dispatch at once, ascending.
    pub preferred_batch_sizes: Vec<usize>,
}

/// What the worker should do next.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Run these entries as one batch (removed from the queue, in batch order).
    Run(Vec<Entry>),
    /// A batch is forming: wait until this instant (or a new arrival) and decide again.
    WaitUntil(Instant),
    /// Nothing to do.
    Idle,
}

/// Requests waiting: two FIFOs per priority level, in the order batches are
/// formed: level 1's requests, then level 1's delayed ones (past their
/// deadline on a level that delays), then level 2's, and so on. Index `2l`
/// is level `l + 1`, `2l + 1` its delayed requests.
#[derive(Debug)]
pub(crate) struct Queue {
    levels: Vec<VecDeque<Entry>>,
    len: usize,
}

impl Queue {
    pub fn new(priority_levels: usize) -> Self {
        Self {
            levels: (0..2 * priority_levels.max(1))
                .map(|_| VecDeque::new())
                .collect(),
            len: 0,
        }
    }

    /// The FIFO index of a priority level (clamped to the levels that exist).
    fn index(&self, priority: usize) -> usize {
        2 * (priority.clamp(1, self.levels.len() / 2) - 1)
    }

    /// Requests queued at one priority level, delayed ones included.
    pub(crate) fn level_len(&self, priority: usize) -> usize {
        let i = self.index(priority);
        self.levels[i].len() + self.levels[i + 1].len()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `entry` at its priority level (clamped to the levels that exist).
    pub(crate) fn push(&mut self, entry: Entry) {
        let index = self.index(entry.job.priority);
        self.levels[index].push_back(entry);
        self.len += 1;
    }

    /// Removes entries that must never run: the caller went away, the waiter
    /// cancelled it, or its deadline passed (answered here with a timeout).
    /// Entries of a delaying level past their deadline move to the back of
    /// that level's delayed FIFO.
    pub(crate) fn purge(&mut self, now: Instant) {
        for level in &mut self.levels {
            let before = level.len();
            level.retain_mut(|e| !e.is_dead(now));
            self.len -= before - level.len();
        }
        for i in (0..self.levels.len()).step_by(2) {
            if !self.levels[i].iter().any(|e| e.demoted(now)) {
                continue;
            }
            let (keep, demoted): (VecDeque<Entry>, VecDeque<Entry>) =
                self.levels[i].drain(..).partition(|e| !e.demoted(now));
            self.levels[i] = keep;
            for mut entry in demoted {
                entry.demote_at = None;
                self.levels[i + 1].push_back(entry);
            }
        }
    }

    /// Removes and returns every entry (shutdown of a broken scheduler).
    pub(crate) fn drain(&mut self) -> Vec<Entry> {
        self.len = 0;
        self.levels.iter_mut().flat_map(|l| l.drain(..)).collect()
    }

    /// Forms the next batch: the oldest entry of the highest non-empty level,
    /// plus every compatible entry behind it (in priority, then arrival order),
    /// up to `max_batch_size` rows. `force` dispatches without waiting (shutdown).
    pub(crate) fn next_batch(
        &mut self,
        policy: &BatchPolicy,
        now: Instant,
        force: bool,
    ) -> Decision {
        self.purge(now);
        let Some((head_level, head)) = self
            .levels
            .iter()
            .enumerate()
            .find_map(|(i, l)| l.front().map(|e| (i, e)))
        else {
            return Decision::Idle;
        };
        if policy.max_batch_size == 0 {
            let Some(entry) = self.levels[head_level].pop_front() else {
                return Decision::Idle;
            };
            self.len -= 1;
            return Decision::Run(vec![entry]);
        }
        let key = head.job.key.clone();
        let oldest = head.enqueued;
        let max = policy.max_batch_size;

        // Pick (level, index) of compatible entries, greedily in order.
        let mut picked: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0usize;
        'scan: for (li, level) in self.levels.iter().enumerate().skip(head_level) {
            for (ei, entry) in level.iter().enumerate() {
                if rows == max {
                    break 'scan;
                }
                if entry.job.key != key || rows + entry.job.rows > max {
                    continue;
                }
                rows += entry.job.rows;
                picked.push((li, ei));
            }
        }

        let waited = now.saturating_duration_since(oldest);
        let full = rows >= max || policy.preferred_batch_sizes.contains(&rows);
        if !force && !full && waited < policy.max_queue_delay {
            return Decision::WaitUntil(oldest + policy.max_queue_delay);
        }

        // Remove picked entries, back to front per level so indices stay valid.
        let mut batch: Vec<Option<Entry>> = Vec::with_capacity(picked.len());
        batch.resize_with(picked.len(), || None);
        for (slot, &(li, ei)) in picked.iter().enumerate().rev() {
            batch[slot] = self.levels[li].remove(ei);
        }
        let batch: Vec<Entry> = batch.into_iter().flatten().collect();
        self.len -= batch.len();
        Decision::Run(batch)
    }
}

impl Entry {
    /// Whether a delaying level's deadline has passed.
    fn demoted(&self, now: Instant) -> bool {
        self.demote_at.is_some_and(|at| now >= at)
    }

    fn is_dead(&self, now: Instant) -> bool {
        if self.reply.is_closed() || self.ticket.is_cancelled() {
            return true;
        }
        match self.job.deadline {
            Some(deadline) if now >= deadline => {
                // The waiter answers the timeout; the entry only has to go.
                self.ticket.cancel();
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::job::{BatchKey, Job, Reply, Ticket};
    use super::*;
    use crate::tensor::DataType;
    use std::sync::Arc;

    fn entry(
        rows: usize,
        dim: usize,
        priority: usize,
        at: Instant,
    ) -> (Entry, tokio::sync::oneshot::Receiver<Reply>) {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            trace: tracing::Span::none(),
            inputs: Vec::new(),
            outputs: vec![0],
            rows,
            key: Arc::new(BatchKey {
                inputs: vec![(DataType::Fp32, vec![dim])],
                outputs: vec![0],
                omitted: Vec::new(),
            }),
            priority,
            deadline: None,
        };
        (
            Entry {
                job,
                ticket: Arc::new(Ticket::new()),
                reply,
                enqueued: at,
                demote_at: None,
                order: None,
            },
            rx,
        )
    }

    fn policy(max: usize, delay_us: u64, preferred: &[usize]) -> BatchPolicy {
        BatchPolicy {
            max_batch_size: max,
            max_queue_delay: Duration::from_micros(delay_us),
            preferred_batch_sizes: preferred.to_vec(),
        }
    }

    fn rows_of(d: Decision) -> Vec<usize> {
        match d {
            Decision::Run(b) => b.iter().map(|e| e.job.rows).collect(),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn greedy_takes_compatible_up_to_max() {
        let now = Instant::now();
        let mut q = Queue::new(1);
        let mut keep = Vec::new();
        for (rows, dim) in [(2, 3), (1, 4), (3, 3), (2, 3), (1, 3)] {
            let (e, rx) = entry(rows, dim, 1, now);
            keep.push(rx);
            q.push(e);
        }
        // head is (2, dim 3); (1, dim 4) is skipped; 2+3=5, then 2 would exceed 6; 1 fits.
        assert_eq!(
            rows_of(q.next_batch(&policy(6, 0, &[]), now, false)),
            vec![2, 3, 1]
        );
        // The incompatible one is not starved: it heads the next batch.
        assert_eq!(
            rows_of(q.next_batch(&policy(6, 0, &[]), now, false)),
            vec![1]
        );
        assert_eq!(
            rows_of(q.next_batch(&policy(6, 0, &[]), now, false)),
            vec![2]
        );
        assert!(matches!(
            q.next_batch(&policy(6, 0, &[]), now, false),
            Decision::Idle
        ));
        assert!(q.is_empty());
    }

    #[test]
    fn delay_waits_only_below_preferred_or_max() {
        let now = Instant::now();
        let mut q = Queue::new(1);
        let mut keep = Vec::new();
        for _ in 0..3 {
            let (e, rx) = entry(1, 1, 1, now);
            keep.push(rx);
            q.push(e);
        }
        let p = policy(8, 1000, &[4]);
        match q.next_batch(&p, now, false) {
            Decision::WaitUntil(t) => assert_eq!(t, now + Duration::from_micros(1000)),
            other => panic!("expected a wait, got {other:?}"),
        }
        let (e, rx) = entry(1, 1, 1, now);
        keep.push(rx);
        q.push(e);
        // 4 rows is a preferred size: dispatch without waiting for the delay.
        assert_eq!(rows_of(q.next_batch(&p, now, false)), vec![1, 1, 1, 1]);
        // After the delay a partial batch goes.
        let (e, rx) = entry(1, 1, 1, now);
        keep.push(rx);
        q.push(e);
        let later = now + Duration::from_micros(1000);
        assert_eq!(rows_of(q.next_batch(&p, later, false)), vec![1]);
    }

    #[test]
    fn higher_priority_goes_first() {
        let now = Instant::now();
        let mut q = Queue::new(2);
        let (low, _r1) = entry(1, 1, 2, now);
        let (high, _r2) = entry(2, 1, 1, now + Duration::from_micros(5));
        q.push(low);
        q.push(high);
        // Head is the high-priority one; the low one is compatible and joins behind it.
        assert_eq!(
            rows_of(q.next_batch(&policy(2, 0, &[]), now, false)),
            vec![2]
        );
        assert_eq!(
            rows_of(q.next_batch(&policy(2, 0, &[]), now, false)),
            vec![1]
        );
    }

    #[test]
    fn dead_entries_never_run() {
        let now = Instant::now();
        let mut q = Queue::new(1);
        let (gone, rx) = entry(1, 1, 1, now);
        drop(rx); // the client went away
        q.push(gone);
        let (mut late, _r) = entry(1, 1, 1, now);
        late.job.deadline = Some(now);
        let ticket = late.ticket.clone();
        q.push(late);
        assert!(matches!(
            q.next_batch(&policy(4, 0, &[]), now, false),
            Decision::Idle
        ));
        assert!(ticket.is_cancelled());
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn no_batching_runs_one_at_a_time() {
        let now = Instant::now();
        let mut q = Queue::new(1);
        let (a, _ra) = entry(1, 1, 1, now);
        let (b, _rb) = entry(1, 1, 1, now);
        q.push(a);
        q.push(b);
        assert_eq!(
            rows_of(q.next_batch(&policy(0, 0, &[]), now, false)),
            vec![1]
        );
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_delayed_entry_runs_after_its_level_and_before_lower_levels() {
        let now = Instant::now();
        let mut q = Queue::new(2);
        let (mut late, _r1) = entry(1, 1, 1, now);
        late.demote_at = Some(now);
        let (on_time, _r2) = entry(2, 1, 1, now);
        let (low, _r3) = entry(3, 1, 2, now);
        q.push(late);
        q.push(on_time);
        q.push(low);
        assert_eq!(q.level_len(1), 2);
        // Max 2 rows: the level-1 entry that has not timed out goes first.
        assert_eq!(
            rows_of(q.next_batch(&policy(2, 0, &[]), now, false)),
            vec![2]
        );
        // Then the delayed one (it never times out), before level 2.
        assert_eq!(
            rows_of(q.next_batch(&policy(1, 0, &[]), now, false)),
            vec![1]
        );
        assert_eq!(
            rows_of(q.next_batch(&policy(3, 0, &[]), now, false)),
            vec![3]
        );
    }
}
