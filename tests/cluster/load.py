"""Load through a Service the way kube-proxy spreads it: each connection goes to one ready
endpoint of the Service picked uniformly at random, from the Endpoints object that the real
endpoints controller fills.

Closed-loop clients (a new request leaves when the answer is read). A client keeps its
connection for `per_connection` requests, and leaves an endpoint as soon as the Endpoints object
drops it (after the answer in flight), as a client of a Service sees a terminating pod's
connections end. The number of clients can change while running (set_clients). Every answer
that is not a 200 with outputs is a failure, recorded with its reason.
"""

import http.client
import json
import random
import threading
import time


class Endpoints:
    """The ready addresses of one Service's Endpoints, followed through a watch."""

    def __init__(self, api, namespace, service, port_name):
        self.path = f"/api/v1/namespaces/{namespace}/endpoints"
        self.service, self.port_name = service, port_name
        self.ready = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.changed = threading.Condition(self.lock)
        threading.Thread(target=api.watch, args=(self.path, self._event, self.stop),
                         kwargs={"fieldSelector": f"metadata.name={service}"}, daemon=True).start()

    def _event(self, kind, obj):
        ready = []
        if kind != "DELETED":
            for subset in obj.get("subsets") or []:
                port = next((p["port"] for p in subset.get("ports", []) if p.get("name") == self.port_name), None)
                if port is None:
                    continue
                ready += [(a["ip"], port) for a in subset.get("addresses") or []]
        with self.lock:
            self.ready = sorted(ready)
            self.changed.notify_all()

    def pick(self):
        with self.lock:
            return random.choice(self.ready) if self.ready else None

    def has(self, endpoint):
        with self.lock:
            return endpoint in self.ready

    def wait_count(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self.ready) != n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"Endpoints {self.service}: {len(self.ready)} ready addresses, wanted {n}")
                self.changed.wait(left)

    def close(self):
        self.stop.set()


class Load:
    def __init__(self, endpoints, model, body, per_connection=5, timeout=30):
        self.endpoints = endpoints
        self.path = f"/v2/models/{model}/infer"
        self.body = json.dumps(body).encode()
        self.per_connection = per_connection
        self.timeout = timeout
        self.ok = 0
        self.failures = []
        self.by_endpoint = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []
        self.target = 0

    def set_clients(self, n):
        """Starts clients up to n; clients past n finish their request and end."""
        with self.lock:
            self.target = n
            for index in range(n):
                if index < len(self.threads) and self.threads[index].is_alive():
                    continue
                t = threading.Thread(target=self._client, args=(index,), daemon=True)
                if index < len(self.threads):
                    self.threads[index] = t
                else:
                    self.threads.append(t)
                t.start()

    def _client(self, index):
        conn, endpoint, sent = None, None, 0
        while not self.stop.is_set() and index < self.target:
            if conn is None or sent >= self.per_connection or not self.endpoints.has(endpoint):
                if conn is not None:
                    conn.close()
                endpoint = self.endpoints.pick()
                if endpoint is None:
                    self._fail("no ready endpoint in the Service")
                    self.stop.wait(0.5)
                    continue
                conn, sent = http.client.HTTPConnection(endpoint[0], endpoint[1], timeout=self.timeout), 0
            try:
                conn.request("POST", self.path, body=self.body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                sent += 1
                if response.status == 200 and b'"outputs"' in answer:
                    with self.lock:
                        self.ok += 1
                        self.by_endpoint[endpoint[0]] = self.by_endpoint.get(endpoint[0], 0) + 1
                else:
                    self._fail(f"{endpoint[0]}: HTTP {response.status}: {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                self._fail(f"{endpoint[0]}: {type(e).__name__}: {e}")
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def _fail(self, why):
        with self.lock:
            self.failures.append((time.time(), why))

    def counts(self):
        with self.lock:
            return self.ok, len(self.failures)

    def close(self):
        self.stop.set()
        self.target = 0
        for t in list(self.threads):
            t.join(self.timeout + 5)
