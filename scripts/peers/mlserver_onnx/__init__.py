"""A minimal ONNX Runtime inference runtime for MLServer.

MLServer has no built-in ONNX runtime, so this ``MLModel`` subclass loads
``parameters.uri`` (a ``.onnx`` file) into an ``onnxruntime.InferenceSession``
(CPU, one intra-op thread, like one Sluice instance) and serves it over the
KServe v2 protocol.  Tensors are decoded and encoded with MLServer's own
``NumpyCodec``; the model metadata (inputs, outputs, shapes with ``-1`` for
dynamic dimensions) is read from the graph unless ``model-settings.json``
declares it.  Used by ``scripts/bench-peers.sh``.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor
from mlserver.utils import get_model_uri

_DTYPES = {
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


def _metadata(args):
    return [
        MetadataTensor(
            name=a.name,
            datatype=_DTYPES.get(a.type, "BYTES"),
            shape=[d if isinstance(d, int) else -1 for d in a.shape],
        )
        for a in args
    ]


class OnnxRuntime(MLModel):
    """Serves one ONNX file with onnxruntime."""

    async def load(self) -> bool:
        uri = await get_model_uri(self._settings)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            uri, options, providers=["CPUExecutionProvider"]
        )
        self._output_names = [o.name for o in self._session.get_outputs()]
        if not self._settings.inputs:
            self._settings.inputs = _metadata(self._session.get_inputs())
        if not self._settings.outputs:
            self._settings.outputs = _metadata(self._session.get_outputs())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        wanted = self._output_names
        if payload.outputs:
            wanted = [o.name for o in payload.outputs]
        results = self._session.run(wanted, feeds)
        return InferenceResponse(
            id=payload.id,
            model_name=self.name,
            model_version=self.version,
            outputs=[
                NumpyCodec.encode_output(name=name, payload=np.asarray(value))
                for name, value in zip(wanted, results)
            ],
        )
