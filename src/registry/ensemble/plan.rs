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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::spec::{Ensemble, TensorDecl};
    use crate::tensor::DataType;

    fn decl(name: &str) -> TensorDecl {
        TensorDecl {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: vec![4],
            reshape: None,
            labels: None,
            optional: false,
        }
    }

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    /// Steps as (model, [(input, tensor)], [(output, tensor)]).
    fn config(
        inputs: &[&str],
        outputs: &[&str],
        steps: &[(&str, Pairs<'_>, Pairs<'_>)],
    ) -> ModelConfig {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ModelConfig {
            inputs: inputs.iter().map(|n| decl(n)).collect(),
            outputs: outputs.iter().map(|n| decl(n)).collect(),
            ensemble: Some(Ensemble {
                steps: steps
                    .iter()
                    .map(|(model, ins, outs)| EnsembleStep {
                        model_name: model.to_string(),
                        model_version: None,
                        input_map: map(ins),
                        output_map: map(outs),
                    })
                    .collect(),
            }),
            ..ModelConfig::default()
        }
    }

    #[test]
    fn a_chain_in_any_order_is_a_plan() {
        let c = config(
            &["IN"],
            &["OUT", "MID"],
            &[
                ("b", &[("x", "MID")], &[("y", "OUT")]),
                ("a", &[("x", "IN")], &[("y", "MID")]),
            ],
        );
        check_plan("e", &c).unwrap();
    }

    #[test]
    fn only_the_steps_on_a_cycle_are_named() {
        let c = config(
            &["IN"],
            &["OUT"],
            &[
                ("a", &[("x", "IN")], &[("y", "A")]),
                ("b", &[("x", "A"), ("z", "C")], &[("y", "B")]),
                ("c", &[("x", "B")], &[("y", "C")]),
                ("d", &[("x", "C")], &[("y", "OUT")]),
            ],
        );
        let err = check_plan("e", &c).unwrap_err();
        assert_eq!(
            err,
            "ensemble_scheduling.step[1] (model 'b'), ensemble_scheduling.step[2] (model 'c') form a cycle: each waits for a tensor that another of them produces"
        );
        let c = config(
            &["IN"],
            &["OUT"],
            &[("a", &[("x", "OUT")], &[("y", "OUT")])],
        );
        assert!(
            check_plan("e", &c)
                .unwrap_err()
                .starts_with("ensemble_scheduling.step[0] (model 'a') form a cycle")
        );
    }

    #[test]
    fn each_static_error_names_its_step() {
        let cases: Vec<(ModelConfig, &str)> = vec![
            (
                config(
                    &["IN"],
                    &["OUT"],
                    &[
                        ("a", &[("x", "IN")], &[("y", "OUT")]),
                        ("b", &[("x", "IN")], &[("y", "OUT")]),
                    ],
                ),
                "ensemble_scheduling.step[1] (model 'b'): `output_map` maps output 'y' to ensemble tensor 'OUT', which ensemble_scheduling.step[0] (model 'a') produces too",
            ),
            (
                config(&["IN"], &["OUT"], &[("a", &[("x", "IN")], &[("y", "IN")])]),
                "ensemble_scheduling.step[0] (model 'a'): `output_map` maps output 'y' to 'IN', which is an input of the ensemble",
            ),
            (
                config(
                    &["IN"],
                    &["OUT"],
                    &[("a", &[("x", "NOPE")], &[("y", "OUT")])],
                ),
                "ensemble_scheduling.step[0] (model 'a'): `input_map` maps input 'x' to ensemble tensor 'NOPE', which no step produces",
            ),
            (
                config(
                    &["IN"],
                    &["OUT", "MORE"],
                    &[("a", &[("x", "IN")], &[("y", "OUT")])],
                ),
                "ensemble output 'MORE' is not produced by any step",
            ),
            (
                config(&["IN"], &["OUT"], &[("e", &[("x", "IN")], &[("y", "OUT")])]),
                "ensemble_scheduling.step[0] (model 'e'): an ensemble cannot run itself",
            ),
            (
                config(&["IN"], &["OUT"], &[("a", &[("x", "IN")], &[])]),
                "ensemble_scheduling.step[0] (model 'a'): `output_map` must map at least one output",
            ),
            (
                config(&[], &["OUT"], &[("a", &[], &[("y", "OUT")])]),
                "an ensemble must declare its `input` and `output` tensors",
            ),
        ];
        for (c, needle) in cases {
            let err = check_plan("e", &c).unwrap_err();
            assert!(err.contains(needle), "{needle}\n  gave: {err}");
        }
    }
}
