#!/usr/bin/env python3
"""Generate the small, real ONNX models used by Sluice.

Writes (Triton layout, ``<repo>/<name>/<version>/model.onnx``):

  models/                 bundled example repository (iris, dense, multi_input)
  tests/models/           test repository used by the Rust integration tests
  tests/fixtures/         loose models copied around by tests (swap/v1..v6, slow,
                          the ensemble pipeline ensemble/{pre,net_v1,net_v2,post})

Everything is deterministic: fixed seeds, fixed producer name/version, no
timestamps, so running the script twice yields byte-identical files.

Usage (from the repository root):

  python3 -m venv .venv-models
  .venv-models/bin/pip install -r scripts/requirements-models.txt
  .venv-models/bin/python scripts/gen_models.py            # regenerate + verify
  .venv-models/bin/python scripts/gen_models.py --check    # diff against committed files
  .venv-models/bin/python scripts/gen_models.py --bench    # also time dense fp16 vs fp32 storage

The READMEs under models/ and tests/models/ are written by hand; only the
``.onnx`` files (and the corrupt model) are generated.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent

OPSET = 17  # default ai.onnx opset for hand-built graphs
ML_OPSET = 3  # ai.onnx.ml opset (iris)
IR_VERSION = 9  # accepted by onnxruntime >= 1.15, valid for opsets <= 20
PRODUCER_NAME = "sluice-gen_models"
PRODUCER_VERSION = "1"

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def vi(name: str, elem_type: int, shape):
    return helper.make_tensor_value_info(name, elem_type, shape)


def finish(model: onnx.ModelProto, doc: str, model_version: int = 1) -> onnx.ModelProto:
    """Pin every metadata field that could otherwise vary, then check."""
    model.ir_version = IR_VERSION
    model.producer_name = PRODUCER_NAME
    model.producer_version = PRODUCER_VERSION
    model.domain = "ai.sluice"
    model.model_version = model_version
    model.doc_string = doc
    del model.metadata_props[:]
    onnx.checker.check_model(model, full_check=True)
    return model


def make_model(nodes, inputs, outputs, initializers=(), name="graph", doc="",
               opset=OPSET, model_version=1) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), name, list(inputs), list(outputs),
                              initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return finish(model, doc, model_version)


def const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name=name)


# ---------------------------------------------------------------------------
# bundled models (models/)
# ---------------------------------------------------------------------------


def build_iris() -> onnx.ModelProto:
    """LogisticRegression on sklearn's bundled iris data, via skl2onnx."""
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000, random_state=0)
    clf.fit(X, y)
    # Round the learned parameters so the exported file does not depend on
    # last-ulp differences of the optimiser across CPUs / BLAS builds.
    clf.coef_ = np.round(clf.coef_, 4)
    clf.intercept_ = np.round(clf.intercept_, 4)
    model = convert_sklearn(
        clf,
        name="iris",
        initial_types=[("input", FloatTensorType([None, 4]))],
        options={id(clf): {"zipmap": False}},
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )
    # skl2onnx names the outputs label / probabilities already; make it explicit.
    names = [o.name for o in model.graph.output]
    assert names == ["label", "probabilities"], names
    model.graph.name = "iris"
    # skl2onnx may list the same domain twice; keep one entry per domain.
    versions: dict[str, int] = {}
    for op in model.opset_import:
        versions[op.domain] = max(versions.get(op.domain, 0), op.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(d, v) for d, v in sorted(versions.items()))
    return finish(model, "Iris LogisticRegression (scikit-learn, skl2onnx, zipmap=False)")


DENSE_DIMS = [512, 1024, 1024, 256, 10]
DENSE_SEED = 20240501


def build_dense(store_fp16: bool = True) -> onnx.ModelProto:
    """MLP 512-1024-1024-256-10 with Relu; ~1.8M weights stored as fp16.

    Each fp16 weight initializer is followed by Cast(to=FLOAT); ONNX Runtime
    constant-folds these casts at session creation, so inference runs in fp32.
    ``store_fp16=False`` builds the identical fp32-stored variant (benchmark).
    """
    rng = np.random.default_rng(DENSE_SEED)
    nodes, inits = [], []
    prev = "input"
    n_layers = len(DENSE_DIMS) - 1
    for i, (fan_in, fan_out) in enumerate(zip(DENSE_DIMS[:-1], DENSE_DIMS[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float16)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        if store_fp16:
            inits.append(const(f"w{i}_fp16", w))
            nodes.append(helper.make_node("Cast", [f"w{i}_fp16"], [f"w{i}"], to=TP.FLOAT,
                                          name=f"cast_w{i}"))
        else:
            inits.append(const(f"w{i}", w.astype(np.float32)))
        inits.append(const(f"b{i}", b))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"))
        last = i == n_layers - 1
        out = "output" if last else f"z{i}"
        nodes.append(helper.make_node("Add", [f"mm{i}", f"b{i}"], [out], name=f"add{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"h{i}"], name=f"relu{i}"))
            prev = f"h{i}"
    return make_model(
        nodes,
        [vi("input", TP.FLOAT, ["batch", DENSE_DIMS[0]])],
        [vi("output", TP.FLOAT, ["batch", DENSE_DIMS[-1]])],
        inits, name="dense",
        doc="Deterministic MLP 512-1024-1024-256-10 (Relu), fp16-stored weights cast to fp32",
    )


def build_multi_input() -> onnx.ModelProto:
    """y = Where(mask, x * float(scale), 0); count = sum(mask, axis=1)."""
    nodes = [
        helper.make_node("Cast", ["scale"], ["scale_f"], to=TP.FLOAT, name="cast_scale"),
        helper.make_node("Mul", ["x", "scale_f"], ["scaled"], name="mul"),
        helper.make_node("Where", ["mask", "scaled", "zero"], ["y"], name="where"),
        helper.make_node("Cast", ["mask"], ["mask_i"], to=TP.INT64, name="cast_mask"),
        helper.make_node("ReduceSum", ["mask_i", "axis1"], ["count"], keepdims=0, name="count"),
    ]
    inits = [const("zero", np.array(0.0, np.float32)), const("axis1", np.array([1], np.int64))]
    return make_model(
        nodes,
        [vi("x", TP.FLOAT, ["batch", 4]), vi("mask", TP.BOOL, ["batch", 4]),
         vi("scale", TP.INT64, ["batch", 1])],
        [vi("y", TP.FLOAT, ["batch", 4]), vi("count", TP.INT64, ["batch"])],
        inits, name="multi_input",
        doc="y = Where(mask, x * Cast(scale), 0); count = ReduceSum(Cast(mask), axis=1)",
    )


# ---------------------------------------------------------------------------
# test models (tests/models/)
# ---------------------------------------------------------------------------

# KServe datatype -> (ONNX element type, op description).  The op used for
# OUTPUT0 is the simplest one ONNX Runtime 1.32 CPU implements for the type
# that still changes the values:
#   numeric : Add(x, x)                    (2*x, integer types wrap around)
#   BOOL    : Not(x)
#   BF16    : Cast(FLOAT) -> Add -> Cast(BFLOAT16)   (ORT CPU has no bf16 Add/Mul/Neg/Abs;
#             doubling a bf16 value is exact, so OUTPUT0 == 2*x bit-exactly)
#   BYTES   : StringConcat(x, x)  (opset 20) ("ab" -> "abab")
# OUTPUT1 = Identity(INPUT0) for every type.
DTYPE_MODELS = [
    ("bool", TP.BOOL, "not"),
    ("uint8", TP.UINT8, "add"),
    ("uint16", TP.UINT16, "add"),
    ("uint32", TP.UINT32, "add"),
    ("uint64", TP.UINT64, "add"),
    ("int8", TP.INT8, "add"),
    ("int16", TP.INT16, "add"),
    ("int32", TP.INT32, "add"),
    ("int64", TP.INT64, "add"),
    ("fp16", TP.FLOAT16, "add"),
    ("fp32", TP.FLOAT, "add"),
    ("fp64", TP.DOUBLE, "add"),
    ("bf16", TP.BFLOAT16, "cast_add"),
    ("string", TP.STRING, "concat"),
]

OP_DESC = {
    "add": "Add(x, x)",
    "not": "Not(x)",
    "cast_add": "Cast->FLOAT, Add(x, x), Cast->BFLOAT16",
    "concat": "StringConcat(x, x) [opset 20]",
}


def build_dtype(suffix: str, elem: int, kind: str) -> onnx.ModelProto:
    shape = ["batch", "n"]
    opset = OPSET
    if kind == "add":
        nodes = [helper.make_node("Add", ["INPUT0", "INPUT0"], ["OUTPUT0"], name="double")]
    elif kind == "not":
        nodes = [helper.make_node("Not", ["INPUT0"], ["OUTPUT0"], name="not")]
    elif kind == "cast_add":
        nodes = [
            helper.make_node("Cast", ["INPUT0"], ["x_f32"], to=TP.FLOAT, name="to_f32"),
            helper.make_node("Add", ["x_f32", "x_f32"], ["y_f32"], name="double"),
            helper.make_node("Cast", ["y_f32"], ["OUTPUT0"], to=TP.BFLOAT16, name="to_bf16"),
        ]
    elif kind == "concat":
        opset = 20
        nodes = [helper.make_node("StringConcat", ["INPUT0", "INPUT0"], ["OUTPUT0"], name="concat")]
    else:
        raise ValueError(kind)
    nodes.append(helper.make_node("Identity", ["INPUT0"], ["OUTPUT1"], name="identity"))
    return make_model(
        nodes,
        [vi("INPUT0", elem, shape)],
        [vi("OUTPUT0", elem, shape), vi("OUTPUT1", elem, shape)],
        name=f"dtype_{suffix}", opset=opset,
        doc=f"dtype test model ({TP.DataType.Name(elem)}): OUTPUT0 = {OP_DESC[kind]}, "
            "OUTPUT1 = Identity(INPUT0)",
    )


def build_dynamic2() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"], name="mul"),
        helper.make_node("Add", ["x2", "one"], ["y"], name="add"),
        helper.make_node("ReduceSum", ["x", "axis1"], ["s"], keepdims=0, name="sum"),
    ]
    inits = [const("two", np.array(2.0, np.float32)), const("one", np.array(1.0, np.float32)),
             const("axis1", np.array([1], np.int64))]
    return make_model(
        nodes, [vi("x", TP.FLOAT, ["batch", "n"])],
        [vi("y", TP.FLOAT, ["batch", "n"]), vi("s", TP.FLOAT, ["batch"])],
        inits, name="dynamic2", doc="y = 2*x + 1; s = ReduceSum(x, axis=1, keepdims=0)",
    )


def build_matmul_dyn() -> onnx.ModelProto:
    w = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    return make_model(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="matmul")],
        [vi("x", TP.FLOAT, ["batch", "k"])], [vi("y", TP.FLOAT, ["batch", 2])],
        [const("W", w)], name="matmul_dyn",
        doc="y = MatMul(x, W), W = [[1,2],[3,4],[5,6]]; only runs when x.shape[1] == 3",
    )


def build_fixed() -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Add", ["x", "one"], ["y"], name="add")],
        [vi("x", TP.FLOAT, [2, 3])], [vi("y", TP.FLOAT, [2, 3])],
        [const("one", np.array(1.0, np.float32))], name="fixed",
        doc="y = x + 1 with a fixed [2, 3] shape (not batchable)",
    )


def corrupt_bytes() -> bytes:
    seed = b"sluice-corrupt-model"
    return hashlib.sha256(seed + b"0").digest() + hashlib.sha256(seed + b"1").digest()


# ---------------------------------------------------------------------------
# fixtures (tests/fixtures/)
# ---------------------------------------------------------------------------


def build_swap(k: int) -> onnx.ModelProto:
    return make_model(
        [helper.make_node("Add", ["x", "K"], ["y"], name="add_k")],
        [vi("x", TP.FLOAT, ["batch", 1])], [vi("y", TP.FLOAT, ["batch", 1])],
        [const("K", np.array(float(k), np.float32))], name="swap",
        doc=f"hot-swap fixture v{k}: y = x + {k}", model_version=k,
    )


SLOW_N = 512  # side of the in-graph square matrix (power of 2: 1/N stays exact)
SLOW_STEPS = 32  # number of chained N x N MatMuls


def build_slow() -> onnx.ModelProto:
    """y = x + 0 * sum(A^(2^k)), A an in-graph N x N matrix.

    The big matrix is produced at run time by Expand from a scalar that depends
    on x, so ONNX Runtime cannot constant-fold the MatMul chain and the file
    stays tiny.  Every element of A and of its powers is 1/N (for finite x),
    hence y == x.  Run time is roughly independent of the batch size.
    """
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["xs"], keepdims=0, name="sum_x"),
        helper.make_node("Mul", ["xs", "zero"], ["xz"], name="zero_x"),
        helper.make_node("Add", ["xz", "inv_n"], ["v"], name="inv_n_dep"),
        helper.make_node("Expand", ["v", "nn"], ["a0"], name="expand"),
    ]
    prev = "a0"
    for i in range(SLOW_STEPS):
        nodes.append(helper.make_node("MatMul", [prev, prev], [f"a{i + 1}"], name=f"matmul{i}"))
        prev = f"a{i + 1}"
    nodes += [
        helper.make_node("ReduceSum", [prev], ["s"], keepdims=0, name="sum_a"),
        helper.make_node("Mul", ["s", "zero"], ["s0"], name="zero_s"),
        helper.make_node("Add", ["x", "s0"], ["y"], name="add"),
    ]
    inits = [
        const("zero", np.array(0.0, np.float32)),
        const("inv_n", np.array(1.0 / SLOW_N, np.float32)),
        const("nn", np.array([SLOW_N, SLOW_N], np.int64)),
    ]
    return make_model(
        nodes, [vi("x", TP.FLOAT, ["batch", 1])], [vi("y", TP.FLOAT, ["batch", 1])],
        inits, name="slow",
        doc=f"slow fixture: y = x (+ 0 * result of {SLOW_STEPS} chained {SLOW_N}x{SLOW_N} MatMuls)",
    )


LOOKUP_SIZE = 16  # rows of the lookup table; valid indices are -16..15


def build_constant() -> onnx.ModelProto:
    """No inputs: y = [[1, 2, 3]] (a legal graph, like a generator or a constant)."""
    value = numpy_helper.from_array(np.array([[1.0, 2.0, 3.0]], np.float32), name="value")
    return make_model(
        [helper.make_node("Constant", [], ["y"], name="constant", value=value)],
        [], [vi("y", TP.FLOAT, [1, 3])], name="constant",
        doc="no inputs: y = [[1, 2, 3]]",
    )


def build_lookup() -> onnx.ModelProto:
    """y = table[i] with table[k] = 10 k + 0.5: loads and serves, but a run
    with an index outside [-16, 15] fails inside ONNX Runtime ("indices element
    out of data bounds"). The bad value has the same shape and dtype as good
    ones, so it batches with them: the fault-injection fixture for a run that
    fails for some inputs only (tests/it/faults/runs.rs).
    """
    table = np.arange(LOOKUP_SIZE, dtype=np.float32) * 10.0 + 0.5
    return make_model(
        [helper.make_node("Gather", ["table", "i"], ["y"], axis=0, name="lookup")],
        [vi("i", TP.INT64, ["batch", 1])], [vi("y", TP.FLOAT, ["batch", 1])],
        [const("table", table)], name="lookup",
        doc=f"lookup fixture: y = table[i], table[k] = 10k + 0.5, k in 0..{LOOKUP_SIZE - 1}; "
            "an index out of range fails the run",
    )


def build_defaulted() -> onnx.ModelProto:
    """An input with a default: `b` is an initializer also listed as a graph
    input (an ONNX Runtime overridable initializer), so a request may leave
    it out (Triton's `optional: true`)."""
    return make_model(
        [helper.make_node("Add", ["a", "b"], ["y"], name="add")],
        [vi("a", TP.FLOAT, ["batch", 2]), vi("b", TP.FLOAT, ["batch", 2])],
        [vi("y", TP.FLOAT, ["batch", 2])],
        [const("b", np.array([[10.0, 20.0]], np.float32))], name="defaulted",
        doc="y = a + b; b defaults to [[10, 20]] (broadcast over the batch)",
    )


# ---------------------------------------------------------------------------
# a Triton-style repository (tests/triton_repo/), served unchanged
# ---------------------------------------------------------------------------


def build_simple() -> onnx.ModelProto:
    """The add/sub model of Triton's client examples, rebuilt from their
    documented behaviour: two INT32 [batch, 16] inputs, OUTPUT0 = sum and
    OUTPUT1 = difference."""
    return make_model(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"], name="add"),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"], name="sub")],
        [vi("INPUT0", TP.INT32, ["batch", 16]), vi("INPUT1", TP.INT32, ["batch", 16])],
        [vi("OUTPUT0", TP.INT32, ["batch", 16]), vi("OUTPUT1", TP.INT32, ["batch", 16])],
        name="simple", doc="OUTPUT0 = INPUT0 + INPUT1; OUTPUT1 = INPUT0 - INPUT1 (INT32, [batch, 16])",
    )


# The three models of the ensemble pipeline (tests/it/ensemble/): pre-processing,
# a linear layer in two versions (for hot swaps), and post-processing. The
# tests compute the expected outputs from these constants on their own.
ENS_MEAN, ENS_SCALE = 2.0, 0.5
ENS_W = np.array([[1, -1, 0], [0, 2, -1], [-1, 0, 1], [0.5, 0.5, 0.5]], np.float32)


def ens_bias(k: int) -> np.ndarray:
    return np.array([0.0, k, -k], np.float32)


def build_ens_pre() -> onnx.ModelProto:
    """y = (x - 2) * 0.5 on FP32 [batch, 4]."""
    return make_model(
        [helper.make_node("Sub", ["x", "mean"], ["centred"], name="centre"),
         helper.make_node("Mul", ["centred", "scale"], ["y"], name="scale")],
        [vi("x", TP.FLOAT, ["batch", 4])], [vi("y", TP.FLOAT, ["batch", 4])],
        [const("mean", np.array(ENS_MEAN, np.float32)),
         const("scale", np.array(ENS_SCALE, np.float32))],
        name="ens_pre", doc="ensemble pre-processing: y = (x - 2) * 0.5",
    )


def build_ens_net(k: int) -> onnx.ModelProto:
    """logits = features @ W + [0, k, -k] on FP32 [batch, 4] -> [batch, 3]."""
    return make_model(
        [helper.make_node("MatMul", ["features", "W"], ["xw"], name="matmul"),
         helper.make_node("Add", ["xw", "b"], ["logits"], name="bias")],
        [vi("features", TP.FLOAT, ["batch", 4])], [vi("logits", TP.FLOAT, ["batch", 3])],
        [const("W", ENS_W), const("b", ens_bias(k))], name="ens_net",
        doc=f"ensemble model v{k}: logits = features @ W + [0, {k}, -{k}]", model_version=k,
    )


def build_ens_post() -> onnx.ModelProto:
    """probs = softmax(logits), label = argmax(logits) as INT64 [batch, 1]."""
    return make_model(
        [helper.make_node("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
         helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=1, name="argmax")],
        [vi("logits", TP.FLOAT, ["batch", 3])],
        [vi("probs", TP.FLOAT, ["batch", 3]), vi("label", TP.INT64, ["batch", 1])],
        name="ens_post", doc="ensemble post-processing: softmax and argmax",
    )


# ---------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------


def artifacts() -> dict[str, bytes]:
    """Relative path -> file contents, for every generated file."""
    out: dict[str, bytes] = {}

    def put(rel: str, model: onnx.ModelProto):
        out[rel] = model.SerializeToString()

    iris = build_iris()
    put("models/iris/1/model.onnx", iris)
    put("models/dense/1/model.onnx", build_dense())
    put("models/multi_input/1/model.onnx", build_multi_input())

    for suffix, elem, kind in DTYPE_MODELS:
        put(f"tests/models/dtype_{suffix}/1/model.onnx", build_dtype(suffix, elem, kind))
    put("tests/models/dynamic2/1/model.onnx", build_dynamic2())
    put("tests/models/matmul_dyn/1/model.onnx", build_matmul_dyn())
    put("tests/models/fixed/1/model.onnx", build_fixed())
    out["tests/models/corrupt/1/model.onnx"] = corrupt_bytes()
    put("tests/models/iris/1/model.onnx", iris)

    for k in range(1, 7):
        put(f"tests/fixtures/swap/v{k}.onnx", build_swap(k))
    put("tests/fixtures/slow.onnx", build_slow())
    put("tests/fixtures/lookup.onnx", build_lookup())
    put("tests/fixtures/constant.onnx", build_constant())
    put("tests/fixtures/defaulted.onnx", build_defaulted())
    put("tests/triton_repo/simple/1/model.onnx", build_simple())
    put("tests/fixtures/ensemble/pre.onnx", build_ens_pre())
    for k in (1, 2):
        put(f"tests/fixtures/ensemble/net_v{k}.onnx", build_ens_net(k))
    put("tests/fixtures/ensemble/post.onnx", build_ens_post())
    for rel, same in TRITON_REPO_COPIES.items():
        out[rel] = out[same]
    return out


# The rest of tests/triton_repo: the same bytes as models made above, laid out
# as a Triton repository (iris with a label file, and the ensemble pipeline's
# three models behind a `pipeline` ensemble).
TRITON_REPO_COPIES = {
    "tests/triton_repo/iris/1/model.onnx": "models/iris/1/model.onnx",
    "tests/triton_repo/ens_pre/1/model.onnx": "tests/fixtures/ensemble/pre.onnx",
    "tests/triton_repo/ens_net/1/model.onnx": "tests/fixtures/ensemble/net_v1.onnx",
    "tests/triton_repo/ens_post/1/model.onnx": "tests/fixtures/ensemble/post.onnx",
}

MANAGED_DIRS = ["models", "tests/models", "tests/fixtures", "tests/triton_repo"]


def write_all(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def stale_files(root: Path, files: dict[str, bytes]) -> list[str]:
    """.onnx files under the managed dirs that the generator no longer makes."""
    found = []
    for d in MANAGED_DIRS:
        for p in sorted((root / d).rglob("*.onnx")) if (root / d).exists() else []:
            rel = p.relative_to(root).as_posix()
            if rel not in files:
                found.append(rel)
    return found


# ---------------------------------------------------------------------------
# verification with onnxruntime
# ---------------------------------------------------------------------------


def session(path_or_bytes, threads: int | None = None, quiet: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if quiet:
        so.log_severity_level = 4  # the run is expected to fail; keep stderr clean
    if threads is not None:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def fmt_io(args) -> str:
    parts = []
    for a in args:
        shape = ",".join("-1" if (d is None or isinstance(d, str)) else str(d) for d in a.shape)
        parts.append(f"{a.name}:{a.type.replace('tensor(', '').rstrip(')')}[{shape}]")
    return " ".join(parts)


def bf16_run(sess, x_bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run a bf16 model; numpy has no bf16 so pass raw uint16 bit patterns."""
    import onnxruntime as ort

    ov = ort.OrtValue.ortvalue_from_numpy_with_onnx_type(x_bits, onnx_element_type=TP.BFLOAT16)
    outs = sess.run_with_ort_values(["OUTPUT0", "OUTPUT1"], {"INPUT0": ov})
    res = []
    for o in outs:
        n = int(np.prod(o.shape()))
        raw = ctypes.string_at(o.data_ptr(), 2 * n)
        res.append(np.frombuffer(raw, np.uint16).reshape(o.shape()))
    return res[0], res[1]


NP_OF = {
    TP.BOOL: np.bool_, TP.UINT8: np.uint8, TP.UINT16: np.uint16, TP.UINT32: np.uint32,
    TP.UINT64: np.uint64, TP.INT8: np.int8, TP.INT16: np.int16, TP.INT32: np.int32,
    TP.INT64: np.int64, TP.FLOAT16: np.float16, TP.FLOAT: np.float32, TP.DOUBLE: np.float64,
}


def check_dtype(sess, elem: int, kind: str) -> str:
    if elem == TP.BFLOAT16:
        # bf16 bit patterns of [[1, 2.5, -3], [0.5, 100, -0.25]]
        xf = np.array([[1, 2.5, -3], [0.5, 100, -0.25]], np.float32)
        bits = (xf.view(np.uint32) >> 16).astype(np.uint16)
        o0, o1 = bf16_run(sess, bits)
        got = (o0.astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(got, 2 * xf), got
        assert np.array_equal(o1, bits)
        return "OUTPUT0 == 2*x"
    if elem == TP.STRING:
        x = np.array([["a", "bc", ""], ["héllo", "x y", "z"]], dtype=object)
        o0, o1 = sess.run(None, {"INPUT0": x})
        assert o0.tolist() == [[s + s for s in r] for r in x.tolist()], o0
        assert o1.tolist() == x.tolist()
        return "OUTPUT0 == x+x"
    dt = NP_OF[elem]
    if elem == TP.BOOL:
        x = np.array([[True, False, True], [False, False, True]])
        o0, o1 = sess.run(None, {"INPUT0": x})
        assert np.array_equal(o0, ~x)
        assert np.array_equal(o1, x)
        return "OUTPUT0 == !x"
    x = np.array([[1, 2, 3], [4, 5, 100]]).astype(dt)
    if np.issubdtype(dt, np.signedinteger) or np.issubdtype(dt, np.floating):
        x[1, 0] = -4
    o0, o1 = sess.run(None, {"INPUT0": x})
    assert o0.dtype == dt and o0.shape == x.shape
    assert np.array_equal(o0, (x + x).astype(dt)), o0
    assert np.array_equal(o1, x)
    return "OUTPUT0 == 2*x"


def time_runs(sess, feed, runs: int) -> float:
    sess.run(None, feed)  # warm-up
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, feed)
    return (time.perf_counter() - t0) / runs


def verify(root: Path, files: dict[str, bytes]) -> dict:
    """Load and run every generated model with onnxruntime; print a table."""
    import onnxruntime as ort

    rows = []
    facts: dict = {}

    def row(rel, sess, note):
        size = (root / rel).stat().st_size
        if sess is None:
            rows.append((rel, size, "-", "-", note))
        else:
            rows.append((rel, size, fmt_io(sess.get_inputs()), fmt_io(sess.get_outputs()), note))

    for rel in files:
        path = root / rel
        if rel.endswith("corrupt/1/model.onnx"):
            for loader in (lambda: onnx.load(str(path)), lambda: session(path)):
                try:
                    loader()
                except Exception:
                    continue  # expected: not a valid ONNX file
                raise AssertionError("corrupt model was loaded successfully")
            row(rel, None, "fails to load (expected)")
            continue

        onnx.checker.check_model(str(path), full_check=True)
        sess = session(path, quiet=rel.startswith(("tests/models/matmul_dyn/", "tests/fixtures/lookup")))
        name = rel.split("/")[-3] if rel.endswith("/model.onnx") else Path(rel).stem

        if rel in TRITON_REPO_COPIES:
            same = TRITON_REPO_COPIES[rel]
            assert files[rel] == files[same], rel
            note = f"same bytes as {same}"
        elif name == "iris":
            x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]],
                         np.float32)
            label, proba = sess.run(None, {"input": x})
            assert label.dtype == np.int64 and proba.shape == (3, 3)
            facts["iris_sample"] = (label[0].item(), proba[0].tolist())
            from sklearn.datasets import load_iris

            X, y = load_iris(return_X_y=True)
            pred = sess.run(None, {"input": X.astype(np.float32)})[0]
            acc = float((pred == y).mean())
            facts["iris_acc"] = acc
            note = f"labels {label.tolist()}; train acc {acc:.3f}"
        elif name == "dense":
            x = np.random.default_rng(0).standard_normal((32, 512)).astype(np.float32)
            (out,) = sess.run(None, {"input": x})
            assert out.shape == (32, 10) and np.isfinite(out).all()
            note = "out[0,:3]=[" + ", ".join(f"{v:.3f}" for v in out[0, :3]) + "]"
        elif name == "multi_input":
            x = np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32)
            mask = np.array([[True, False, True, False], [True, True, True, True]])
            scale = np.array([[2], [-1]], np.int64)
            y, count = sess.run(None, {"x": x, "mask": mask, "scale": scale})
            assert np.array_equal(y, np.where(mask, x * scale, 0)), y
            assert count.tolist() == [2, 4]
            note = f"count={count.tolist()}"
        elif name.startswith("dtype_"):
            suffix = name[len("dtype_"):]
            _, elem, kind = next(d for d in DTYPE_MODELS if d[0] == suffix)
            note = f"{OP_DESC[kind]}: {check_dtype(sess, elem, kind)}"
        elif name == "dynamic2":
            x = np.arange(6, dtype=np.float32).reshape(2, 3)
            y, s = sess.run(None, {"x": x})
            assert np.array_equal(y, 2 * x + 1) and np.array_equal(s, x.sum(1))
            x5 = np.ones((1, 5), np.float32)
            assert sess.run(None, {"x": x5})[1].tolist() == [5.0]
            note = "y=2x+1, s=sum(x,1) ok for n=3,5"
        elif name == "matmul_dyn":
            x = np.array([[1, 0, 0], [1, 1, 1]], np.float32)
            (y,) = sess.run(None, {"x": x})
            assert y.tolist() == [[1, 2], [9, 12]], y
            try:
                sess.run(None, {"x": np.ones((1, 4), np.float32)})
                raise AssertionError("matmul_dyn ran with k=4")
            except AssertionError:
                raise
            except Exception:
                pass  # expected: MatMul shape mismatch inside ONNX Runtime
            note = "k=3 ok; k=4 fails at run time (expected)"
        elif name == "fixed":
            x = np.arange(6, dtype=np.float32).reshape(2, 3)
            assert np.array_equal(sess.run(None, {"x": x})[0], x + 1)
            note = "y=x+1"
        elif rel.startswith("tests/fixtures/swap/"):
            k = int(Path(rel).stem[1:])
            (y,) = sess.run(None, {"x": np.array([[0.0], [10.0]], np.float32)})
            assert y.tolist() == [[k], [10 + k]], y
            note = f"y=x+{k}"
        elif name == "slow":
            s1 = session(path, threads=1)
            x = np.array([[3.5]], np.float32)
            (y,) = s1.run(None, {"x": x})
            assert y.tolist() == [[3.5]], y
            t1 = time_runs(s1, {"x": x}, 10)
            x8 = np.arange(8, dtype=np.float32).reshape(8, 1)
            t8 = time_runs(s1, {"x": x8}, 10)
            assert np.array_equal(s1.run(None, {"x": x8})[0], x8)
            tdef = time_runs(sess, {"x": x}, 10)
            facts["slow"] = (t1, t8, tdef)
            note = (f"1 thread: {t1 * 1e3:.0f} ms (batch 1), {t8 * 1e3:.0f} ms (batch 8); "
                    f"default threads: {tdef * 1e3:.0f} ms")
        elif name == "lookup":
            i = np.array([[0], [3], [LOOKUP_SIZE - 1], [-1]], np.int64)
            (y,) = sess.run(None, {"i": i})
            assert y.tolist() == [[0.5], [30.5], [150.5], [150.5]], y
            try:
                sess.run(None, {"i": np.array([[0], [LOOKUP_SIZE]], np.int64)})
                raise AssertionError("lookup ran with an out-of-range index")
            except AssertionError:
                raise
            except Exception:
                pass  # expected: Gather index out of bounds inside ONNX Runtime
            note = f"y=10i+0.5; i={LOOKUP_SIZE} fails at run time (expected)"
        elif rel.startswith("tests/fixtures/ensemble/"):
            x = np.array([[2.0, 4.0, 0.0, 6.0], [1.0, 1.0, 1.0, 1.0]], np.float32)
            stem = Path(rel).stem
            if stem == "pre":
                (y,) = sess.run(None, {"x": x})
                assert np.allclose(y, (x - ENS_MEAN) * ENS_SCALE), y
                note = "y=(x-2)*0.5"
            elif stem.startswith("net_v"):
                k = int(stem[len("net_v"):])
                (y,) = sess.run(None, {"features": x})
                assert np.allclose(y, x @ ENS_W + ens_bias(k)), y
                note = f"logits=x@W+[0,{k},-{k}]"
            else:
                logits = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 0.5]], np.float32)
                probs, label = sess.run(None, {"logits": logits})
                e = np.exp(logits - logits.max(1, keepdims=True))
                assert np.allclose(probs, e / e.sum(1, keepdims=True)), probs
                assert label.tolist() == [[1], [2]], label
                note = "softmax, argmax"
        elif name == "constant":
            (y,) = sess.run(None, {})
            assert y.tolist() == [[1.0, 2.0, 3.0]], y
            note = "no inputs; y=[[1,2,3]]"
        elif name == "defaulted":
            a = np.array([[1, 2], [3, 4]], np.float32)
            assert [i.name for i in sess.get_inputs()] == ["a"]
            assert [i.name for i in sess.get_overridable_initializers()] == ["b"]
            assert sess.run(None, {"a": a})[0].tolist() == [[11, 22], [13, 24]]
            assert sess.run(None, {"a": a, "b": a})[0].tolist() == [[2, 4], [6, 8]]
            note = "y=a+b, b defaults to [[10,20]]"
        elif rel == "tests/triton_repo/simple/1/model.onnx":
            a = np.arange(32, dtype=np.int32).reshape(2, 16)
            b = np.ones((2, 16), np.int32)
            s_, d = sess.run(None, {"INPUT0": a, "INPUT1": b})
            assert np.array_equal(s_, a + b) and np.array_equal(d, a - b)
            note = "OUTPUT0=a+b, OUTPUT1=a-b"
        else:
            raise AssertionError(f"no verification for {rel}")
        row(rel, sess, note)

    w_rel = max(len(r[0]) for r in rows)
    print(f"{'file':<{w_rel}}  {'bytes':>8}  inputs -> outputs | check")
    for rel, size, ins, outs, note in rows:
        print(f"{rel:<{w_rel}}  {size:>8}  {ins} -> {outs} | {note}")
    for d, limit in (("models", 5_000_000), ("tests", 1_000_000)):
        total = sum((root / r).stat().st_size for r in files if r.startswith(d + "/"))
        print(f"total {d}/ generated bytes: {total} (limit {limit})")
        assert total < limit, f"{d}/ too large"
    print(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}: all {len(rows)} files verified")
    return facts


def bench_dense(runs: int = 200, batch: int = 32) -> None:
    """Compare per-run time of fp16-stored (Cast) vs fp32-stored dense weights."""
    x = np.random.default_rng(1).standard_normal((batch, DENSE_DIMS[0])).astype(np.float32)
    m16, m32 = build_dense(True), build_dense(False)
    print(f"dense file size: fp16-stored {len(m16.SerializeToString())} B, "
          f"fp32-stored {len(m32.SerializeToString())} B")
    for threads in (1, None):
        s16 = session(m16.SerializeToString(), threads)
        s32 = session(m32.SerializeToString(), threads)
        o16 = s16.run(None, {"input": x})[0]
        o32 = s32.run(None, {"input": x})[0]
        assert np.array_equal(o16, o32), "fp16-stored and fp32-stored outputs differ"
        res = {}
        for _ in range(3):  # interleave to reduce noise, keep the best
            for tag, s in (("fp16", s16), ("fp32", s32)):
                t = time_runs(s, {"input": x}, runs)
                res[tag] = min(res.get(tag, t), t)
        label = "1 thread" if threads else "default threads"
        print(f"dense {runs} runs batch {batch}, {label}: fp16-stored "
              f"{res['fp16'] * 1e3:.3f} ms/run, fp32-stored {res['fp32'] * 1e3:.3f} ms/run "
              f"(ratio {res['fp16'] / res['fp32']:.3f}); outputs identical")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temp dir and diff against the committed files")
    ap.add_argument("--bench", action="store_true",
                    help="time dense with fp16-stored vs fp32-stored weights")
    ap.add_argument("--no-verify", action="store_true", help="skip the onnxruntime checks")
    args = ap.parse_args()

    files = artifacts()

    if args.check:
        with tempfile.TemporaryDirectory(prefix="sluice-models-") as tmp:
            tmp_root = Path(tmp)
            write_all(tmp_root, files)
            if not args.no_verify:
                verify(tmp_root, files)
            bad = []
            for rel, data in files.items():
                committed = REPO / rel
                if not committed.is_file():
                    bad.append(f"missing: {rel}")
                elif committed.read_bytes() != data:
                    bad.append(f"differs: {rel}")
            bad += [f"stale (not generated): {r}" for r in stale_files(REPO, files)]
        if bad:
            print("\n".join(bad))
            print(f"--check FAILED: {len(bad)} problem(s); run scripts/gen_models.py")
            return 1
        print(f"--check OK: {len(files)} generated files match the committed ones")
    else:
        write_all(REPO, files)
        print(f"wrote {len(files)} files under {REPO}")
        for rel in stale_files(REPO, files):
            print(f"warning: stale file not produced by the generator: {rel}")
        if not args.no_verify:
            facts = verify(REPO, files)
            if "iris_sample" in facts:
                lbl, proba = facts["iris_sample"]
                print(f"iris sample [5.1,3.5,1.4,0.2] -> label {lbl}, "
                      f"probabilities {[round(p, 4) for p in proba]}")

    if args.bench:
        bench_dense()
    return 0


if __name__ == "__main__":
    sys.exit(main())
