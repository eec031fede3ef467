//! A log line that a flood of clients cannot turn into a flood of lines:
//! at most one per interval, which says how many it stood for.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one event through per `every`; counts the ones it holds back.
#[derive(Debug)]
pub(crate) struct RateLimit {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub(crate) const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held
    /// back since the last one that was; `None` to stay quiet.
    pub(crate) fn check(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_with_the_count_held_back() {
        let limit = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        let open = RateLimit::new(Duration::ZERO);
        assert_eq!(open.check(), Some(0));
        assert_eq!(open.check(), Some(0));
    }
}
