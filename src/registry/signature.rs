//! The signature a version serves: the graph's, as its configuration
//! declares it (Triton's `input`/`output` with `dims` and `reshape`), and the
//! executor wrapper that maps between what clients send and what the graph
//! takes.
//!
//! # Rules
//! - Without declarations the served signature is the graph's.
//! - Declared inputs must cover every graph input; declared outputs may be a
//!   subset of the graph's (only those are served, in the declared order).
//! - A declared tensor must exist in the graph with the same datatype, and
//!   its shape (`reshape` when given, else `dims`, after the batch dimension
//!   when the model batches) must fit the graph's: equal rank, and equal
//!   sizes wherever the graph's size is fixed. Errors name the tensor.
//! - Clients see `dims`; the graph sees `reshape`. Reshaping keeps the bytes
//!   (row-major), so it costs a shape rewrite per batch, nothing more.

use crate::repository::ModelConfig;
use crate::repository::spec::TensorDecl;
use crate::runtime::{BatchInput, ModelSignature, RunOutput, TensorSpec};
use crate::scheduler::Executor;
use crate::tensor::fmt_shape;
use std::collections::HashMap;
use std::sync::Arc;

/// The served signature, and how to reach the graph from it (None: the
/// graph's own signature is served).
#[derive(Debug)]
pub(super) struct Served {
    pub(crate) signature: ModelSignature,
    pub(crate) mapping: Option<Arc<Mapping>>,
}

/// How client-side tensors map onto the graph's.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mapping {
    batching: bool,
    /// Reshaped inputs, by name.
    inputs: HashMap<String, Reshape>,
    /// Per served output: the graph output's index, and its reshape.
    outputs: Vec<(usize, Option<Reshape>)>,
}

/// Two shape patterns (without the batch dim) of equal element count.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reshape {
    from: Vec<i64>,
    to: Vec<i64>,
}

impl Reshape {
    /// The `to` shape of a tensor whose actual shape matches `from`: `to`
    /// with its -1 dims filled, in order, by the sizes at `from`'s -1 dims.
    fn apply(&self, actual: &[usize]) -> Result<Vec<usize>, String> {
        if actual.len() != self.from.len()
            || actual
                .iter()
                .zip(&self.from)
                .any(|(&a, &f)| f >= 0 && i64::try_from(a).ok() != Some(f))
        {
            return Err(format!(
                "shape {} does not match {}",
                fmt_shape(actual),
                fmt_shape(&self.from)
            ));
        }
        let mut variable = actual
            .iter()
            .zip(&self.from)
            .filter(|&(_, &f)| f < 0)
            .map(|(&a, _)| a);
        self.to
            .iter()
            .map(|&t| match usize::try_from(t) {
                Ok(t) => Ok(t),
                Err(_) => variable
                    .next()
                    .ok_or_else(|| "reshape lost a dimension".into()),
            })
            .collect()
    }
}

/// Builds the served signature of a graph under `config`.
pub(super) fn served(
    graph: &ModelSignature,
    config: &ModelConfig,
    max_batch_size: usize,
) -> Result<Served, String> {
    let batching = max_batch_size > 0;
    if config.inputs.is_empty() && config.outputs.is_empty() {
        // Inputs with defaults are served only when a config declares them.
        return Ok(Served {
            signature: ModelSignature {
                defaulted: Vec::new(),
                ..graph.clone()
            },
            mapping: None,
        });
    }
    let mut mapping = Mapping {
        batching,
        inputs: HashMap::new(),
        outputs: Vec::new(),
    };
    let mut defaulted = Vec::new();
    let inputs = if config.inputs.is_empty() {
        graph.inputs.clone()
    } else {
        // Inputs with a default in the graph may be declared too, optional
        // or not; only they may be optional.
        let all_inputs: Vec<TensorSpec> = graph
            .inputs
            .iter()
            .chain(&graph.defaulted)
            .cloned()
            .collect();
        let mut specs = Vec::with_capacity(config.inputs.len());
        for decl in &config.inputs {
            let (_, spec, reshape) = declared(decl, &all_inputs, "input", batching)?;
            if decl.optional {
                if !graph.defaulted.iter().any(|d| d.name == decl.name) {
                    return Err(format!(
                        "input '{}' is declared optional, but the model needs it in every run: only an input with a default value in the graph (an initializer also listed as a graph input) can be left out",
                        decl.name
                    ));
                }
                defaulted.push(spec.clone());
            }
            if let Some(r) = reshape {
                mapping.inputs.insert(decl.name.clone(), r);
            }
            specs.push(spec);
        }
        if let Some(missing) = graph
            .inputs
            .iter()
            .find(|g| !config.inputs.iter().any(|d| d.name == g.name))
        {
            return Err(format!(
                "config declares inputs but not the model's input '{}' ({} {}); declare every input",
                missing.name,
                missing.datatype,
                fmt_shape(&missing.shape)
            ));
        }
        specs
    };
    let outputs = if config.outputs.is_empty() {
        mapping.outputs = (0..graph.outputs.len()).map(|i| (i, None)).collect();
        graph.outputs.clone()
    } else {
        let mut specs = Vec::with_capacity(config.outputs.len());
        for decl in &config.outputs {
            let (index, spec, reshape) = declared(decl, &graph.outputs, "output", batching)?;
            // The graph produces the reshape; clients get dims.
            let reshape = reshape.map(|r| Reshape {
                from: r.to,
                to: r.from,
            });
            mapping.outputs.push((index, reshape));
            specs.push(spec);
        }
        specs
    };
    let identity_outputs = mapping.outputs.len() == graph.outputs.len()
        && mapping
            .outputs
            .iter()
            .enumerate()
            .all(|(i, (g, r))| *g == i && r.is_none());
    let signature = ModelSignature {
        inputs,
        outputs,
        defaulted,
    };
    Ok(Served {
        signature,
        mapping: (!mapping.inputs.is_empty() || !identity_outputs).then(|| Arc::new(mapping)),
    })
}

/// Checks one declared tensor against the graph's tensors of its role.
/// Returns the graph index, the served spec, and the reshape from the
/// client's dims to the graph's (when they differ).
fn declared(
    decl: &TensorDecl,
    graph: &[TensorSpec],
    role: &str,
    batching: bool,
) -> Result<(usize, TensorSpec, Option<Reshape>), String> {
    let Some(index) = graph.iter().position(|g| g.name == decl.name) else {
        let names: Vec<&str> = graph.iter().map(|g| g.name.as_str()).collect();
        return Err(format!(
            "{role} '{}' is not an {role} of the model; its {role}s are: {}",
            decl.name,
            names.join(", ")
        ));
    };
    let g = &graph[index];
    if g.datatype != decl.datatype {
        return Err(format!(
            "{role} '{}': the config declares datatype {}, the model has {}",
            decl.name, decl.datatype, g.datatype
        ));
    }
    let with_batch = |dims: &[i64]| -> Vec<i64> {
        if batching {
            std::iter::once(-1).chain(dims.iter().copied()).collect()
        } else {
            dims.to_vec()
        }
    };
    let model_shape = with_batch(decl.model_dims());
    let fits = model_shape.len() == g.shape.len()
        && model_shape
            .iter()
            .zip(&g.shape)
            .all(|(&c, &m)| m < 0 || c == m);
    if !fits {
        let what = if decl.reshape.is_some() {
            "reshape"
        } else {
            "dims"
        };
        return Err(format!(
            "{role} '{}': the config's {what} give shape {}{}, the model has {}",
            decl.name,
            fmt_shape(&model_shape),
            if batching {
                " (with the batch dimension, as max_batch_size > 0)"
            } else {
                ""
            },
            fmt_shape(&g.shape)
        ));
    }
    let spec = TensorSpec {
        name: decl.name.clone(),
        datatype: decl.datatype,
        shape: with_batch(&decl.dims),
    };
    let reshape = decl
        .reshape
        .as_ref()
        .filter(|r| **r != decl.dims)
        .map(|r| Reshape {
            from: decl.dims.clone(),
            to: r.clone(),
        });
    Ok((index, spec, reshape))
}

/// An executor that serves the declared signature on top of the graph's.
pub(super) struct Mapped {
    pub(crate) inner: Box<dyn Executor>,
    pub(crate) mapping: Arc<Mapping>,
}

impl Mapped {
    fn reshape(&self, shape: &[usize], r: &Reshape) -> Result<Vec<usize>, String> {
        let batch = usize::from(self.mapping.batching).min(shape.len());
        let (rows, rest) = shape.split_at(batch);
        Ok(rows.iter().copied().chain(r.apply(rest)?).collect())
    }
}

impl Executor for Mapped {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        let mut graph_inputs = Vec::with_capacity(inputs.len());
        for input in inputs {
            let shape = match self.mapping.inputs.get(input.name) {
                Some(r) => self
                    .reshape(&input.shape, r)
                    .map_err(|e| format!("input '{}': {e}", input.name))?,
                None => input.shape.clone(),
            };
            graph_inputs.push(BatchInput {
                name: input.name,
                datatype: input.datatype,
                shape,
                parts: input.parts.clone(),
            });
        }
        let graph_wanted = wanted
            .iter()
            .map(|&w| {
                self.mapping
                    .outputs
                    .get(w)
                    .map(|(g, _)| *g)
                    .ok_or_else(|| format!("output index {w} out of range"))
            })
            .collect::<Result<Vec<usize>, String>>()?;
        let outputs = self.inner.run(&graph_inputs, &graph_wanted)?;
        outputs
            .into_iter()
            .zip(wanted)
            .map(|(mut output, &w)| {
                if let Some((_, Some(r))) = self.mapping.outputs.get(w) {
                    output.shape = self
                        .reshape(&output.shape, r)
                        .map_err(|e| format!("output {w}: {e}"))?;
                }
                Ok(output)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::spec::TensorDecl;
    use crate::tensor::DataType;

    fn spec(name: &str, shape: &[i64]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape: shape.to_vec(),
        }
    }

    fn decl(name: &str, dims: &[i64], reshape: Option<&[i64]>) -> TensorDecl {
        TensorDecl {
            name: name.into(),
            datatype: DataType::Fp32,
            dims: dims.to_vec(),
            reshape: reshape.map(<[i64]>::to_vec),
            labels: None,
            optional: false,
        }
    }

    fn graph() -> ModelSignature {
        ModelSignature {
            inputs: vec![spec("x", &[-1, 4])],
            outputs: vec![spec("y", &[-1, 3]), spec("z", &[-1])],
            defaulted: vec![spec("bias", &[3])],
        }
    }

    #[test]
    fn no_declarations_serve_the_graph() {
        let s = served(&graph(), &ModelConfig::default(), 8).unwrap();
        let without_defaults = ModelSignature {
            defaulted: Vec::new(),
            ..graph()
        };
        assert_eq!(s.signature, without_defaults);
        assert!(s.mapping.is_none());
    }

    #[test]
    fn declared_dims_narrow_and_reshape_maps_shapes() {
        let config = ModelConfig {
            inputs: vec![decl("x", &[2, 2], Some(&[4]))],
            outputs: vec![decl("z", &[1], Some(&[]))],
            ..ModelConfig::default()
        };
        let s = served(&graph(), &config, 8).unwrap();
        assert_eq!(s.signature.inputs, vec![spec("x", &[-1, 2, 2])]);
        assert_eq!(s.signature.outputs, vec![spec("z", &[-1, 1])]);
        let m = s.mapping.unwrap();
        assert_eq!(m.outputs[0].0, 1);
        let r = &m.inputs["x"];
        assert_eq!(r.apply(&[2, 2]).unwrap(), vec![4]);
        assert!(r.apply(&[4]).is_err());
        let out = m.outputs[0].1.as_ref().unwrap();
        assert_eq!(out.apply(&[]).unwrap(), vec![1]);
    }

    #[test]
    fn variable_dims_carry_through_a_reshape() {
        let r = Reshape {
            from: vec![-1, 3],
            to: vec![3, -1],
        };
        assert_eq!(r.apply(&[5, 3]).unwrap(), vec![3, 5]);
    }

    #[test]
    fn mismatches_name_the_tensor() {
        let cases: Vec<(ModelConfig, &str)> = vec![
            (
                ModelConfig {
                    inputs: vec![decl("w", &[4], None)],
                    ..ModelConfig::default()
                },
                "input 'w' is not an input of the model; its inputs are: x",
            ),
            (
                ModelConfig {
                    inputs: vec![decl("x", &[5], None)],
                    ..ModelConfig::default()
                },
                "input 'x': the config's dims give shape [-1, 5]",
            ),
            (
                ModelConfig {
                    inputs: vec![TensorDecl {
                        datatype: DataType::Int64,
                        ..decl("x", &[4], None)
                    }],
                    ..ModelConfig::default()
                },
                "input 'x': the config declares datatype INT64, the model has FP32",
            ),
            (
                ModelConfig {
                    outputs: vec![decl("y", &[3, 1], None)],
                    ..ModelConfig::default()
                },
                "output 'y': the config's dims give shape [-1, 3, 1]",
            ),
        ];
        for (config, needle) in cases {
            let err = served(&graph(), &config, 8).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let two = ModelSignature {
            inputs: vec![spec("a", &[-1]), spec("b", &[-1])],
            ..ModelSignature::default()
        };
        let config = ModelConfig {
            inputs: vec![decl("a", &[], None)],
            ..ModelConfig::default()
        };
        let err = served(&two, &config, 8).unwrap_err();
        assert!(err.contains("not the model's input 'b'"), "{err}");
    }
}
