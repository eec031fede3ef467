"""What Triton's own client examples do, against a Triton-style repository
(tests/triton_repo, config.pbtxt files) served by a sluice started with
Triton's command line (`sluice --model-repository=... --http-port=...`).

The calls are written here from the examples' documented behaviour (the
`simple_*_client.py` family of the tritonclient repository), not copied:
the add/sub model `simple`, inference with binary and JSON outputs, request
ids, custom headers and query parameters, sync, async handles, asyncio,
callbacks, keep-alive options, custom channel arguments, model control,
and the check every HTTP example ends with: a request for an unknown model
fails with a message that starts "Request for unknown model".
run.sh sets SLUICE_TRITON_HTTP and SLUICE_TRITON_GRPC."""

import asyncio
import json
import os
import queue
from functools import partial

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.utils import InferenceServerException

HTTP = os.environ["SLUICE_TRITON_HTTP"]
GRPC = os.environ["SLUICE_TRITON_GRPC"]

A = np.arange(16, dtype=np.int32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.int32)


def simple_inputs(mod, binary=True):
    in0 = mod.InferInput("INPUT0", [1, 16], "INT32")
    in1 = mod.InferInput("INPUT1", [1, 16], "INT32")
    if mod is httpclient or mod is httpaio:
        in0.set_data_from_numpy(A, binary_data=binary)
        in1.set_data_from_numpy(B, binary_data=not binary)
    else:
        in0.set_data_from_numpy(A)
        in1.set_data_from_numpy(B)
    return [in0, in1]


def http_outputs():
    # One output binary, the other JSON, as the example asks.
    return [
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=False),
    ]


def check_sum_diff(result):
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), A + B)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), A - B)


def unknown_model_fails_as_triton_says(call):
    with pytest.raises(InferenceServerException) as e:
        call()
    assert e.value.message().startswith("Request for unknown model"), e.value.message()


def test_http_sync_with_headers_query_params_and_request_id():
    for keep_alive in (False, True):
        client = httpclient.InferenceServerClient(url=HTTP, connection_timeout=30, network_timeout=30)
        try:
            for binary in (True, False):
                result = client.infer(
                    "simple",
                    simple_inputs(httpclient, binary),
                    outputs=http_outputs(),
                    request_id="42",
                    headers={"test": "1", "Connection": "keep-alive" if keep_alive else "close"},
                    query_params={"test_1": 1, "test_2": 2},
                )
                check_sum_diff(result)
                assert result.get_response()["id"] == "42"
            # Without requested outputs: every output, as JSON.
            check_sum_diff(client.infer("simple", simple_inputs(httpclient)))
            unknown_model_fails_as_triton_says(
                lambda: client.infer("wrong_model_name", simple_inputs(httpclient), outputs=http_outputs())
            )
        finally:
            client.close()


def test_http_async_handles():
    client = httpclient.InferenceServerClient(url=HTTP, concurrency=4)
    try:
        handles = [client.async_infer("simple", simple_inputs(httpclient), outputs=http_outputs(), request_id=str(i)) for i in range(8)]
        for h in handles:
            check_sum_diff(h.get_result(timeout=30))
        bad = client.async_infer("wrong_model_name", simple_inputs(httpclient))
        unknown_model_fails_as_triton_says(lambda: bad.get_result(timeout=30))
    finally:
        client.close()


def test_http_aio():
    async def run():
        async with httpaio.InferenceServerClient(url=HTTP) as client:
            assert await client.is_server_live() and await client.is_model_ready("simple")
            results = await asyncio.gather(
                *[client.infer("simple", simple_inputs(httpaio), outputs=[httpaio.InferRequestedOutput("OUTPUT0"), httpaio.InferRequestedOutput("OUTPUT1")]) for _ in range(8)]
            )
            for r in results:
                check_sum_diff(r)
            with pytest.raises(InferenceServerException) as e:
                await client.infer("wrong_model_name", simple_inputs(httpaio))
            assert e.value.message().startswith("Request for unknown model"), e.value.message()

    asyncio.run(run())


def test_grpc_sync_keepalive_and_custom_channel_args():
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=2**31 - 1, keepalive_timeout_ms=20000, keepalive_permit_without_calls=False, http2_max_pings_without_data=2
    )
    clients = [
        grpcclient.InferenceServerClient(url=GRPC),
        grpcclient.InferenceServerClient(url=GRPC, keepalive_options=keepalive),
        grpcclient.InferenceServerClient(
            url=GRPC, channel_args=[("grpc.max_send_message_length", 2**20), ("grpc.primary_user_agent", "sluice-conformance")]
        ),
    ]
    for client in clients:
        outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
        result = client.infer("simple", simple_inputs(grpcclient), outputs=outputs, request_id="7", headers={"test": "1"}, client_timeout=30)
        check_sum_diff(result)
        assert result.get_response().id == "7"
        unknown_model_fails_as_triton_says(lambda: client.infer("wrong_model_name", simple_inputs(grpcclient)))
        client.close()


def test_grpc_callbacks_streaming_and_aio():
    client = grpcclient.InferenceServerClient(url=GRPC)
    done = queue.Queue()
    for i in range(8):
        client.async_infer("simple", simple_inputs(grpcclient), partial(lambda i, result, error: done.put((i, result, error)), i))
    for _ in range(8):
        _, result, error = done.get(timeout=30)
        assert error is None, error
        check_sum_diff(result)
    streamed = queue.Queue()
    client.start_stream(callback=lambda result, error: streamed.put((result, error)))
    try:
        for i in range(4):
            client.async_stream_infer("simple", simple_inputs(grpcclient), request_id=str(i))
        for _ in range(4):
            result, error = streamed.get(timeout=30)
            assert error is None, error
            check_sum_diff(result)
    finally:
        client.stop_stream()
        client.close()

    async def run():
        async with grpcaio.InferenceServerClient(url=GRPC) as aio:
            check_sum_diff(await aio.infer("simple", simple_inputs(grpcaio)))
            with pytest.raises(InferenceServerException) as e:
                await aio.infer("wrong_model_name", simple_inputs(grpcaio))
            assert e.value.message().startswith("Request for unknown model"), e.value.message()

    asyncio.run(run())


def test_health_metadata_and_config_of_the_config_pbtxt_model():
    http = httpclient.InferenceServerClient(url=HTTP)
    grpc = grpcclient.InferenceServerClient(url=GRPC)
    assert http.is_server_live() and http.is_server_ready() and http.is_model_ready("simple")
    assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("simple")
    meta = http.get_model_metadata("simple")
    assert meta["name"] == "simple" and [i["name"] for i in meta["inputs"]] == ["INPUT0", "INPUT1"]
    assert meta["inputs"][0]["shape"] == [-1, 16] and meta["inputs"][0]["datatype"] == "INT32"
    config = http.get_model_config("simple")
    assert config["max_batch_size"] == 8 and config["input"][0]["dims"] == [16]
    assert "dynamic_batching" in config
    g = grpc.get_model_config("simple", as_json=True)["config"]
    assert g["max_batch_size"] == 8 and g["input"][0]["data_type"] == "TYPE_INT32"
    http.close()
    grpc.close()


def test_model_control_with_a_config_override():
    http = httpclient.InferenceServerClient(url=HTTP)
    grpc = grpcclient.InferenceServerClient(url=GRPC)
    try:
        http.unload_model("simple")
        assert not http.is_model_ready("simple")
        # Triton's load with a config: the same model with another batch size.
        http.load_model("simple", config=json.dumps({"name": "simple", "max_batch_size": 4}))
        assert http.is_model_ready("simple")
        assert http.get_model_config("simple")["max_batch_size"] == 4
        grpc.load_model("simple", config=json.dumps({"max_batch_size": 2}))
        assert grpc.get_model_config("simple").config.max_batch_size == 2
        with pytest.raises(InferenceServerException) as e:
            http.load_model("simple", config=json.dumps({"max_batch_size": 2, "no_such_field": 1}))
        assert "config" in e.value.message()
        # A load without a config goes back to config.pbtxt.
        grpc.load_model("simple")
        assert http.get_model_config("simple")["max_batch_size"] == 8
        check_sum_diff(http.infer("simple", simple_inputs(httpclient)))
    finally:
        http.load_model("simple")
        http.close()
        grpc.close()


# --- classification and an ensemble, from the same repository -------------

IRIS_X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
IRIS_LABELS = ["setosa", "versicolor", "virginica"]


def parse_classes(row):
    """'<score>:<index>:<label>' strings as (score, index, label)."""
    out = []
    for item in row:
        score, index, label = (item.decode() if isinstance(item, bytes) else item).split(":")
        out.append((float(score), int(index), label))
    return out


def check_top2(classes, probabilities):
    for row, probs in zip(classes, probabilities):
        got = parse_classes(row)
        want = sorted(range(len(probs)), key=lambda i: -probs[i])[:2]
        assert [i for _, i, _ in got] == want, (got, probs)
        assert [label for _, _, label in got] == [IRIS_LABELS[i] for i in want]
        for score, i, _ in got:
            assert abs(score - probs[i]) < 1e-6


def test_class_count_with_labels_over_http_json_binary_and_grpc():
    http = httpclient.InferenceServerClient(url=HTTP)
    grpc = grpcclient.InferenceServerClient(url=GRPC)
    try:
        raw = httpclient.InferInput("input", list(IRIS_X.shape), "FP32")
        raw.set_data_from_numpy(IRIS_X)
        probabilities = http.infer("iris", [raw]).as_numpy("probabilities")
        for binary in (False, True):
            inp = httpclient.InferInput("input", list(IRIS_X.shape), "FP32")
            inp.set_data_from_numpy(IRIS_X, binary_data=binary)
            out = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
            classes = http.infer("iris", [inp], outputs=[out]).as_numpy("probabilities")
            assert classes.shape == (2, 2)
            check_top2(classes, probabilities)
        ginp = grpcclient.InferInput("input", list(IRIS_X.shape), "FP32")
        ginp.set_data_from_numpy(IRIS_X)
        gout = grpcclient.InferRequestedOutput("probabilities", class_count=2)
        check_top2(grpc.infer("iris", [ginp], outputs=[gout]).as_numpy("probabilities"), probabilities)
    finally:
        http.close()
        grpc.close()


# The pipeline's constants (scripts/gen_models.py: ens_pre, ens_net v1, ens_post).
ENS_W = np.array([[1, -1, 0], [0, 2, -1], [-1, 0, 1], [0.5, 0.5, 0.5]], np.float32)
ENS_B = np.array([0.0, 1.0, -1.0], np.float32)


def pipeline_expected(x):
    logits = ((x - np.float32(2.0)) * np.float32(0.5)) @ ENS_W + ENS_B
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True), logits.argmax(1).reshape(-1, 1)


def test_the_ensemble_through_http_and_grpc_concurrently():
    http = httpclient.InferenceServerClient(url=HTTP, concurrency=8)
    grpc = grpcclient.InferenceServerClient(url=GRPC)
    try:
        assert http.is_model_ready("pipeline")
        assert http.get_model_config("pipeline")["platform"] == "ensemble"
        xs = [np.arange(4 * (1 + i % 3), dtype=np.float32).reshape(-1, 4) / np.float32(1 + i) for i in range(16)]
        handles = []
        for x in xs:
            inp = httpclient.InferInput("RAW", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            handles.append(http.async_infer("pipeline", [inp]))
        done = queue.Queue()
        for i, x in enumerate(xs):
            ginp = grpcclient.InferInput("RAW", list(x.shape), "FP32")
            ginp.set_data_from_numpy(x)
            grpc.async_infer("pipeline", [ginp], partial(lambda i, result, error: done.put((i, result, error)), i))
        for x, h in zip(xs, handles):
            probs, cls = pipeline_expected(x)
            r = h.get_result(timeout=30)
            np.testing.assert_allclose(r.as_numpy("PROBS"), probs, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(r.as_numpy("CLASS"), cls)
        for _ in xs:
            i, result, error = done.get(timeout=30)
            assert error is None, error
            probs, cls = pipeline_expected(xs[i])
            np.testing.assert_allclose(result.as_numpy("PROBS"), probs, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(result.as_numpy("CLASS"), cls)
        # Classification of an ensemble output, with the ensemble's labels.
        x = xs[3]
        inp = httpclient.InferInput("RAW", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = httpclient.InferRequestedOutput("PROBS", class_count=1)
        top = http.infer("pipeline", [inp], outputs=[out]).as_numpy("PROBS")
        probs, cls = pipeline_expected(x)
        for row, c in zip(top, cls[:, 0]):
            _, index, label = parse_classes(row)[0]
            assert index == c and label == ["cat", "dog", "bird"][c]
    finally:
        http.close()
        grpc.close()
