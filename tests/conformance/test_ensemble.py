"""An ensemble (tests/models/ensemble_fp32: dtype_fp32 run twice) through the
stock Triton clients, over REST JSON, REST binary, gRPC and gRPC streaming,
checked against onnxruntime run twice on the composing model's file."""

import os
import queue
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
ENSEMBLE = "ensemble_fp32"


@pytest.fixture(scope="module")
def http():
    return httpclient.InferenceServerClient(url=HTTP, concurrency=4, network_timeout=30)


@pytest.fixture(scope="module")
def grpc():
    return grpcclient.InferenceServerClient(url=GRPC)


def expected(x):
    """DOUBLE and QUAD as onnxruntime computes them: dtype_fp32, twice."""
    sess = ort.InferenceSession(f"{MODELS}/dtype_fp32/1/model.onnx", providers=["CPUExecutionProvider"])
    double = sess.run(["OUTPUT0"], {"INPUT0": x})[0]
    quad = sess.run(["OUTPUT0"], {"INPUT0": double})[0]
    return {"DOUBLE": double, "QUAD": quad}


X = np.arange(12, dtype=np.float32).reshape(3, 4) / np.float32(7) - np.float32(0.5)


def test_ensemble_metadata_config_and_readiness(http, grpc):
    assert http.is_model_ready(ENSEMBLE) and grpc.is_model_ready(ENSEMBLE)
    meta = http.get_model_metadata(ENSEMBLE)
    assert meta["platform"] == "ensemble"
    assert meta["inputs"] == [{"name": "IN", "datatype": "FP32", "shape": [-1, -1]}]
    assert [o["name"] for o in meta["outputs"]] == ["QUAD", "DOUBLE"]
    assert grpc.get_model_metadata(ENSEMBLE).platform == "ensemble"
    config = http.get_model_config(ENSEMBLE)
    assert config["platform"] == "ensemble"
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["dtype_fp32", "dtype_fp32"]
    g = grpc.get_model_config(ENSEMBLE).config
    assert g.platform == "ensemble"
    assert g.ensemble_scheduling.step[1].input_map["INPUT0"] == "DOUBLE"
    index = {m["name"]: m for m in http.get_model_repository_index()}
    assert index[ENSEMBLE]["state"] == "READY"


def test_ensemble_infer_over_json_binary_and_grpc(http, grpc):
    want = expected(X)
    for binary in (False, True):
        inp = httpclient.InferInput("IN", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in ("QUAD", "DOUBLE")]
        r = http.infer(ENSEMBLE, [inp], outputs=outs)
        for name in ("QUAD", "DOUBLE"):
            assert r.as_numpy(name).tobytes() == want[name].tobytes(), name
    # Requested outputs filter the answer.
    inp = httpclient.InferInput("IN", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    r = http.infer(ENSEMBLE, [inp], outputs=[httpclient.InferRequestedOutput("QUAD")])
    assert r.as_numpy("DOUBLE") is None
    assert r.as_numpy("QUAD").tobytes() == want["QUAD"].tobytes()

    inp = grpcclient.InferInput("IN", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    r = grpc.infer(ENSEMBLE, [inp])
    assert r.get_response().model_name == ENSEMBLE
    for name in ("QUAD", "DOUBLE"):
        assert r.as_numpy(name).tobytes() == want[name].tobytes(), name


def test_ensemble_over_a_grpc_stream(grpc):
    answers = queue.Queue()
    stream = grpcclient.InferenceServerClient(url=GRPC)
    stream.start_stream(callback=partial(lambda q, result, error: q.put((result, error)), answers))
    try:
        inputs = []
        for i in range(5):
            x = X + np.float32(i)
            inp = grpcclient.InferInput("IN", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            stream.async_stream_infer(ENSEMBLE, [inp], request_id=str(i))
            inputs.append(x)
        for _ in inputs:
            result, error = answers.get(timeout=30)
            assert error is None, error
            i = int(result.get_response().id)
            assert result.as_numpy("QUAD").tobytes() == expected(inputs[i])["QUAD"].tobytes()
    finally:
        stream.stop_stream()


def test_ensemble_statistics_and_errors(http, grpc):
    inp = httpclient.InferInput("IN", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    http.infer(ENSEMBLE, [inp])
    stats = http.get_inference_statistics(ENSEMBLE)["model_stats"][0]
    assert stats["name"] == ENSEMBLE
    assert int(stats["inference_stats"]["success"]["count"]) >= 1
    g = grpc.get_inference_statistics(ENSEMBLE).model_stats[0]
    assert g.inference_stats.success.count >= 1
    bad = httpclient.InferInput("IN", [3, 4], "INT32")
    bad.set_data_from_numpy(X.astype(np.int32))
    with pytest.raises(InferenceServerException) as e:
        http.infer(ENSEMBLE, [bad])
    assert "expected datatype FP32" in str(e.value)
