//! Triton's `dynamic_batching` onto Sluice's scheduler knobs: delays,
//! preferred sizes, priority levels, queue policies and ordering.

use super::pb;
use crate::repository::config::{DEFAULT_MAX_QUEUE_SIZE, DynamicBatching};
use crate::repository::spec::{QueuePolicy, TimeoutAction};
use std::collections::BTreeMap;

/// Most priority levels a model may declare (each level is one FIFO).
const MAX_PRIORITY_LEVELS: u64 = 1 << 16;

pub(super) fn dynamic_batching(
    b: &pb::ModelDynamicBatching,
    max_batch_size: Option<usize>,
) -> Result<DynamicBatching, String> {
    let field = "dynamic_batching";
    let mut preferred = Vec::with_capacity(b.preferred_batch_size.len());
    for &size in &b.preferred_batch_size {
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s >= 1)
            .ok_or_else(|| {
                format!("`{field}.preferred_batch_size` entries must be ≥ 1. Given: {size}")
            })?;
        if let Some(max) = max_batch_size.filter(|&m| size > m.max(1)) {
            return Err(format!(
                "`{field}.preferred_batch_size` entries must be ≤ max_batch_size ({max}). Given: {size}"
            ));
        }
        preferred.push(size);
    }
    // Triton: 0 levels means priorities are off (one level).
    if b.priority_levels > MAX_PRIORITY_LEVELS {
        return Err(format!(
            "`{field}.priority_levels` must be ≤ {MAX_PRIORITY_LEVELS}. Given: {}",
            b.priority_levels
        ));
    }
    let levels = b.priority_levels.max(1) as u32;
    let default_level = match b.default_priority_level {
        0 if b.priority_levels == 0 => 1,
        l if (1..=u64::from(levels)).contains(&l) => l as u32,
        l => {
            return Err(format!(
                "`{field}.default_priority_level` must be between 1 and priority_levels ({}). Given: {l}",
                b.priority_levels
            ));
        }
    };
    let default_policy = queue_policy(
        b.default_queue_policy.as_ref(),
        &format!("{field}.default_queue_policy"),
    )?;
    let mut per_level = BTreeMap::new();
    for (&level, policy) in &b.priority_queue_policy {
        let at = format!("{field}.priority_queue_policy[{level}]");
        if !(1..=u64::from(levels)).contains(&level) {
            return Err(format!(
                "`{at}`: the level must be between 1 and priority_levels ({levels}). Given: {level}"
            ));
        }
        per_level.insert(level as u32, queue_policy(Some(policy), &at)?);
    }
    // The version's bound: each level's own, where it has one, and Sluice's
    // default for each level Triton would leave unbounded.
    let bound = |p: &QueuePolicy| match p.max_queue_size {
        0 => DEFAULT_MAX_QUEUE_SIZE,
        n => n,
    };
    let max_queue_size = (1..=levels)
        .map(|l| per_level.get(&l).map_or(bound(&default_policy), bound))
        .fold(0usize, usize::saturating_add);
    Ok(DynamicBatching {
        enabled: true,
        max_queue_delay_us: b.max_queue_delay_microseconds,
        preferred_batch_sizes: preferred,
        max_queue_size,
        default_timeout_us: default_policy.default_timeout_us,
        priority_levels: levels,
        default_priority_level: default_level,
        allow_timeout_override: default_policy.allow_timeout_override,
        timeout_action: default_policy.timeout_action,
        preserve_ordering: b.preserve_ordering,
        level_queue_size: default_policy.max_queue_size,
        priority_queue_policy: per_level,
    })
}

fn queue_policy(policy: Option<&pb::ModelQueuePolicy>, field: &str) -> Result<QueuePolicy, String> {
    let default = pb::ModelQueuePolicy::default();
    let p = policy.unwrap_or(&default);
    use pb::model_queue_policy::TimeoutAction as Action;
    let timeout_action = match Action::try_from(p.timeout_action) {
        Ok(Action::Reject) => TimeoutAction::Reject,
        Ok(Action::Delay) => TimeoutAction::Delay,
        Err(_) => {
            return Err(format!(
                "`{field}.timeout_action` must be REJECT or DELAY. Given: {}",
                p.timeout_action
            ));
        }
    };
    Ok(QueuePolicy {
        max_queue_size: p.max_queue_size as usize,
        default_timeout_us: p.default_timeout_microseconds,
        allow_timeout_override: p.allow_timeout_override,
        timeout_action,
    })
}
