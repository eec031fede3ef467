"""Conformance of sluice with the stock Triton clients (tritonclient.http and
tritonclient.grpc), checked against onnxruntime's own results on the same
.onnx files. Started by run.sh, which sets SLUICE_HTTP, SLUICE_GRPC and
SLUICE_MODELS."""

import os
import queue
import threading
from functools import partial

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

HTTP = os.environ["SLUICE_HTTP"]
GRPC = os.environ["SLUICE_GRPC"]
MODELS = os.environ["SLUICE_MODELS"]

# (model, KServe datatype, numpy input). BF16 is covered by the Rust tests:
# numpy and onnxruntime's Python API have no bfloat16.
CASES = [
    ("dtype_bool", "BOOL", np.array([[True, False, True], [False, True, False]])),
    ("dtype_uint8", "UINT8", np.arange(6, dtype=np.uint8).reshape(2, 3) * 40),
    ("dtype_uint16", "UINT16", np.arange(6, dtype=np.uint16).reshape(2, 3) * 9000),
    ("dtype_uint32", "UINT32", np.arange(6, dtype=np.uint32).reshape(2, 3) * 700_000_000),
    ("dtype_uint64", "UINT64", np.arange(6, dtype=np.uint64).reshape(2, 3) << np.uint64(61)),
    ("dtype_int8", "INT8", (np.arange(6, dtype=np.int8).reshape(2, 3) - 3) * 40),
    ("dtype_int16", "INT16", (np.arange(6, dtype=np.int16).reshape(2, 3) - 3) * 9000),
    ("dtype_int32", "INT32", (np.arange(6, dtype=np.int32).reshape(2, 3) - 3) * 700_000_000),
    ("dtype_int64", "INT64", (np.arange(6, dtype=np.int64).reshape(2, 3) - 3) << 61),
    ("dtype_fp16", "FP16", (np.arange(6, dtype=np.float16).reshape(2, 3) * np.float16(0.3)) - np.float16(1)),
    ("dtype_fp32", "FP32", np.arange(6, dtype=np.float32).reshape(2, 3) / np.float32(3) - np.float32(0.25)),
    ("dtype_fp64", "FP64", np.arange(6, dtype=np.float64).reshape(2, 3) / 3 - 0.25),
    ("dtype_string", "BYTES", np.array([[b"a", "βγ".encode(), b""], [b"hello", b"x y", "🦀".encode()]], dtype=np.object_)),
]

_sessions = {}


def reference(model, name, x):
    """onnxruntime's outputs for `x` on the same file, by output name."""
    if model not in _sessions:
        _sessions[model] = ort.InferenceSession(f"{MODELS}/{model}/1/model.onnx", providers=["CPUExecutionProvider"])
    sess = _sessions[model]
    if x.dtype == np.object_:
        x = np.array([[v.decode() for v in row] for row in x], dtype=np.object_)
    outs = sess.run(None, {name: x})
    return {o.name: v for o, v in zip(sess.get_outputs(), outs)}


def same(got, want):
    """Bit-identical for numbers, equal bytes for strings."""
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype == np.object_:
        assert [v.encode() for v in want.flat] == [v if isinstance(v, bytes) else str(v).encode() for v in got.flat]
    else:
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.tobytes() == want.tobytes(), (got, want)


@pytest.fixture(scope="module")
def http():
    return httpclient.InferenceServerClient(url=HTTP, concurrency=8, network_timeout=30)


@pytest.fixture(scope="module")
def grpc():
    return grpcclient.InferenceServerClient(url=GRPC)


def test_health_and_metadata(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert http.get_server_metadata()["name"] == "sluice"
    assert "binary_tensor_data" in grpc.get_server_metadata().extensions
    assert http.is_model_ready("iris") and grpc.is_model_ready("iris")
    assert not http.is_model_ready("corrupt") and not grpc.is_model_ready("corrupt")
    meta = http.get_model_metadata("iris")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    gmeta = grpc.get_model_metadata("iris", as_json=True)
    assert gmeta["inputs"][0]["shape"] == ["-1", "4"]  # int64 in proto JSON
    assert [o["name"] for o in gmeta["outputs"]] == ["label", "probabilities"]


@pytest.mark.parametrize("model,datatype,x", CASES, ids=[c[0] for c in CASES])
def test_infer_every_dtype_over_json_binary_and_grpc(http, grpc, model, datatype, x):
    want = reference(model, "INPUT0", x)
    for binary in (False, True):
        inp = httpclient.InferInput("INPUT0", list(x.shape), datatype)
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("OUTPUT0", "OUTPUT1")]
        r = http.infer(model, [inp], outputs=outs)
        for name in ("OUTPUT0", "OUTPUT1"):
            same(r.as_numpy(name), want[name])
    inp = grpcclient.InferInput("INPUT0", list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    r = grpc.infer(model, [inp])
    for name in ("OUTPUT0", "OUTPUT1"):
        same(r.as_numpy(name), want[name])


def iris_input(mod, rows):
    x = (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4) % 7) + np.float32(0.5)
    inp = mod.InferInput("input", [rows, 4], "FP32")
    inp.set_data_from_numpy(x)
    return x, inp


def test_classification_class_count(http, grpc):
    """InferRequestedOutput(class_count=N): the top N "<value>:<index>" per row, as Triton."""
    x, _ = iris_input(httpclient, 3)
    probs = reference("iris", "input", x)["probabilities"]
    want = [[f"{row[i]:.6f}:{i}".encode() for i in np.argsort(-row, kind="stable")[:2]] for row in probs]
    for mod, client in ((httpclient, http), (grpcclient, grpc)):
        _, inp = iris_input(mod, 3)
        for binary in ((True, False) if mod is httpclient else (None,)):
            kwargs = {} if binary is None else {"binary_data": binary}
            out = mod.InferRequestedOutput("probabilities", class_count=2, **kwargs)
            got = client.infer("iris", [inp], outputs=[out]).as_numpy("probabilities")
            assert got.shape == (3, 2), got.shape
            assert [[v if isinstance(v, bytes) else str(v).encode() for v in row] for row in got] == want


def test_async_concurrent_requests(http, grpc):
    n = 32
    expected = {}
    pending = []
    for i in range(n):
        x, inp = iris_input(httpclient, 1 + i % 4)
        expected[i] = reference("iris", "input", x)
        pending.append((i, http.async_infer("iris", [inp], request_id=str(i))))
    for i, p in pending:
        r = p.get_result(timeout=30)
        same(r.as_numpy("label"), expected[i]["label"])
        np.testing.assert_allclose(r.as_numpy("probabilities"), expected[i]["probabilities"], rtol=1e-6)

    done = queue.Queue()
    for i in range(n):
        x, inp = iris_input(grpcclient, 1 + i % 4)
        grpc.async_infer("iris", [inp], partial(lambda i, result, error: done.put((i, result, error)), i), request_id=str(i))
    for _ in range(n):
        i, result, error = done.get(timeout=30)
        assert error is None, error
        same(result.as_numpy("label"), expected[i]["label"])

    # Bidirectional streaming: every request answered, matched by id.
    streamed = queue.Queue()
    client = grpcclient.InferenceServerClient(url=GRPC)
    client.start_stream(callback=lambda result, error: streamed.put((result, error)))
    try:
        for i in range(n):
            _, inp = iris_input(grpcclient, 1 + i % 4)
            client.async_stream_infer("iris", [inp], request_id=str(i))
        seen = set()
        for _ in range(n):
            result, error = streamed.get(timeout=30)
            assert error is None, error
            rid = int(result.get_response().id)
            same(result.as_numpy("label"), expected[rid]["label"])
            seen.add(rid)
        assert seen == set(range(n))
    finally:
        client.stop_stream()
        client.close()


def test_model_config(http, grpc):
    c = http.get_model_config("iris")
    assert c["platform"] == "onnxruntime_onnx" and c["backend"] == "onnxruntime"
    assert c["max_batch_size"] == 32
    assert c["input"][0]["data_type"] == "TYPE_FP32" and c["input"][0]["dims"] == [4]
    g = grpc.get_model_config("iris").config
    assert g.max_batch_size == 32
    assert list(g.input[0].dims) == [4]
    assert g.instance_group[0].kind == 2  # KIND_CPU
    assert g.dynamic_batching.default_queue_policy.max_queue_size == 1024


def test_repository_index_load_unload(http, grpc):
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index["iris"]["state"] == "READY"
    assert index["corrupt"]["state"] == "UNAVAILABLE" and index["corrupt"]["reason"]
    gindex = {m.name: m for m in grpc.get_model_repository_index().models}
    assert gindex["iris"].state == "READY" and gindex["corrupt"].state == "UNAVAILABLE"

    http.unload_model("fixed")
    assert not http.is_model_ready("fixed")
    http.load_model("fixed")
    assert http.is_model_ready("fixed")
    grpc.unload_model("fixed")
    assert not grpc.is_model_ready("fixed")
    grpc.load_model("fixed")
    assert grpc.is_model_ready("fixed")
    x = np.ones((2, 3), dtype=np.float32)
    inp = grpcclient.InferInput("x", [2, 3], "FP32")
    inp.set_data_from_numpy(x)
    assert (grpc.infer("fixed", [inp]).as_numpy("y") == 2).all()


def test_statistics(http, grpc):
    _, inp = iris_input(httpclient, 1)
    http.infer("iris", [inp])
    stats = http.get_inference_statistics("iris")["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    g = grpc.get_inference_statistics("iris").model_stats[0]
    assert g.inference_stats.success.count >= 1


def test_errors(http, grpc):
    _, inp = iris_input(httpclient, 1)
    with pytest.raises(InferenceServerException) as e:
        http.infer("nope", [inp])
    assert e.value.message().startswith("Request for unknown model")
    _, ginp = iris_input(grpcclient, 1)
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("nope", [ginp])
    assert e.value.status() == "StatusCode.NOT_FOUND"
    bad = grpcclient.InferInput("input", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("iris", [bad])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
