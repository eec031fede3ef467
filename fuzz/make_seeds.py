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
