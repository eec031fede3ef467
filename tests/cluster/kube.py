"""A small client for the Kubernetes API, enough for the cluster tests' stand-ins.

Bearer-token HTTPS to the apiserver that controlplane.py starts (its certificate is
self-signed, so it is not verified), JSON in and out, and list-then-watch streams.
"""

import json
import http.client
import ssl
import threading
import time
import urllib.parse


class ApiError(Exception):
    def __init__(self, status, body, what):
        self.status = status
        self.body = body
        super().__init__(f"{what}: HTTP {status}: {body[:500]}")


class Kube:
    def __init__(self, host, port, token):
        self.host, self.port, self.token = host, port, token
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE
        self._local = threading.local()

    def _connection(self, timeout):
        return http.client.HTTPSConnection(self.host, self.port, timeout=timeout, context=self._context)

    def request(self, method, path, body=None, query=None, content_type="application/json", timeout=30):
        """One call; returns the decoded JSON answer, raises ApiError on a status >= 300."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        for attempt in range(3):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self._connection(timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                # A kept-alive connection the server closed: open a new one (bounded).
                conn.close()
                self._local.conn = None
                if attempt == 2:
                    raise
        text = raw.decode("utf-8", "replace")
        if response.status >= 300:
            raise ApiError(response.status, text, f"{method} {path}")
        if response.getheader("Content-Type", "").startswith("application/json"):
            return json.loads(text)
        return text

    def get(self, path, **query):
        return self.request("GET", path, query=query or None)

    def create(self, path, body):
        return self.request("POST", path, body)

    def replace(self, path, body):
        return self.request("PUT", path, body)

    def patch(self, path, body, kind="merge"):
        types = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json"}
        return self.request("PATCH", path, body, content_type=types[kind])

    def delete(self, path, grace=None):
        body = None if grace is None else {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": grace}
        try:
            return self.request("DELETE", path, body)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path, on_event, stop, **query):
        """Lists `path`, calls on_event("ADDED", obj) for each item, then follows the watch
        stream until `stop` (a threading.Event) is set, re-listing when the stream ends or its
        resource version expires."""
        while not stop.is_set():
            try:
                listed = self.get(path, **query)
                for item in listed.get("items", []):
                    on_event("ADDED", item)
                version = listed["metadata"]["resourceVersion"]
                # Longer than the server's timeoutSeconds: a quiet stream is not an error. The
                # thread is a daemon; a set `stop` is seen at the next event or re-list.
                conn = self._connection(timeout=90)
                params = dict(query, watch="1", resourceVersion=version, timeoutSeconds="60",
                              allowWatchBookmarks="true")
                conn.request("GET", path + "?" + urllib.parse.urlencode(params),
                             headers={"Authorization": f"Bearer {self.token}"})
                response = conn.getresponse()
                if response.status != 200:
                    raise ApiError(response.status, response.read().decode(), f"watch {path}")
                while not stop.is_set():
                    line = response.readline()
                    if not line:
                        break
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        break
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], event["object"])
                conn.close()
            except (OSError, http.client.HTTPException, ApiError, ValueError) as e:
                if stop.is_set():
                    return
                print(f"kube: watch {path}: {e}; listing again", flush=True)
                stop.wait(0.5)


def wait_for(what, condition, timeout, interval=0.2):
    """Polls `condition` until it returns a truthy value, which is returned; fails after
    `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - report the last one if it never comes true
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"{what}: not true after {timeout} s" + (f" (last error: {last_error})" if last_error else ""))
