//! What an ensemble's configuration alone decides, checked when it loads:
//! every step input has a producer, no tensor has two, no cycle, and every
//! ensemble output is produced.

use crate::repository::ModelConfig;
use crate::repository::spec::EnsembleStep;
use std::collections::{HashMap, HashSet};

/// How the index names a step in reasons and errors.
pub(crate) fn step_label(i: usize, step: &EnsembleStep) -> String {
    format!(
        "ensemble_scheduling.step[{i}] (model '{}')",
        step.model_name
    )
}

pub(super) fn full_shape(dims: &[i64], batching: bool) -> Vec<i64> {
    if batching {
        std::iter::once(-1).chain(dims.iter().copied()).collect()
    } else {
        dims.to_vec()
    }
}

/// Checks what the configuration alone decides (see the module doc).
pub(crate) fn check_plan(name: &str, config: &ModelConfig) -> Result<(), String> {
    let Some(ensemble) = &config.ensemble else {
        return Err("not an ensemble".into());
    };
    if config.inputs.is_empty() || config.outputs.is_empty() {
        return Err(
            "an ensemble must declare its `input` and `output` tensors (they are not read from a model file)"
                .into(),
        );
    }
    if let Some(t) = config
        .inputs
        .iter()
        .chain(&config.outputs)
        .find(|t| t.reshape.is_some())
    {
        return Err(format!(
            "`reshape` of '{}' is not supported in an ensemble; reshape in a composing model instead",
            t.name
        ));
    }
    // Ensemble tensor -> its producer: None for an ensemble input.
    let mut producer: HashMap<&str, Option<usize>> = config
        .inputs
        .iter()
        .map(|t| (t.name.as_str(), None))
        .collect();
    for (i, step) in ensemble.steps.iter().enumerate() {
        let at = step_label(i, step);
        if step.model_name == name {
            return Err(format!("{at}: an ensemble cannot run itself"));
        }
        if step.output_map.is_empty() {
            return Err(format!(
                "{at}: `output_map` must map at least one output of the model"
            ));
        }
        for (output, tensor) in &step.output_map {
            match producer.insert(tensor.as_str(), Some(i)) {
                None => {}
                Some(None) => {
                    return Err(format!(
                        "{at}: `output_map` maps output '{output}' to '{tensor}', which is an input of the ensemble; each ensemble tensor has one producer"
                    ));
                }
                Some(Some(j)) => {
                    let other = ensemble.steps.get(j).map(|s| step_label(j, s));
                    return Err(format!(
                        "{at}: `output_map` maps output '{output}' to ensemble tensor '{tensor}', which {} produces too; each ensemble tensor has one producer",
                        other.unwrap_or_default()
                    ));
                }
            }
        }
    }
    let mut needs: Vec<HashSet<usize>> = Vec::with_capacity(ensemble.steps.len());
    for (i, step) in ensemble.steps.iter().enumerate() {
        let mut deps = HashSet::new();
        for (input, tensor) in &step.input_map {
            match producer.get(tensor.as_str()) {
                Some(Some(j)) => {
                    deps.insert(*j);
                }
                Some(None) => {}
                None => {
                    return Err(format!(
                        "{}: `input_map` maps input '{input}' to ensemble tensor '{tensor}', which no step produces and which is not an ensemble input",
                        step_label(i, step)
                    ));
                }
            }
        }
        needs.push(deps);
    }
    for out in &config.outputs {
        match producer.get(out.name.as_str()) {
            Some(Some(_)) => {}
            Some(None) => {
                return Err(format!(
                    "ensemble output '{}' is also an ensemble input; an output must be produced by a step",
                    out.name
                ));
            }
            None => {
                return Err(format!(
                    "ensemble output '{}' is not produced by any step (no `output_map` maps to it)",
                    out.name
                ));
            }
        }
    }
    // Kahn's order: what cannot be ordered is on (or behind) a cycle.
    let mut done = vec![false; needs.len()];
    loop {
        let next: Vec<usize> = (0..needs.len())
            .filter(|&i| !done.get(i).copied().unwrap_or(true))
            .filter(|&i| {
                needs
                    .get(i)
                    .is_some_and(|d| d.iter().all(|&j| done.get(j).copied().unwrap_or(false)))
            })
            .collect();
        if next.is_empty() {
            break;
        }
        for i in next {
            if let Some(d) = done.get_mut(i) {
                *d = true;
            }
        }
    }
    // Of the steps left, those that only wait behind a cycle are not on
    // one: drop, again and again, each that no other step left waits for.
    let mut stuck: Vec<usize> = (0..needs.len())
        .filter(|&i| !done.get(i).copied().unwrap_or(true))
        .collect();
    while let Some(pos) = stuck.iter().position(|&i| {
        !stuck
            .iter()
            .any(|&j| j != i && needs.get(j).is_some_and(|d| d.contains(&i)))
            && !needs.get(i).is_some_and(|d| d.contains(&i))
    }) {
        stuck.remove(pos);
    }
    let stuck: Vec<String> = stuck
        .into_iter()
        .filter_map(|i| ensemble.steps.get(i).map(|s| step_label(i, s)))
        .collect();
    if !stuck.is_empty() {
        return Err(format!(
            "{} form a cycle: each waits for a tensor that another of them produces",
            stuck.join(", ")
        ));
    }
    Ok(())
}
