"""The KServe Python model server serving ONNX files with onnxruntime.

KServe's Python server has no ONNX runtime of its own (in a cluster ONNX goes
to Triton), so this ``kserve.Model`` subclass loads each file into an
``onnxruntime.InferenceSession`` (CPU, one intra-op thread, like one Sluice
instance) and answers the KServe v2 protocol.  The model metadata (needed by
``sluice-load`` to build its inputs) is read from the graph, with ``-1`` for
dynamic dimensions.  Used by ``scripts/bench-peers.sh``::

    python kserve_onnx.py --http_port 18080 --enable_grpc false \
        --model iris=models/iris/1/model.onnx --model dense=models/dense/1/model.onnx

KServe hard-codes its REST listener to ``0.0.0.0``; this script rebinds it to
``127.0.0.1`` (the benchmark stays on loopback).  Every other server setting
is KServe's default.
"""

import argparse
import sys
import uuid

import numpy as np
import onnxruntime as ort
import uvicorn

_ONNX_TO_V2 = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}


class _LoopbackConfig(uvicorn.Config):
    """uvicorn's config with the host forced to loopback."""

    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


def _own_args():
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--model", action="append", default=[], help="NAME=PATH.onnx")
    own, rest = parser.parse_known_args()
    # KServe parses sys.argv when it is imported: hand it only its own flags.
    sys.argv = [sys.argv[0]] + rest
    return own


def main():
    own = _own_args()
    uvicorn.Config = _LoopbackConfig

    import kserve
    from kserve import InferOutput, InferRequest, InferResponse
    from kserve.utils.numpy_codec import from_np_dtype

    def metadata(args):
        return [
            {
                "name": a.name,
                "datatype": _ONNX_TO_V2.get(a.type, "BYTES"),
                "shape": [d if isinstance(d, int) else -1 for d in a.shape],
            }
            for a in args
        ]

    class OnnxModel(kserve.Model):
        """One ONNX file served with onnxruntime."""

        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
            self.load()

        def load(self):
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(
                self.path, options, providers=["CPUExecutionProvider"]
            )
            self.output_names = [o.name for o in self.session.get_outputs()]
            self.ready = True
            return self.ready

        def get_input_types(self):
            return metadata(self.session.get_inputs())

        def get_output_types(self):
            return metadata(self.session.get_outputs())

        async def predict(self, payload: InferRequest, headers=None, response_headers=None):
            feeds = {i.name: i.as_numpy() for i in payload.inputs}
            wanted = self.output_names
            if payload.request_outputs:
                wanted = [o.name for o in payload.request_outputs]
            results = self.session.run(wanted, feeds)
            outputs = []
            for name, value in zip(wanted, results):
                value = np.asarray(value)
                out = InferOutput(name=name, shape=list(value.shape), datatype=from_np_dtype(value.dtype))
                out.set_data_from_numpy(value, binary_data=False)
                outputs.append(out)
            return InferResponse(
                response_id=payload.id or str(uuid.uuid4()),
                model_name=self.name,
                infer_outputs=outputs,
            )

    models = []
    for spec in own.model:
        name, _, path = spec.partition("=")
        models.append(OnnxModel(name, path))
    kserve.ModelServer().start(models)


if __name__ == "__main__":
    main()
