//! Criterion benchmarks of the pieces every request goes through, from the
//! wire format to the model run, each in isolation:
//!
//! | group | what |
//! |---|---|
//! | `json` | parse a KServe v2 request body and `decode_input` its tensor; serialise a tensor with `DataJson` (1×4 and 32×512 FP32) |
//! | `binary` | the raw tensor codec (`tensor::decode_raw` / `encode_raw`) of the binary extension and gRPC's raw contents |
//! | `raw` | `Instance::run` (one ONNX Runtime `session.run`, 1 intra-op thread) on iris and dense: the floor |
//! | `assemble` | dense, 32 rows: one 32-row part against 32 one-row parts (the batcher's concatenation copy) |
//! | `scheduler` | `Scheduler` with an executor that returns its inputs: submit → completion, one at a time and 32 at once |
//! | `service` | `Service::infer` in process (validate, queue, run, split), iris 1 row and dense 1 and 32 rows |
//!
//! ```text
//! make bench                                   # = cargo bench --locked --bench hot_paths
//! cargo bench --bench hot_paths -- scheduler   # one group
//! ```
//!
//! Each bench takes about 3 s (1 s warm-up, 2 s of 20 samples), so the whole
//! run finishes in about a minute after the build.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice::http::codec::json::{DataJson, RequestJson, decode_input};
use sluice::metrics::Metrics;
use sluice::runtime::{self, BatchInput, Instance, ProviderOptions, RunOutput};
use sluice::scheduler::{
    BatchKey, BatchPolicy, Executor, ExecutorFactory, Job, Scheduler, SchedulerConfig,
};
use sluice::service::{InferRequest, Limits, Protocol, Service};
use sluice::tensor::{DataType, Tensor, TensorData};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn ort_lib() -> PathBuf {
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    runtime::locate_library(None, env.as_deref()).expect("run `make setup` first")
}

/// `rows × cols` FP32 values in `[0, 1)`, deterministic.
fn values(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect()
}

fn fp32(values: &[f32]) -> TensorData {
    TensorData::Fixed(Bytes::from(
        values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    ))
}

fn tensor(rows: usize, cols: usize) -> Tensor {
    Tensor {
        name: "input".into(),
        datatype: DataType::Fp32,
        shape: vec![rows, cols],
        data: fp32(&values(rows, cols)),
    }
}

const SHAPES: [(usize, usize); 2] = [(1, 4), (32, 512)];

fn json(c: &mut Criterion) {
    let mut g = c.benchmark_group("json");
    for (rows, cols) in SHAPES {
        let id = format!("{rows}x{cols}");
        let body = serde_json::json!({
            "inputs": [{"name": "input", "shape": [rows, cols], "datatype": "FP32",
                        "data": values(rows, cols)}]
        })
        .to_string();
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(BenchmarkId::new("decode", &id), |b| {
            b.iter(|| {
                let request: RequestJson<'_> = serde_json::from_str(black_box(&body)).unwrap();
                let t = decode_input(&request.inputs[0], usize::MAX).unwrap();
                black_box(t)
            });
        });
        let data = fp32(&values(rows, cols));
        g.throughput(Throughput::Elements((rows * cols) as u64));
        g.bench_function(BenchmarkId::new("encode", &id), |b| {
            b.iter(|| {
                serde_json::to_vec(&DataJson {
                    datatype: DataType::Fp32,
                    data: black_box(&data),
                })
                .unwrap()
            });
        });
    }
    g.finish();
}

fn binary(c: &mut Criterion) {
    use sluice::tensor::{decode_raw, encode_raw};
    let mut g = c.benchmark_group("binary");
    for (rows, cols) in SHAPES {
        let id = format!("{rows}x{cols}");
        let TensorData::Fixed(raw) = fp32(&values(rows, cols)) else {
            unreachable!()
        };
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(BenchmarkId::new("decode", &id), |b| {
            b.iter(|| {
                decode_raw(
                    "input",
                    DataType::Fp32,
                    &[rows, cols],
                    black_box(raw.clone()),
                )
                .unwrap()
            });
        });
        let data = TensorData::Fixed(raw.clone());
        g.bench_function(BenchmarkId::new("encode", &id), |b| {
            b.iter(|| encode_raw(black_box(&data)));
        });
    }
    // BYTES: 32 length-prefixed strings of 16 bytes.
    let strings = TensorData::Bytes((0..32).map(|_| Bytes::from(vec![b'a'; 16])).collect());
    let packed = encode_raw(&strings);
    g.bench_function("decode/bytes_32x16", |b| {
        b.iter(|| decode_raw("s", DataType::Bytes, &[32], black_box(packed.clone())).unwrap());
    });
    g.finish();
}

fn instance(model: &str) -> (Instance, Vec<usize>) {
    runtime::init(&ort_lib()).unwrap();
    let path = models().join(model).join("1/model.onnx");
    let (instance, _) =
        runtime::load_instance(&path, &ProviderOptions::default(), None, 0).unwrap();
    let wanted = (0..instance.signature().unwrap().outputs.len()).collect();
    (instance, wanted)
}

fn raw(c: &mut Criterion) {
    let mut g = c.benchmark_group("raw");
    for (model, rows, cols) in [("iris", 1, 4), ("dense", 1, 512), ("dense", 32, 512)] {
        let (mut inst, wanted) = instance(model);
        let data = fp32(&values(rows, cols));
        g.bench_function(format!("{model}/{rows}x{cols}"), |b| {
            b.iter(|| {
                let input = [BatchInput {
                    name: "input",
                    datatype: DataType::Fp32,
                    shape: vec![rows, cols],
                    parts: vec![&data],
                }];
                inst.run(&input, &wanted).unwrap()
            });
        });
    }
    g.finish();
}

fn assemble(c: &mut Criterion) {
    let mut g = c.benchmark_group("assemble");
    let (mut inst, wanted) = instance("dense");
    let whole = fp32(&values(32, 512));
    let rows: Vec<TensorData> = values(32, 512).chunks(512).map(fp32).collect();
    let cases: [(&str, Vec<&TensorData>); 2] = [
        ("dense_1_part_of_32_rows", vec![&whole]),
        ("dense_32_parts_of_1_row", rows.iter().collect()),
    ];
    for (name, parts) in cases {
        g.bench_function(name, |b| {
            b.iter(|| {
                let input = [BatchInput {
                    name: "input",
                    datatype: DataType::Fp32,
                    shape: vec![32, 512],
                    parts: parts.clone(),
                }];
                inst.run(&input, &wanted).unwrap()
            });
        });
    }
    g.finish();
}

/// Returns its first input as its only output: the scheduler's own cost.
struct Echo;

impl Executor for Echo {
    fn run(
        &mut self,
        inputs: &[BatchInput<'_>],
        _wanted: &[usize],
    ) -> Result<Vec<RunOutput>, String> {
        let input = &inputs[0];
        let data = match input.parts.as_slice() {
            [one] => (*one).clone(),
            parts => {
                let mut joined = Vec::new();
                for part in parts {
                    let TensorData::Fixed(b) = part else {
                        return Err("BYTES".into());
                    };
                    joined.extend_from_slice(b);
                }
                TensorData::Fixed(Bytes::from(joined))
            }
        };
        Ok(vec![RunOutput {
            datatype: input.datatype,
            shape: input.shape.clone(),
            data,
        }])
    }
}

fn scheduler(c: &mut Criterion) {
    let factory: ExecutorFactory = Arc::new(|_| Ok(Box::new(Echo) as Box<dyn Executor>));
    let scheduler = Scheduler::start(
        SchedulerConfig {
            name: "echo".into(),
            policy: BatchPolicy {
                max_batch_size: 32,
                max_queue_delay: Duration::ZERO,
                preferred_batch_sizes: vec![],
            },
            max_queue_size: 1024,
            priority_levels: 1,
            instances: 1,
            levels: Vec::new(),
            preserve_ordering: false,
            // This measures the queue and its hand-off.
            inline_run_limit: Duration::ZERO,
        },
        vec![Box::new(Echo)],
        factory,
        Arc::new(Metrics::new().version("echo", 1)),
    )
    .unwrap();
    let key = Arc::new(BatchKey {
        inputs: vec![(DataType::Fp32, vec![4])],
        outputs: vec![0],
        omitted: Vec::new(),
    });
    let input = tensor(1, 4);
    let job = || Job {
        trace: tracing::Span::none(),
        inputs: vec![input.clone()],
        outputs: vec![0],
        rows: 1,
        key: key.clone(),
        priority: 1,
        deadline: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(1));
    g.bench_function("submit_to_completion/sequential", |b| {
        b.iter(|| {
            rt.block_on(scheduler.submit(job()).unwrap().wait())
                .unwrap()
        });
    });
    g.throughput(Throughput::Elements(32));
    g.bench_function("submit_to_completion/32_concurrent", |b| {
        b.iter(|| {
            let pending: Vec<_> = (0..32).map(|_| scheduler.submit(job()).unwrap()).collect();
            rt.block_on(async {
                for p in pending {
                    black_box(p.wait().await.unwrap());
                }
            });
        });
    });
    g.finish();
}

fn service(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime::init(&ort_lib()).unwrap();
    let metrics = Metrics::new();
    let registry = Arc::new(sluice::registry::Registry::new(
        models(),
        metrics.clone(),
        sluice::registry::Defaults {
            cores: 2,
            control_mode: sluice::registry::ControlMode::Explicit,
            ignore_unsupported_config: false,
            strict_model_config: false,
            // As measured before inline runs: through the queue.
            inline_run_limit: Duration::ZERO,
        },
    ));
    let service = Service::new(registry.clone(), metrics, Limits::default(), true);
    rt.block_on(async {
        registry.load_internal("iris").await.unwrap();
        registry.load_internal("dense").await.unwrap();
    });
    service.set_started();
    let mut g = c.benchmark_group("service");
    for (model, rows, cols) in [("iris", 1, 4), ("dense", 1, 512), ("dense", 32, 512)] {
        let request = InferRequest {
            model: model.into(),
            inputs: vec![tensor(rows, cols)],
            ..InferRequest::default()
        };
        g.bench_function(format!("infer/{model}/{rows}x{cols}"), |b| {
            b.iter(|| {
                rt.block_on(service.infer(request.clone(), Protocol::Http))
                    .unwrap()
            });
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = json, binary, raw, assemble, scheduler, service
}
criterion_main!(benches);
