#!/usr/bin/env python3
"""Regenerates the committed seed corpus in fuzz/seeds/<target>/.

A few valid inputs per target (the generated corpus under fuzz/corpus/ is not
committed). Run from anywhere: python3 fuzz/make_seeds.py

fuzz/seeds/grpc_infer_structured/ is not generated here: its inputs are
`arbitrary` byte streams, picked from a fuzzing run among those that convert
to a request (check one with SLUICE_FUZZ_DEBUG=1 and the target binary).
"""
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).resolve().parent / "seeds"


def write(target, name, data):
    d = ROOT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def inp(name, shape, datatype, data=None, **params):
    i = {"name": name, "shape": shape, "datatype": datatype}
    if data is not None:
        i["data"] = data
    if params:
        i["parameters"] = params
    return i


# --- json_request: KServe v2 JSON bodies ---
JSON = {
    "iris_fp32": {"inputs": [inp("input", [1, 4], "FP32", [5.1, 3.5, 1.4, 0.2])]},
    "nested_int64": {
        "id": "r1",
        "inputs": [inp("x", [2, 2], "INT64", [[1, -2], [3, 9223372036854775807]])],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        "parameters": {"priority": 1, "timeout": 1000, "binary_data_output": False},
    },
    "bytes_bool": {
        "inputs": [
            inp("s", [2], "BYTES", ["a", "\u03b2\u03b3"]),
            inp("b", [3], "BOOL", [True, False, True]),
        ]
    },
    "every_dtype": {
        "inputs": [
            inp("u8", [2], "UINT8", [0, 255]),
            inp("u16", [1], "UINT16", [65535]),
            inp("u32", [1], "UINT32", [4294967295]),
            inp("u64", [1], "UINT64", [18446744073709551615]),
            inp("i8", [2], "INT8", [-128, 127]),
            inp("i16", [1], "INT16", [-32768]),
            inp("i32", [1], "INT32", [2147483647]),
            inp("f16", [2], "FP16", [1.5, -65504]),
            inp("bf16", [1], "BF16", [-2.0]),
            inp("f64", [1], "FP64", [1e300]),
            inp("scalar", [], "FP32", 3.25),
        ]
    },
}
for name, body in JSON.items():
    write("json_request", name + ".json", json.dumps(body))

# --- binary_request: "<Inference-Header-Content-Length>\n<body>" ---
def binary(inputs, blobs, **top):
    head = json.dumps({"inputs": inputs, **top}).encode()
    return str(len(head)).encode() + b"\n" + head + b"".join(blobs)


fp32 = struct.pack("<4f", 5.1, 3.5, 1.4, 0.2)
write("binary_request", "iris_binary",
      binary([inp("input", [1, 4], "FP32", binary_data_size=len(fp32))], [fp32],
             outputs=[{"name": "probabilities", "parameters": {"binary_data": True}}]))
strings = b"".join(struct.pack("<I", len(s)) + s for s in [b"ab", b"", b"\xff\x00"])
i64 = struct.pack("<2q", -1, 7)
write("binary_request", "mixed_binary_json",
      binary([inp("s", [3], "BYTES", binary_data_size=len(strings)),
              inp("x", [2], "INT64", binary_data_size=len(i64)),
              inp("f", [1], "FP16", [0.5])],
             [strings, i64], parameters={"binary_data_output": True}))
write("binary_request", "plain_json",
      b"\n" + json.dumps(JSON["iris_fp32"]).encode())
write("binary_request", "header_is_whole_body",
      (lambda h: str(len(h)).encode() + b"\n" + h)(json.dumps(JSON["bytes_bool"]).encode()))

# --- grpc_infer_request: protobuf-encoded inference.ModelInferRequest ---
def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(tag, wire, payload):
    key = varint(tag << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    if wire == 2:
        return key + varint(len(payload)) + payload
    raise ValueError(wire)


def s(tag, text):
    return field(tag, 2, text.encode() if isinstance(text, str) else text)


def packed_varints(tag, values):
    return field(tag, 2, b"".join(varint(v) for v in values))


def tensor(name, datatype, shape, contents=b""):
    t = s(1, name) + s(2, datatype) + packed_varints(3, shape)
    if contents:
        t += field(5, 2, contents)
    return t


def param(key, choice_tag, value):
    # map<string, InferParameter> entry: key = 1, value = 2
    if choice_tag in (1, 2, 5):
        v = field(choice_tag, 0, value)
    else:
        v = s(choice_tag, value)
    return s(1, key) + field(2, 2, v)


def request(inputs, raw=(), outputs=(), params=(), version="", rid=""):
    m = s(1, "m")
    if version:
        m += s(2, version)
    if rid:
        m += s(3, rid)
    for p in params:
        m += field(4, 2, p)
    for i in inputs:
        m += field(5, 2, i)
    for o in outputs:
        m += field(6, 2, s(1, o))
    for r in raw:
        m += field(7, 2, r)
    return m


write("grpc_infer_request", "raw_fp32",
      request([tensor("input", "FP32", [1, 4])], raw=[fp32], outputs=["label"], version="1"))
write("grpc_infer_request", "typed_int32_fp32",
      request([tensor("a", "INT32", [2], packed_varints(2, [1, -5])),
               tensor("f", "FP32", [1], field(6, 2, struct.pack("<f", 0.5)))],
              params=[param("priority", 5, 2), param("timeout", 2, 1000)], rid="req"))
write("grpc_infer_request", "typed_bytes_bool",
      request([tensor("s", "BYTES", [2], s(8, b"hi") + s(8, b"")),
               tensor("b", "BOOL", [2], packed_varints(1, [1, 0]))]))
write("grpc_infer_request", "raw_bytes_uint64",
      request([tensor("s", "BYTES", [3]), tensor("u", "UINT64", [1])],
              raw=[strings, struct.pack("<Q", 2**64 - 1)]))

# --- model_config: config.toml files ---
write("model_config", "empty.toml", "")
write("model_config", "batching.toml", """max_batch_size = 32
instances = 2
intra_op_threads = 1
fallback = false
version_policy = { latest = 1 }

[dynamic_batching]
max_queue_delay_us = 500
preferred_batch_sizes = [4, 8]
max_queue_size = 1024
default_timeout_us = 0
priority_levels = 3
default_priority_level = 2
""")
write("model_config", "providers.toml", """max_batch_size = 16
gpus = [0, 1]
fallback = true
version_policy = { specific = [1, 3] }

[[warmup]]
batch_size = 4
count = 2
random = true
dims = { x = [3] }

[[execution_providers]]
kind = "tensorrt"
device_id = 0
fp16 = false
int8 = false
engine_cache_path = "/var/cache/sluice/trt"
workspace_size_bytes = 1073741824

[[execution_providers]]
kind = "cuda"
device_id = 0
memory_limit_bytes = 8589934592
arena_extend_strategy = "next_power_of_two"
cudnn_conv_algo_search = "exhaustive"
cuda_graph = false

[[execution_providers]]
kind = "cpu"
arena = true
""")
write("model_config", "all_versions.toml", 'version_policy = "all"\nmax_batch_size = 0\n')


# --- rest_router: six control bytes, then a request in HTTP/1 text form ---
# (see fuzz/fuzz_targets/rest_router.rs). Flags 0: the request line's path,
# the admin token, a content-length. The requests are those of tests/it
# (rest.rs, protocols.rs, bad_inputs.rs, binary.rs, lifecycle.rs).
def rest(name, method, path, body=b"", headers=(), flags=0, route=0, fills=(0, 0, 0, 0)):
    head = f"{method} {path}\n".encode()
    for k, v in headers:
        head += f"{k}: {v}\n".encode()
    control = bytes([flags, route, *fills])
    body = body.encode() if isinstance(body, str) else body
    write("rest_router", name, control + head + b"\n" + body)


JSON_CT = [("content-type", "application/json")]
GOOD = json.dumps(JSON["iris_fp32"])
for path in ["/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/stats",
             "/v2/models/iris", "/v2/models/iris/versions/1", "/v2/models/iris/ready",
             "/v2/models/iris/versions/1/ready", "/v2/models/iris/stats",
             "/v2/models/iris/versions/1/stats", "/v2/models/iris/config",
             "/v2/models/iris/versions/1/config", "/metrics", "/v2/logging",
             "/v2/models/corrupt/ready", "/v2/models/nope", "/v2/nothing/here"]:
    rest("get" + path.replace("/", "_"), "GET", path)
rest("infer_iris", "POST", "/v2/models/iris/infer", GOOD, JSON_CT)
rest("infer_iris_v1", "POST", "/v2/models/iris/versions/1/infer", GOOD, JSON_CT)
rest("infer_iris_params", "POST", "/v2/models/iris/infer", json.dumps({
    "id": "r1", "inputs": JSON["iris_fp32"]["inputs"],
    "outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"binary_data": True}}],
    "parameters": {"priority": 1, "timeout": 100000, "binary_data_output": False}}), JSON_CT)
IRIS_HEAD = json.dumps({"inputs": [inp("input", [1, 4], "FP32", binary_data_size=len(fp32))],
                        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]})
rest("infer_iris_binary", "POST", "/v2/models/iris/infer", IRIS_HEAD.encode() + fp32,
     [("content-type", "application/octet-stream"),
      ("inference-header-content-length", str(len(IRIS_HEAD)))])
rest("infer_fixed", "POST", "/v2/models/fixed/infer", json.dumps(
    {"inputs": [inp("x", [2, 3], "FP32", [1, 2, 3, 4, 5, 6])]}), JSON_CT)
rest("infer_dynamic2", "POST", "/v2/models/dynamic2/infer", json.dumps(
    {"inputs": [inp("x", [2, 2], "FP32", [[1, 2], [3, 4]])], "outputs": [{"name": "s"}]}), JSON_CT)
for dtype, data in [("string", ["ab", ""]), ("bool", [True, False]), ("uint8", [1, 255]),
                    ("int64", [-1, 9223372036854775807]), ("fp16", [1.5, -2.0]),
                    ("bf16", [1.0, -2.0]), ("fp64", [1e300, -0.5]), ("uint64", [0, 18446744073709551615])]:
    kserve = {"string": "BYTES"}.get(dtype, dtype.upper())
    rest(f"infer_dtype_{dtype}", "POST", f"/v2/models/dtype_{dtype}/infer",
         json.dumps({"inputs": [inp("INPUT0", [1, 2], kserve, data)],
                     "parameters": {"binary_data_output": dtype == "uint8"}}), JSON_CT)
rest("infer_malformed", "POST", "/v2/models/iris/infer", '{"inputs": [}', JSON_CT)
rest("infer_bad_shape", "POST", "/v2/models/iris/infer", json.dumps(
    {"inputs": [inp("input", [1, 3], "FP32", [1, 2, 3])]}), JSON_CT)
rest("infer_bad_header_length", "POST", "/v2/models/iris/infer", GOOD,
     [("inference-header-content-length", "9999")])
rest("infer_no_token", "POST", "/v2/models/iris/infer", GOOD, JSON_CT, flags=0x20)
rest("index_infer_token", "POST", "/v2/repository/index", "{}", JSON_CT, flags=0x10)
rest("index", "POST", "/v2/repository/index", "", JSON_CT)
rest("index_ready", "POST", "/v2/repository/index", '{"ready": true}', JSON_CT)
rest("load_fixed", "POST", "/v2/repository/models/fixed/load", "{}", JSON_CT)
rest("load_corrupt", "POST", "/v2/repository/models/corrupt/load", "", JSON_CT)
rest("load_config_param", "POST", "/v2/repository/models/iris/load",
     '{"parameters": {"config": "{}"}}', JSON_CT)
rest("unload_fixed", "POST", "/v2/repository/models/fixed/unload", "{}", JSON_CT)
rest("unload_absent", "POST", "/v2/repository/models/absent/unload", "", JSON_CT)
rest("logging_update", "POST", "/v2/logging",
     '{"log_verbose_level": 1, "log_info": true, "log_filter": "info,sluice=debug"}', JSON_CT)
rest("v1_iris_rows", "POST", "/v1/models/iris:predict",
     '{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}', JSON_CT)
rest("v1_iris_named", "POST", "/v1/models/iris:predict",
     '{"instances": [{"input": [5.1, 3.5, 1.4, 0.2]}]}', JSON_CT)
rest("v1_fixed_columns", "POST", "/v1/models/fixed:predict",
     '{"inputs": [[1, 2, 3], [4, 5, 6]]}', JSON_CT)
rest("v1_dynamic2_columns", "POST", "/v1/models/dynamic2:predict", '{"inputs": {"x": [[1, 2]]}}', JSON_CT)
rest("v1_string_rows", "POST", "/v1/models/dtype_string:predict", '{"instances": [["a", "b"]]}', JSON_CT)
rest("v1_explain", "POST", "/v1/models/iris:explain", '{"instances": [[1, 2, 3, 4]]}', JSON_CT)
# A model with no inputs (tests/fixtures/constant.onnx; issue 14's v1 panic).
rest("v1_constant_instances", "POST", "/v1/models/constant:predict", '{"instances": [[1.0]]}', JSON_CT)
rest("v1_constant_empty", "POST", "/v1/models/constant:predict", '{}', JSON_CT)
rest("infer_constant", "POST", "/v2/models/constant/infer", '{"inputs": []}', JSON_CT)
rest("server_metadata_slash", "GET", "/v2/")
rest("delete_infer", "DELETE", "/v2/models/iris/infer")
rest("trailing_slash", "GET", "/v2/models/iris/", flags=0x02)
rest("query_string", "GET", "/v2/models/iris/ready?x=1&y")
# A route of the table, filled by the control bytes (flags bit 0).
for route in range(20):
    rest(f"route_{route:02d}", "POST" if route % 2 else "GET", "/", GOOD, JSON_CT,
         flags=0x01, route=route, fills=(route * 7, 1, 0, 0))


# --- grpc_service: calls [method][flags][name][len u16 LE][protobuf] ---
# (see fuzz/fuzz_targets/grpc_service.rs; method numbers in its order).
LIVE, READY, SMETA, MREADY, MMETA, INFER, CONFIG, STATS, INDEX, LOAD, UNLOAD, LOG = range(12)


def grpc_call(method, message=b"", flags=0, name=0):
    return bytes([method, flags, name]) + struct.pack("<H", len(message)) + message


def named(name, version=""):
    return s(1, name) + (s(2, version) if version else b"")


def infer_msg(model, inputs, raw=(), outputs=(), params=(), version=""):
    m = s(1, model)
    if version:
        m += s(2, version)
    for p in params:
        m += field(4, 2, p)
    for i in inputs:
        m += field(5, 2, i)
    for o in outputs:
        m += field(6, 2, s(1, o))
    for r in raw:
        m += field(7, 2, r)
    return m


def repo_param(key, choice_tag, value):
    v = field(choice_tag, 0, value) if choice_tag in (1, 2) else s(choice_tag, value)
    return s(1, key) + field(2, 2, v)


IRIS = infer_msg("iris", [tensor("input", "FP32", [1, 4])], raw=[fp32], outputs=["label"])
FIXED = infer_msg("fixed", [tensor("x", "FP32", [2, 3])], raw=[struct.pack("<6f", *range(6))])
G = "grpc_service"
write(G, "health", grpc_call(LIVE) + grpc_call(READY) + grpc_call(SMETA))
write(G, "model_ready", grpc_call(MREADY, named("iris", "1")))
write(G, "model_metadata", grpc_call(MMETA, named("dtype_string")))
write(G, "model_config", grpc_call(CONFIG, named("dynamic2", "1")))
write(G, "model_statistics", grpc_call(STATS, named("iris")) + grpc_call(STATS, b""))
write(G, "index", grpc_call(INDEX, field(2, 0, 1)))
write(G, "infer_iris", grpc_call(INFER, IRIS))
write(G, "infer_typed", grpc_call(INFER, infer_msg(
    "dtype_int32", [tensor("INPUT0", "INT32", [1, 2], packed_varints(2, [1, 2**32 - 5]))],
    params=[param("priority", 5, 1), param("timeout", 2, 100000)])))
write(G, "infer_bytes", grpc_call(INFER, infer_msg(
    "dtype_string", [tensor("INPUT0", "BYTES", [1, 2], s(8, b"hi") + s(8, b""))])))
write(G, "infer_fp16_raw", grpc_call(INFER, infer_msg(
    "dtype_fp16", [tensor("INPUT0", "FP16", [1, 2])], raw=[struct.pack("<2e", 1.5, -2.0)])))
write(G, "infer_constant", grpc_call(INFER, infer_msg("constant", [])))
write(G, "unload_infer_load", grpc_call(UNLOAD, s(2, "fixed")) + grpc_call(INFER, FIXED)
      + grpc_call(LOAD, s(2, "fixed")) + grpc_call(INFER, FIXED))
write(G, "load_params", grpc_call(LOAD, s(2, "iris") + field(3, 2, repo_param("config", 3, "{}"))))
write(G, "load_corrupt", grpc_call(LOAD, s(2, "corrupt") + field(3, 2, repo_param("x", 1, 1))))
write(G, "log_settings", grpc_call(LOG, field(1, 2, s(1, "log_verbose_level") + field(2, 2, field(2, 0, 1))))
      + grpc_call(LOG, b""))
