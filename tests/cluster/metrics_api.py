"""A stand-in for prometheus-adapter: the custom-metrics API (custom.metrics.k8s.io/v1beta1)
registered as an APIService in the real apiserver, answering the HPA controller from the real
Prometheus.

prometheus-adapter itself is not in any registry this project can use, so this serves the same
API from the same rules: deploy/prometheus-adapter/config.yaml's `seriesQuery` decides which
metrics exist (a metric is listed once its series query matches a series with a namespace and a
pod), and its `metricsQuery` is filled in as the adapter fills it (scripts/prometheus-proof.py's
adapter_query: the metric selector, namespace="ns", pod=~"p1|p2", grouped by pod). Only pod
metrics are served (what deploy/base/hpa.yaml asks for); no namespace metrics, no metric
relisting interval, no authentication of the aggregator.
"""

import datetime
import http.server
import importlib.util
import json
import os
import re
import ssl
import subprocess
import threading
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GROUP = "custom.metrics.k8s.io"
VERSION = "v1beta1"


def _proof_module():
    spec = importlib.util.spec_from_file_location("prometheus_proof", os.path.join(ROOT, "scripts", "prometheus-proof.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


adapter_query = _proof_module().adapter_query


def quantity(value):
    """A Kubernetes quantity in milli-units, as the adapter writes them."""
    return f"{round(value * 1000)}m"


def selector_matchers(selector):
    """A label selector of the query string (a=b,c!=d) as a dict of equalities; others refused."""
    out = {}
    for term in filter(None, (selector or "").split(",")):
        if "=" not in term or "!=" in term:
            raise ValueError(f"metricSelector term {term!r}: only equality terms are supported")
        key, value = term.replace("==", "=").split("=", 1)
        out[key.strip()] = value.strip()
    return out


class MetricsApi:
    def __init__(self, api, prometheus_url, address, work):
        self.api = api
        self.prometheus = prometheus_url
        self.address = address
        self.work = work
        with open(os.path.join(ROOT, "deploy", "prometheus-adapter", "config.yaml")) as f:
            self.rules = yaml.safe_load(f)["rules"]
        self.queries = []  # (time, query, answer) for the record

    # ---- Prometheus -------------------------------------------------------------------------
    def _prom(self, path, **params):
        url = f"{self.prometheus}/api/v1/{path}?" + urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path}: {body}")
        return body["data"]

    def available(self):
        """The metric names the rules expose now (their series queries match something)."""
        names = []
        for rule in self.rules:
            series = self._prom("series", **{"match[]": rule["seriesQuery"]})
            for s in series:
                name = s["__name__"]
                m = re.match(rule["name"]["matches"], name)
                if m:
                    names.append(re.sub(rule["name"]["matches"], rule["name"]["as"], name) if rule["name"].get("as") else name)
        return sorted(set(names))

    def values(self, namespace, pods, metric, selector):
        rule = next((r for r in self.rules if re.match(r["name"]["matches"], metric)
                     or r["name"].get("as") == metric), None)
        if rule is None:
            return None
        query = adapter_query(rule["metricsQuery"], metric, namespace, pods, selector)
        result = self._prom("query", query=query)["result"]
        values = {r["metric"].get("pod"): float(r["value"][1]) for r in result}
        self.queries.append((datetime.datetime.now().isoformat(), query, values))
        return values

    # ---- the API ------------------------------------------------------------------------------
    def handle(self, path, query):
        base = f"/apis/{GROUP}/{VERSION}"
        if path in (base, base + "/"):
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{VERSION}",
                         "resources": [{"name": f"pods/{n}", "singularName": "", "namespaced": True,
                                        "kind": "MetricValueList", "verbs": ["get"]} for n in self.available()]}
        m = re.fullmatch(base + r"/namespaces/([^/]+)/pods/([^/]+)/([^/]+)", path)
        if not m:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                         "reason": "NotFound", "message": f"{path}: only pod metrics are served"}
        namespace, name, metric = (urllib.parse.unquote(g) for g in m.groups())  # `*` comes as %2A
        params = urllib.parse.parse_qs(query)
        label_selector = params.get("labelSelector", [""])[0]
        try:
            selector = selector_matchers(params.get("metricSelector", [""])[0])
        except ValueError as e:
            return 400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                         "reason": "BadRequest", "message": str(e)}
        if name == "*":
            listed = self.api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=label_selector)
            pods = [p["metadata"]["name"] for p in listed["items"]]
        else:
            pods = [name]
        values = self.values(namespace, pods, metric, selector) if pods else {}
        if values is None:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                         "reason": "NotFound", "message": f"no rule serves the metric {metric}"}
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = [{"describedObject": {"kind": "Pod", "namespace": namespace, "name": pod, "apiVersion": "/v1"},
                  "metricName": metric, "timestamp": stamp, "value": quantity(value)}
                 for pod, value in sorted(values.items()) if pod in pods]
        return 200, {"kind": "MetricValueList", "apiVersion": f"{GROUP}/{VERSION}", "metadata": {}, "items": items}

    def start(self):
        cert, key = os.path.join(self.work, "metrics-api.crt"), os.path.join(self.work, "metrics-api.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=sluice-test-metrics-api", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                url = urllib.parse.urlsplit(self.path)
                try:
                    status, body = owner.handle(url.path, url.query)
                except Exception as e:  # noqa: BLE001 - the HPA sees the failure, as with the adapter
                    status, body = 500, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                         "code": 500, "message": str(e)}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((self.address, 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.register()
        return self

    def register(self):
        """A selector-less Service with hand-made Endpoints at this server, and the APIService."""
        ns = "custom-metrics"
        objects = [
            ("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            (f"/api/v1/namespaces/{ns}/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "custom-metrics-api"},
                "spec": {"ports": [{"port": 443, "targetPort": self.port, "protocol": "TCP"}]}}),
            (f"/api/v1/namespaces/{ns}/endpoints", {
                "apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "custom-metrics-api"},
                "subsets": [{"addresses": [{"ip": self.address}], "ports": [{"port": self.port, "protocol": "TCP"}]}]}),
            ("/apis/apiregistration.k8s.io/v1/apiservices", {
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": f"{VERSION}.{GROUP}"},
                "spec": {"group": GROUP, "version": VERSION, "groupPriorityMinimum": 100, "versionPriority": 100,
                         "insecureSkipTLSVerify": True,
                         "service": {"namespace": ns, "name": "custom-metrics-api", "port": 443}}}),
        ]
        for path, body in objects:
            self.api.create(path, body)

    def wait_available(self, wait_for):
        def ok():
            got = self.api.get(f"/apis/apiregistration.k8s.io/v1/apiservices/{VERSION}.{GROUP}")
            return any(c["type"] == "Available" and c["status"] == "True" for c in got["status"].get("conditions", []))
        wait_for("the custom-metrics APIService Available", ok, timeout=60)

    def stop(self):
        self.server.shutdown()
