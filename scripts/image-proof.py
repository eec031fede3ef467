#!/usr/bin/env python3
"""The HTTP client of scripts/test-image.sh: checks a running Sluice container from outside it.

    image-proof.py serve URL            # KServe v2 metadata, readiness, one inference per bundled model
    image-proof.py drain URL CLIENTS --term CMD... --logs CMD...
                                        # SIGTERM (sent by the --term command) with requests in
                                        # flight: none may fail; --logs prints the server's log

Standard library only (http.client, socket, threading), so it runs on a fresh Debian machine.
Every wait polls for a condition and has a deadline; nothing sleeps to synchronise.

`drain` follows the shutdown timeline of docs/deploy.md, with the server run with a
SLUICE_SHUTDOWN_DELAY_SECS, and keeps two kinds of request in flight across the stop:

- closed-loop clients on `dense`, a new connection per request, behind a "balancer" that polls
  /v2/health/ready every 50 ms, as a load balancer that health-checks the server itself does: once
  readiness answers 503 (at SIGTERM), no new request starts. Every request must get 200 and no
  connection may be refused while readiness is 200.
- one request held open by hand: its head and all of its body but the last byte are sent before
  SIGTERM, the last byte only once the listeners have closed (a new connection is refused). It
  must still get 200 with the right answer: an admitted request is finished, however late.

The server's log must show the drain; the caller checks the exit status.
"""

from __future__ import annotations

import datetime
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

PATIENCE = 60.0  # seconds for any single condition


def log(msg: str) -> None:
    print(f"image-proof: {msg}", file=sys.stderr, flush=True)


def fail(msg: str) -> None:
    log(f"FAIL {msg}")
    sys.exit(1)


def eventually(what: str, cond, patience: float = PATIENCE, every: float = 0.05):
    """Polls cond() until it returns something truthy; fails after `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            fail(f"timed out after {patience:.0f} s waiting for {what}")
        time.sleep(every)  # the poll interval; the condition above decides


class Server:
    def __init__(self, url: str):
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            fail(f"URL must be http://HOST:PORT, got {url!r}")
        self.host, self.port = u.hostname, u.port or 80

    def request(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0):
        """One request on a new connection; returns (status, headers, parsed JSON or raw bytes)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Connection": "close"}
            if data is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw
            return resp.status, dict(resp.getheaders()), parsed
        finally:
            conn.close()


# ---- the bundled models: sample requests and what they must answer (models/README.md) ----------

DENSE_ROWS = 8


def dense_body(seed: int, rows: int = DENSE_ROWS) -> dict:
    data = [((seed * 31 + i) % 97) / 97.0 - 0.5 for i in range(rows * 512)]
    return {"inputs": [{"name": "input", "shape": [rows, 512], "datatype": "FP32", "data": data}]}


IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
MULTI = {
    "inputs": [
        {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "mask", "shape": [1, 4], "datatype": "BOOL", "data": [True, False, True, False]},
        {"name": "scale", "shape": [1, 1], "datatype": "INT64", "data": [2]},
    ]
}


def outputs(answer) -> dict:
    if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), list):
        fail(f"no outputs in the answer: {answer!r:.300}")
    return {o.get("name"): o for o in answer["outputs"]}


def check_iris(answer) -> str:
    out = outputs(answer)
    label, probs = out.get("label", {}), out.get("probabilities", {})
    if label.get("data") != [0]:
        fail(f"iris: label must be [0] (setosa), got {label!r:.200}")
    p = probs.get("data") or []
    if len(p) != 3 or abs(p[0] - 0.98155403) > 1e-4:
        fail(f"iris: probabilities must be about [0.9816, 0.0184, 0], got {p!r}")
    return f"label {label['data']}, probabilities {[round(x, 4) for x in p]}"


def check_dense(answer, rows: int = DENSE_ROWS) -> str:
    out = outputs(answer).get("output", {})
    if out.get("shape") != [rows, 10] or len(out.get("data") or []) != rows * 10:
        fail(f"dense: output must be [{rows}, 10], got shape {out.get('shape')!r}")
    return f"output shape {out['shape']}, first logits {[round(x, 3) for x in out['data'][:3]]}"


def check_multi(answer) -> str:
    out = outputs(answer)
    y, count = out.get("y", {}).get("data"), out.get("count", {}).get("data")
    if y != [2, 0, 6, 0] or count != [2]:
        fail(f"multi_input: y must be [2,0,6,0] and count [2], got y={y!r} count={count!r}")
    return f"y {y}, count {count}"


MODELS = {"iris": (IRIS, check_iris), "dense": (dense_body(0), check_dense), "multi_input": (MULTI, check_multi)}


def serve(srv: Server) -> None:
    status, _, meta = srv.request("GET", "/v2")
    if status != 200 or not isinstance(meta, dict) or "name" not in meta:
        fail(f"GET /v2: {status} {meta!r:.200}")
    log(f"GET /v2: 200, server {meta.get('name')} {meta.get('version')}")
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, _, body = srv.request("GET", path)
        if status != 200:
            fail(f"GET {path}: {status} {body!r:.200}")
        log(f"GET {path}: 200")
    for name, (body, check) in MODELS.items():
        status, _, _ = srv.request("GET", f"/v2/models/{name}/ready")
        if status != 200:
            fail(f"GET /v2/models/{name}/ready: {status}")
        status, _, meta = srv.request("GET", f"/v2/models/{name}")
        if status != 200:
            fail(f"GET /v2/models/{name}: {status} {meta!r:.200}")
        status, _, answer = srv.request("POST", f"/v2/models/{name}/infer", body)
        if status != 200:
            fail(f"POST /v2/models/{name}/infer: {status} {answer!r:.300}")
        log(f"POST /v2/models/{name}/infer: 200, {check(answer)}")
    status, _, text = srv.request("GET", "/metrics")
    if status != 200 or b"sluice_" not in (text if isinstance(text, bytes) else b""):
        fail(f"GET /metrics: {status}")
    log("GET /metrics: 200")


# ---- drain ------------------------------------------------------------------------------------------


class Held:
    """A request to iris whose last body byte is sent only when release() is called."""

    def __init__(self, srv: Server):
        body = json.dumps(IRIS).encode()
        head = (
            f"POST /v2/models/iris/infer HTTP/1.1\r\nHost: {srv.host}:{srv.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.sock = socket.create_connection((srv.host, srv.port), timeout=PATIENCE)
        self.sock.sendall(head + body[:-1])
        self.last = body[-1:]

    def release(self) -> tuple[int, object]:
        self.sock.sendall(self.last)
        resp = http.client.HTTPResponse(self.sock)
        resp.begin()
        raw = resp.read()
        self.sock.close()
        return resp.status, json.loads(raw) if raw else None


class Balancer(threading.Thread):
    """A load balancer that health-checks readiness itself (what SLUICE_SHUTDOWN_DELAY_SECS is
    for): once /v2/health/ready stops answering 200, `out` is set and no new request starts."""

    def __init__(self, srv: Server):
        super().__init__(daemon=True)
        self.srv = srv
        self.out = threading.Event()
        self.stop = threading.Event()
        self.seen: str = ""

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                status, _, _ = self.srv.request("GET", "/v2/health/ready", timeout=5)
                self.seen = str(status)
            except OSError as e:
                status, self.seen = None, type(e).__name__
            if status != 200:
                self.out.set()
                return
            self.stop.wait(0.05)  # the probe interval


class Client(threading.Thread):
    """Sends dense requests, a new connection each, until the balancer takes the server out."""

    def __init__(self, srv: Server, index: int, balancer: Balancer, deadline: float):
        super().__init__(daemon=True)
        self.srv, self.index, self.balancer, self.deadline = srv, index, balancer, deadline
        # (start, end) on the wall clock, which the server's log timestamps share (same kernel).
        self.answered: list[tuple[float, float]] = []
        self.failures: list[str] = []
        self.refused = 0

    def run(self) -> None:
        n = 0
        while not self.balancer.out.is_set():
            if time.monotonic() > self.deadline:
                self.failures.append("ran past its deadline: readiness never turned false")
                return
            n += 1
            body = json.dumps(dense_body(self.index * 100_000 + n)).encode()
            start = time.time()
            conn = http.client.HTTPConnection(self.srv.host, self.srv.port, timeout=PATIENCE)
            try:
                conn.connect()
            except OSError:
                # Nothing was sent: a client retries elsewhere. Counted; it should not happen
                # while the balancer still routes here (the listeners are open until the delay).
                self.refused += 1
                continue
            try:
                conn.request(
                    "POST",
                    "/v2/models/dense/infer",
                    body=body,
                    headers={"Content-Type": "application/json", "Connection": "close"},
                )
                resp = conn.getresponse()
                raw = resp.read()
                if resp.status != 200:
                    self.failures.append(f"status {resp.status}: {raw[:200]!r}")
                    return
                check_dense(json.loads(raw))
                self.answered.append((start, time.time()))
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(f"accepted connection, then {type(e).__name__}: {e}")
                return
            finally:
                conn.close()


def drain(srv: Server, term_cmd: list[str], logs_cmd: list[str], clients: int) -> None:
    held = Held(srv)
    balancer = Balancer(srv)
    balancer.start()
    deadline = time.monotonic() + 3 * PATIENCE
    workers = [Client(srv, i, balancer, deadline) for i in range(clients)]
    for w in workers:
        w.start()
    eventually("every load client to be answered 3 times", lambda: all(len(w.answered) >= 3 for w in workers))
    if balancer.out.is_set():
        fail(f"readiness failed before SIGTERM: {balancer.seen}")

    term_at = time.monotonic()
    subprocess.run(term_cmd, check=True, stdout=subprocess.DEVNULL)
    log(f"SIGTERM sent ({' '.join(term_cmd)}, {time.monotonic() - term_at:.2f} s)")

    def logs() -> str:
        r = subprocess.run(logs_cmd, capture_output=True, text=True)
        return r.stdout + r.stderr

    eventually("the drain in the container's log", lambda: "shutting down" in logs())
    drain_line = next(line for line in logs().splitlines() if "shutting down" in line).strip()
    log("log: " + drain_line)
    # When the server began draining, by its own clock: the line's leading RFC 3339 timestamp.
    try:
        stamp = drain_line.split()[0].rstrip("Z")[:26]
        drain_at = datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()
    except (IndexError, ValueError):
        fail(f"no timestamp at the start of the drain line: {drain_line!r}")
    eventually("readiness to turn false", balancer.out.is_set)
    if balancer.seen != "503":
        fail(f"readiness must answer 503 while draining, got {balancer.seen}")
    for w in workers:
        w.join(PATIENCE)
        if w.is_alive():
            fail(f"load client {w.index} still running after readiness turned false")

    def refused() -> bool:
        try:
            socket.create_connection((srv.host, srv.port), timeout=2).close()
            return False
        except OSError:
            return True

    eventually("the listeners to close (a new connection refused)", refused)
    closed_at = time.monotonic()

    status, answer = held.release()
    if status != 200:
        fail(f"the request held across the stop got {status}: {answer!r:.300}")
    log(
        f"held request (sent before SIGTERM, finished {closed_at - term_at:.2f} s after it, once "
        f"the listeners had closed): 200, {check_iris(answer)}"
    )

    failures = [f"client {w.index}: {f}" for w in workers for f in w.failures]
    answered = [a for w in workers for a in w.answered]
    in_flight = sum(1 for s, e in answered if s < drain_at < e)
    after = sum(1 for s, _ in answered if s > drain_at)
    refused_n = sum(w.refused for w in workers)
    log(
        f"load: {len(answered)} answered 200 ({in_flight} in flight when the server began to "
        f"drain, {after} sent after that, before the balancer saw readiness 503), "
        f"{len(failures)} failed, {refused_n} connections refused"
    )
    if failures:
        fail("admitted requests failed:\n  " + "\n  ".join(failures))
    if refused_n:
        fail("connections were refused while readiness was still 200")


def main(argv: list[str]) -> None:
    if len(argv) >= 2 and argv[0] == "serve":
        serve(Server(argv[1]))
    elif len(argv) >= 2 and argv[0] == "drain" and "--term" in argv and "--logs" in argv:
        # drain URL CLIENTS --term CMD... --logs CMD...
        t, lg = argv.index("--term"), argv.index("--logs")
        if not (2 < t < lg):
            fail(__doc__ or "usage")
        drain(Server(argv[1]), argv[t + 1 : lg], argv[lg + 1 :], int(argv[2]))
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
