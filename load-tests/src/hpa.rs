//! The Kubernetes HorizontalPodAutoscaler algorithm (autoscaling/v2), as the
//! controller implements it, for a `type: Pods` metric with an
//! `AverageValue` target: the replica calculator (`calcPlainMetricReplicas`:
//! tolerance, missing and unready pods), then the `behavior` normalisation
//! (stabilisation windows, then scaling policies with `selectPolicy`), then
//! `minReplicas` / `maxReplicas`.
//!
//! Time is whatever the caller says it is (a [`Duration`] since some start),
//! so a simulation can run the controller faster than a cluster would.

pub mod record;

use std::time::Duration;

/// What the controller knows about one pod of the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PodMetric {
    /// Not ready yet (the HPA's `Pending`): left out, counted as 0 on a scale-up.
    Unready,
    /// Ready, but no metric value in the window: 0 on a scale-up, the target on a scale-down.
    Missing,
    /// Ready with this metric value.
    Value(f64),
}

impl PodMetric {
    /// The value, if the pod has one.
    pub fn value(self) -> Option<f64> {
        match self {
            Self::Value(v) => Some(v),
            _ => None,
        }
    }
}

/// `desired = ceil(current × average / target)`, with the replica
/// calculator's handling of tolerance, missing and unready pods. `current` is
/// the replica count of the scale target. `None` when no pod has a value
/// (the controller then leaves the scale alone).
pub fn replica_count(
    pods: &[PodMetric],
    current: usize,
    target: f64,
    tolerance: f64,
) -> Option<usize> {
    let values: Vec<f64> = pods
        .iter()
        .filter_map(|p| match p {
            PodMetric::Value(v) => Some(*v),
            _ => None,
        })
        .collect();
    if values.is_empty() || target <= 0.0 {
        return None;
    }
    let ready = values.len();
    let missing = pods.iter().filter(|p| **p == PodMetric::Missing).count();
    let unready = pods.iter().filter(|p| **p == PodMetric::Unready).count();
    #[allow(clippy::cast_precision_loss)]
    let ratio = |sum: f64, n: usize| sum / n as f64 / target;
    let usage = ratio(values.iter().sum(), ready);
    let scale_up_with_unready = unready > 0 && usage > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if (1.0 - usage).abs() <= tolerance {
            return Some(current);
        }
        return Some(ceil_count(usage * count_f64(ready)));
    }
    // Missing pods: the target on a scale-down, 0 on a scale-up; unready
    // pods: 0 when scaling up. Either can only damp the change.
    let mut sum: f64 = values.iter().sum();
    let mut n = ready;
    if missing > 0 {
        if usage < 1.0 {
            sum += target * count_f64(missing);
        }
        n += missing;
    }
    if scale_up_with_unready {
        n += unready;
    }
    let new_usage = ratio(sum, n);
    if (1.0 - new_usage).abs() <= tolerance
        || (usage < 1.0 && new_usage > 1.0)
        || (usage > 1.0 && new_usage < 1.0)
    {
        return Some(current);
    }
    let desired = ceil_count(new_usage * count_f64(n));
    if (new_usage < 1.0 && desired > current) || (new_usage > 1.0 && desired < current) {
        return Some(current);
    }
    Some(desired)
}

#[allow(clippy::cast_precision_loss)]
fn count_f64(n: usize) -> f64 {
    n as f64
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn ceil_count(x: f64) -> usize {
    x.ceil().max(0.0) as usize
}

/// One scaling policy: at most `Pods(n)` pods or `Percent(p)` % of the
/// replicas at the start of the period, per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// A number of pods per period.
    Pods(u32, Duration),
    /// A percentage of the replicas per period.
    Percent(u32, Duration),
}

/// Which policy wins when several apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The one allowing the largest change (the default).
    Max,
    /// The one allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// `stabilizationWindowSeconds`.
    pub window: Duration,
    /// `policies`.
    pub policies: Vec<Policy>,
    /// `selectPolicy`.
    pub select: Select,
}

/// An HPA spec: bounds, tolerance and behavior.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `minReplicas`.
    pub min: usize,
    /// `maxReplicas`.
    pub max: usize,
    /// `AverageValue` target per pod.
    pub target: f64,
    /// The controller's tolerance (0.1 by default).
    pub tolerance: f64,
    /// `behavior.scaleUp`.
    pub up: Rules,
    /// `behavior.scaleDown`.
    pub down: Rules,
}

impl Spec {
    /// The behavior of `deploy/base/hpa.yaml`: up at once by max(100 %, 4
    /// pods) per 15 s, down after a 300 s window by max(25 %, 1 pod) per 60 s.
    pub fn base(min: usize, max: usize, target: f64) -> Self {
        let s = Duration::from_secs;
        Self {
            min,
            max,
            target,
            tolerance: 0.1,
            up: Rules {
                window: Duration::ZERO,
                policies: vec![Policy::Percent(100, s(15)), Policy::Pods(4, s(15))],
                select: Select::Max,
            },
            down: Rules {
                window: s(300),
                policies: vec![Policy::Percent(25, s(60)), Policy::Pods(1, s(60))],
                select: Select::Max,
            },
        }
    }
}

/// The controller's memory for one HPA: past recommendations and scale events.
#[derive(Debug, Clone)]
pub struct Autoscaler {
    /// The spec it enforces.
    pub spec: Spec,
    recommendations: Vec<(Duration, usize)>,
    /// (time, replicas added or removed); positive is up.
    events: Vec<(Duration, i64)>,
}

/// The outcome of one sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The replica calculator's answer, before behaviour (`None`: no metrics).
    pub raw: Option<usize>,
    /// What the controller scales to.
    pub desired: usize,
}

impl Autoscaler {
    /// A controller with no history.
    pub fn new(spec: Spec) -> Self {
        Self {
            spec,
            recommendations: Vec::new(),
            events: Vec::new(),
        }
    }

    /// One sync at `now` with `current` replicas and the pods' metrics.
    /// Records the scale event if the decision differs from `current`.
    pub fn sync(&mut self, now: Duration, current: usize, pods: &[PodMetric]) -> Decision {
        let spec = &self.spec;
        let (raw, desired) = if current > spec.max {
            (None, spec.max)
        } else if current < spec.min {
            (None, spec.min)
        } else {
            match replica_count(pods, current, spec.target, spec.tolerance) {
                None => (None, current),
                Some(raw) => (Some(raw), self.normalize(now, current, raw)),
            }
        };
        if desired != current {
            let change = i64::try_from(desired).unwrap_or(i64::MAX)
                - i64::try_from(current).unwrap_or(i64::MAX);
            self.events.push((now, change));
        }
        Decision { raw, desired }
    }

    /// `normalizeDesiredReplicasWithBehaviors`: stabilise, then rate-limit, then clamp.
    fn normalize(&mut self, now: Duration, current: usize, raw: usize) -> usize {
        let (up_win, down_win) = (self.spec.up.window, self.spec.down.window);
        let (mut up, mut down) = (raw, raw);
        for &(t, r) in &self.recommendations {
            if now.saturating_sub(t) < up_win {
                up = up.min(r);
            }
            if now.saturating_sub(t) < down_win {
                down = down.max(r);
            }
        }
        let keep = up_win.max(down_win);
        self.recommendations
            .retain(|&(t, _)| now.saturating_sub(t) < keep);
        self.recommendations.push((now, raw));
        let stabilized = current.max(up).min(down);

        let spec = &self.spec;
        if stabilized > current {
            let limit = self.limit(now, current, &spec.up, true).max(current);
            stabilized.min(limit.min(spec.max))
        } else if stabilized < current {
            let limit = self.limit(now, current, &spec.down, false).min(current);
            stabilized.max(limit.max(spec.min))
        } else {
            stabilized
        }
    }

    /// Replicas added (`up`) or removed in the last `period`.
    fn changed(&self, now: Duration, period: Duration, up: bool) -> i64 {
        self.events
            .iter()
            .filter(|&&(t, c)| now.saturating_sub(t) < period && (c > 0) == up)
            .map(|&(_, c)| c.abs())
            .sum()
    }

    /// `calculateScaleUpLimitWithScalingRules` / `calculateScaleDownLimitWithBehaviors`.
    fn limit(&self, now: Duration, current: usize, rules: &Rules, up: bool) -> usize {
        let cur = i64::try_from(current).unwrap_or(i64::MAX);
        let mut result: Option<i64> = None;
        for policy in &rules.policies {
            let period = match *policy {
                Policy::Pods(_, p) | Policy::Percent(_, p) => p,
            };
            let start = cur - self.changed(now, period, true) + self.changed(now, period, false);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let proposed = match (*policy, up) {
                (Policy::Pods(n, _), true) => start + i64::from(n),
                (Policy::Pods(n, _), false) => start - i64::from(n),
                (Policy::Percent(p, _), true) => {
                    (start as f64 * (1.0 + f64::from(p) / 100.0)).ceil() as i64
                }
                (Policy::Percent(p, _), false) => {
                    (start as f64 * (1.0 - f64::from(p) / 100.0)) as i64
                }
            };
            // Max picks the largest change: the highest limit up, the lowest down.
            let larger_change = (rules.select == Select::Max) == up;
            result = Some(match result {
                None => proposed,
                Some(r) if larger_change => r.max(proposed),
                Some(r) => r.min(proposed),
            });
        }
        match (rules.select, result) {
            (Select::Disabled, _) | (_, None) => current,
            (_, Some(r)) => usize::try_from(r.max(0)).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PodMetric::{Missing, Unready, Value};

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn proportional_with_tolerance() {
        // Average 20 against 10 on 2 pods: 4.
        assert_eq!(
            replica_count(&[Value(20.0), Value(20.0)], 2, 10.0, 0.1),
            Some(4)
        );
        // Within 10 %: unchanged.
        assert_eq!(
            replica_count(&[Value(10.9), Value(10.5)], 2, 10.0, 0.1),
            Some(2)
        );
        assert_eq!(replica_count(&[Value(2.0)], 3, 10.0, 0.1), Some(1));
        assert_eq!(replica_count(&[Unready, Missing], 2, 10.0, 0.1), None);
    }

    #[test]
    fn unready_and_missing_pods_damp_the_change() {
        // Scale-up: the unready pod counts as 0: (30 + 0) / 2 = 15 → ceil(1.5 × 2) = 3.
        assert_eq!(
            replica_count(&[Value(30.0), Unready], 2, 10.0, 0.1),
            Some(3)
        );
        // Scale-down: a missing pod counts as the target: (2 + 10) / 2 = 6 → ceil(0.6 × 2) = 2.
        assert_eq!(replica_count(&[Value(2.0), Missing], 2, 10.0, 0.1), Some(2));
        // Scale-up that the zeros would reverse: unchanged.
        assert_eq!(
            replica_count(&[Value(12.0), Unready, Unready], 3, 10.0, 0.1),
            Some(3)
        );
    }

    #[test]
    fn scale_up_is_rate_limited_by_the_larger_policy() {
        let mut hpa = Autoscaler::new(Spec::base(1, 20, 10.0));
        // 1 pod at 100: raw 10, limited to max(1 × 2, 1 + 4) = 5.
        let d = hpa.sync(S(0), 1, &[Value(100.0)]);
        assert_eq!((d.raw, d.desired), (Some(10), 5));
        // 5 s later the 4 added pods still count in the 15 s period: no more.
        let pods = [Value(20.0); 5];
        assert_eq!(hpa.sync(S(5), 5, &pods).desired, 5);
        // A new period: max(5 × 2, 5 + 4) = 10.
        assert_eq!(hpa.sync(S(15), 5, &pods).desired, 10);
    }

    #[test]
    fn scale_down_waits_for_the_window_then_steps() {
        let mut hpa = Autoscaler::new(Spec::base(1, 20, 10.0));
        assert_eq!(hpa.sync(S(0), 8, &[Value(10.0); 8]).desired, 8);
        // Load gone: the 300 s window holds the highest recent recommendation.
        for t in (15..300).step_by(15) {
            assert_eq!(hpa.sync(S(t), 8, &[Value(0.5); 8]).desired, 8, "t={t}");
        }
        // Then max(25 %, 1 pod) per 60 s: 8 → 6 (25 % of 8 = 2).
        assert_eq!(hpa.sync(S(300), 8, &[Value(0.5); 8]).desired, 6);
        assert_eq!(hpa.sync(S(315), 6, &[Value(0.5); 6]).desired, 6);
        // 60 s later: from 6, 25 % → 4.5 → 4.
        assert_eq!(hpa.sync(S(360), 6, &[Value(0.5); 6]).desired, 4);
    }

    #[test]
    fn bounds_apply() {
        let mut hpa = Autoscaler::new(Spec::base(2, 3, 10.0));
        assert_eq!(hpa.sync(S(0), 1, &[Value(0.0)]).desired, 2);
        assert_eq!(hpa.sync(S(15), 2, &[Value(100.0); 2]).desired, 3);
        assert_eq!(hpa.sync(S(30), 5, &[Value(0.0); 5]).desired, 3);
    }
}
