"""The stock Triton clients against a sluice server with TLS and bearer
tokens (started by run.sh with a throwaway CA and a token file): the same
calls a platform team makes with `ssl=True` and an `authorization` header."""

import os
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

HTTPS = os.environ["SLUICE_HTTPS"]
GRPCS = os.environ["SLUICE_GRPCS"]
CA = os.environ["SLUICE_CA"]
_INFER = os.environ["SLUICE_INFER_TOKEN"]
_ADMIN = os.environ["SLUICE_ADMIN_TOKEN"]


# tritonclient.http adds its own entries to the headers dict it is given, so
# every call gets a fresh one.
def infer_token():
    return {"authorization": f"Bearer {_INFER}"}


def admin_token():
    return {"authorization": f"Bearer {_ADMIN}"}


X = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@pytest.fixture(scope="module")
def https():
    client = httpclient.InferenceServerClient(HTTPS, ssl=True, ssl_options={"ca_certs": CA})
    deadline = time.time() + 60
    while True:
        try:
            if client.is_server_ready():
                return client
        except Exception:  # noqa: BLE001 - still starting
            pass
        assert time.time() < deadline, "TLS server not ready"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def grpcs(https):
    return grpcclient.InferenceServerClient(GRPCS, ssl=True, root_certificates=CA)


def infer_inputs(mod):
    inp = mod.InferInput("input", X.shape, "FP32")
    inp.set_data_from_numpy(X)
    return [inp]


def test_infer_over_tls_with_a_token(https, grpcs):
    for client, mod in [(https, httpclient), (grpcs, grpcclient)]:
        out = client.infer("iris", infer_inputs(mod), headers=infer_token()).as_numpy("probabilities")
        assert out.shape == (1, 3) and out[0].argmax() == 0


def test_no_token_is_unauthenticated(https, grpcs):
    with pytest.raises(InferenceServerException) as e:
        https.infer("iris", infer_inputs(httpclient))
    assert "authentication required" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        grpcs.infer("iris", infer_inputs(grpcclient))
    assert e.value.status() == "StatusCode.UNAUTHENTICATED"
    # Health stays open for probes.
    assert https.is_server_live() and grpcs.is_server_live()


def test_repository_and_logging_need_admin(https, grpcs):
    with pytest.raises(InferenceServerException) as e:
        https.unload_model("fixed", headers=infer_token())
    assert "'admin' scope" in str(e.value)
    with pytest.raises(InferenceServerException) as e:
        grpcs.unload_model("fixed", headers=infer_token())
    assert e.value.status() == "StatusCode.PERMISSION_DENIED"
    https.unload_model("fixed", headers=admin_token())
    grpcs.load_model("fixed", headers=admin_token())
    assert https.is_model_ready("fixed", headers=infer_token())

    settings = https.get_log_settings(headers=admin_token())
    assert settings["log_file"] == "" and settings["log_verbose_level"] == 0
    https.update_log_settings({"log_verbose_level": 1}, headers=admin_token())
    assert grpcs.get_log_settings(headers=admin_token(), as_json=True)["settings"]["log_verbose_level"]["uint32_param"] == 1
    grpcs.update_log_settings({"log_verbose_level": 0}, headers=admin_token())
    with pytest.raises(InferenceServerException):
        https.get_log_settings(headers=infer_token())
