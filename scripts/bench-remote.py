"""Remote repositories, measured in one run against real stores on loopback (docs/benchmarks.md).

    .venv-stores/bin/python scripts/bench-remote.py [--size-mib 256] [--swaps 5] [--poll-secs 5]

Needs scripts/setup-stores.sh (moto, Azurite) and target/release/sluice (make build).

1. Download throughput. One file of --size-mib is uploaded to each store as a model version, and
   Sluice downloads it (its log gives bytes and time). In the same run, on the same machine:
   a plain HTTP GET of the same object with curl (what the store itself can deliver: the floor
   of any client), and a copy of the file between two local directories (the local-repository
   case). The figures are ratios to those.
2. Upload to serving. Sluice polls every --poll-secs with --model-ready-marker .ready; each new
   version (y = x + K, distinct K) is uploaded, marker last, and a client asks every 10 ms until
   the answer carries the new K. The time from the marker's upload to the first such answer is
   the publish latency: expected about poll/2 on average, plus download, load and warmup.
   Each publish waits a random part of the poll interval first, so it falls at a random phase.
"""

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "stores"))
import store as stores  # noqa: E402

SLUICE = os.path.join(ROOT, "target", "release", "sluice")
MOTO = os.path.join(ROOT, ".venv-stores", "bin", "moto_server")
AZURITE = os.path.join(ROOT, ".tools-stores", "node_modules", ".bin", "azurite-blob")
SWAP = os.path.join(ROOT, "tests", "fixtures", "swap")


def start_store(kind, log):
    if kind == "s3":
        cmd = [MOTO, "-H", "127.0.0.1", "-p", "0"]
    else:
        cmd = [AZURITE, "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
               "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with open(log.name) as f:
            m = re.search(r"(?:Running on|listens on) http://(127\.0\.0\.1:\d+)", f.read())
        if m:
            return proc, "http://" + m.group(1)
        time.sleep(0.05)
    raise SystemExit(f"{kind} store did not start; see {log.name}")


def env_for(kind, endpoint):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
    if kind == "s3":
        env.update(AWS_ACCESS_KEY_ID="sluice-test", AWS_SECRET_ACCESS_KEY="sluice-test-secret",
                   AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint, AWS_ALLOW_HTTP="true")
    else:
        env.update(AZURE_STORAGE_USE_EMULATOR="true", AZURITE_BLOB_STORAGE_URL=endpoint)
    return env


def object_url(kind, endpoint, bucket, key):
    if kind == "s3":
        return f"{endpoint}/{bucket}/{key}"
    return f"{endpoint}/{stores.AZURITE_ACCOUNT}/{bucket}/{key}"


def curl_seconds(kind, endpoint, bucket, key, into):
    """A plain GET of the object into a file beside Sluice's cache (moto serves it unsigned;
    Azurite needs a signature, so the container is made public-readable for this read)."""
    url = object_url(kind, endpoint, bucket, key)
    out = subprocess.run(["curl", "-s", "-o", into, "-w", "%{http_code} %{time_total}", url],
                         check=True, capture_output=True, text=True).stdout.split()
    os.remove(into)
    if out[0] != "200":
        return None
    return float(out[1])


def serve(kind, endpoint, url, cache, poll, log):
    proc = subprocess.Popen(
        [SLUICE, "serve", "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0",
         "--log-format", "json", "--model-repository", url, "--model-cache-dir", cache,
         "--model-ready-marker", ".ready", "--repository-poll-secs", str(poll),
         "--strict-readiness", "false"],
        env=env_for(kind, endpoint), stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        for event in events(log.name):
            if event.get("http_addr"):
                base = "http://" + event["http_addr"]
                try:
                    if urllib.request.urlopen(base + "/v2/health/ready", timeout=2).status == 200:
                        return proc, base
                except OSError:
                    pass
        time.sleep(0.05)
    raise SystemExit(f"sluice did not start; see {log.name}")


def events(path):
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def infer_k(base, x=1.0):
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [x]}]})
    req = urllib.request.Request(base + "/v2/models/swap/infer", data=body.encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)["outputs"][0]["data"][0] - x
    except OSError:
        return None


def bench(kind, args, tmp):
    log = open(os.path.join(tmp, f"{kind}-store.log"), "w+")
    proc, endpoint = start_store(kind, log)
    client = {"s3": stores.S3, "azure": stores.Azure}[kind](endpoint)
    try:
        bucket = "bench"
        client.create(bucket)
        if kind == "azure":
            client.service.get_container_client(bucket).set_container_access_policy(
                signed_identifiers={}, public_access="container")
        big = os.path.join(tmp, "big.bin")
        if not os.path.exists(big):
            with open(big, "wb") as f:
                for _ in range(args.size_mib):
                    f.write(os.urandom(1 << 20))
        client.put(bucket, "repo/big/1/model.onnx", big)
        client.put(bucket, "repo/big/1/.ready", os.devnull)
        for k in (1,):
            client.put(bucket, f"repo/swap/{k}/model.onnx", os.path.join(SWAP, f"v{k}.onnx"))
            client.put(bucket, f"repo/swap/{k}/.ready", os.devnull)

        # Local copy (the local-repository case), then the store's own floor, then Sluice.
        copies = []
        for i in range(3):
            dst = os.path.join(tmp, f"copy{i}.bin")
            t = time.perf_counter()
            shutil.copyfile(big, dst)
            copies.append(time.perf_counter() - t)
            os.remove(dst)
        curls = [s for s in (curl_seconds(kind, endpoint, bucket, "repo/big/1/model.onnx",
                                          os.path.join(tmp, "curl.bin"))
                             for _ in range(3)) if s]
        cache = os.path.join(tmp, f"{kind}-cache")
        slog = open(os.path.join(tmp, f"{kind}-sluice.log"), "w+")
        sluice, base = serve(kind, endpoint, f"{'s3' if kind == 's3' else 'az'}://{bucket}/repo",
                             cache, args.poll_secs, slog)
        try:
            done = [e for e in events(slog.name)
                    if e.get("message") == "model version downloaded" and e.get("model") == "big"]
            if not done:
                raise SystemExit("sluice did not download the big file; see " + slog.name)
            took = done[0]["took_ms"] / 1000
            size = done[0]["bytes"]
            mib = size / (1 << 20)
            copy_s, curl_s = min(copies), (min(curls) if curls else None)
            row = {"store": kind, "mib": round(mib), "sluice_mib_s": round(mib / took, 1),
                   "curl_mib_s": round(mib / curl_s, 1) if curl_s else None,
                   "local_copy_mib_s": round(mib / copy_s, 1)}
            if curl_s:
                row["sluice_vs_curl"] = round(curl_s / took, 2)
            row["sluice_vs_local_copy"] = round(copy_s / took, 3)

            # Upload to serving at the poll interval.
            latencies = []
            for i in range(args.swaps):
                k = 2 + i % 3
                while infer_k(base) == k:   # alternate K so each publish is visible
                    k = 2 + (k - 1) % 3
                # At a random phase of the poll: a publish right after a detection would
                # always wait a whole interval.
                time.sleep(random.uniform(0, args.poll_secs))
                client.put(bucket, f"repo/swap/{10 + i}/model.onnx", os.path.join(SWAP, f"v{k}.onnx"))
                t = time.perf_counter()
                client.put(bucket, f"repo/swap/{10 + i}/.ready", os.devnull)
                while infer_k(base) != k:
                    if time.perf_counter() - t > 60:
                        raise SystemExit("version not served within 60 s")
                    time.sleep(0.01)
                latencies.append(time.perf_counter() - t)
            row.update(publish_s_mean=round(statistics.mean(latencies), 2),
                       publish_s_min=round(min(latencies), 2), publish_s_max=round(max(latencies), 2),
                       poll_secs=args.poll_secs, swaps=args.swaps)
            return row
        finally:
            sluice.terminate()
            sluice.wait()
    finally:
        proc.terminate()
        proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--swaps", type=int, default=5)
    p.add_argument("--poll-secs", type=int, default=5)
    p.add_argument("--stores", default="s3,azure")
    args = p.parse_args()
    for path in (SLUICE, MOTO, AZURITE):
        if not os.path.exists(path):
            raise SystemExit(f"missing {path}: run `make build` and scripts/setup-stores.sh")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.stores.split(","):
            print(json.dumps(bench(kind, args, tmp)), flush=True)


if __name__ == "__main__":
    main()
