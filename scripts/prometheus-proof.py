#!/usr/bin/env python3
"""The checks of scripts/test-prometheus.sh (make test-prometheus), one subcommand per step.

  rules PROMETHEUSRULE OUT TESTS...   write the PrometheusRule's spec as a plain rules file for
                                      promtool, and check the unit tests cover every rule
  repo ROOT DIR stable|canary         build a Sluice model repository for one server
  load URL MODEL BODY CLIENTS PAUSE SECONDS
                                      CLIENTS threads, each on its own keep-alive connection,
                                      sending requests back to back (PAUSE seconds apart; 0 keeps
                                      one request in flight per client) for SECONDS
  burst URL MODEL BODY N              N requests at once, each on its own connection
  wait-held URL N [URL N]             wait until each server holds N requests of model `held`
  prove --root ... --prometheus ...   the proof through Prometheus' HTTP API (see prove())

Standard library plus PyYAML. Every wait polls its condition until a deadline; nothing sleeps to
synchronise. Model repositories (`repo`):

  iris        tests/models/iris: traffic over REST and gRPC (batching, latency)
  held        iris's graph with max_queue_delay_us = 1 s and max_batch_size 8: N closed-loop clients
              keep exactly N requests in flight (and queued) at almost no CPU cost, so the
              in-flight value the HPA reads is known
  swap        (stable) tests/fixtures/swap/v1.onnx; v2 is added and loaded during the proof: a
              real hot swap
  matmul_dyn  (canary) tests/models/matmul_dyn: requests with dim 1 = 2 fail inside ONNX Runtime,
              outcome "error": the canary is worse than stable
  corrupt     (canary) tests/models/corrupt: a model that cannot load (state unavailable), and a
              failed reload during the proof
"""

import http.client
import json
import math
import re
import shutil
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

# Metric names that deploy/ may use although Sluice does not export them yet (also allowed by
# scripts/validate-crds.mjs): name -> the work that adds it.
FUTURE_METRICS: dict[str, str] = {}
# kube-state-metrics series used by the dashboard and the alerts. No kube-state-metrics runs here:
# their queries must evaluate without error, and are reported as empty (docs/observability.md).
KUBE_STATE_METRICS = {
    "kube_deployment_status_replicas",
    "kube_deployment_status_replicas_available",
    "kube_deployment_status_replicas_unavailable",
    "kube_horizontalpodautoscaler_spec_target_metric",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "kube_horizontalpodautoscaler_spec_min_replicas",
}
# Grafana's variables as an operator sees the dashboard with "All" selected (allValue .*), and
# $__rate_interval as Grafana computes it for a 1 s scrape interval at a narrow step.
GRAFANA_VALUES = {"namespace": "sluice", "model": ".*", "version": ".*", "__rate_interval": "10s",
                  "__interval": "1s", "__range": "1m"}
DEADLINE_SECS = 60
# Scrapes (1 s apart) Prometheus must hold before the in-flight averages are compared.
MIN_SAMPLES = 20
# How far an in-flight average may be from the requests held (see the adapter checks).
TOLERANCE = 0.35


class ProofError(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def poll(what, fn, secs=DEADLINE_SECS, every=0.25):
    """Calls fn until it returns something truthy; fails with `what` after `secs`."""
    deadline = time.monotonic() + secs
    last = None
    while True:
        try:
            result = fn()
            if result:
                return result
        except (ProofError, urllib.error.URLError, OSError, ValueError) as err:
            last = err
        if time.monotonic() > deadline:
            raise ProofError(f"timed out after {secs}s waiting for {what}" + (f" (last error: {last})" if last else ""))
        time.sleep(every)


def fetch(url, data=None, timeout=10):
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def metrics_text(url):
    status, body = fetch(f"{url}/metrics")
    if status != 200:
        raise ProofError(f"{url}/metrics answered {status}")
    return body


def parse_metrics(text):
    """[(name, {labels}, value)] from the Prometheus text format (Sluice's labels are simple)."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.append((m.group(1), labels, float(m.group(3))))
    return out


def inflight(url, model=None):
    return sum(v for n, l, v in parse_metrics(metrics_text(url))
               if n == "sluice_inflight_requests" and (model is None or l.get("model") == model))


# ---- rules ------------------------------------------------------------------------------------------

def cmd_rules(rule_file, out, tests):
    spec = yaml.safe_load(Path(rule_file).read_text())["spec"]
    Path(out).write_text(yaml.safe_dump(spec, sort_keys=False))
    alerts = [r["alert"] for g in spec["groups"] for r in g["rules"] if "alert" in r]
    records = [r["record"] for g in spec["groups"] for r in g["rules"] if "record" in r]
    firing, quiet, exprs = set(), set(), []
    for t in tests:
        for case in yaml.safe_load(Path(t).read_text()).get("tests", []):
            for a in case.get("alert_rule_test", []):
                (firing if a.get("exp_alerts") else quiet).add(a["alertname"])
            exprs += [p["expr"] for p in case.get("promql_expr_test", [])]
    problems = [f"alert {a} has no firing case" for a in alerts if a not in firing]
    problems += [f"alert {a} has no case where it must not fire" for a in alerts if a not in quiet]
    problems += [f"recording rule {r} is not tested" for r in records if not any(re.search(rf"(?<![\w:]){re.escape(r)}(?![\w:])", e) for e in exprs)]
    if problems:
        raise ProofError("deploy/monitoring/tests: " + "; ".join(problems))
    log(f"rules: {len(alerts)} alerts, each with firing and not-firing cases; {len(records)} recording rules, each tested")


# ---- repo -------------------------------------------------------------------------------------------

def cmd_repo(root, dest, track):
    root, dest = Path(root), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(root / "tests/models/iris", dest / "iris")
    (dest / "held/1").mkdir(parents=True)
    shutil.copy(root / "tests/models/iris/1/model.onnx", dest / "held/1/model.onnx")
    (dest / "held/config.toml").write_text(
        "# Held: N closed-loop clients keep N requests queued for a second each (see prometheus-proof.py).\n"
        "max_batch_size = 8\ninstances = 1\nintra_op_threads = 1\n"
        "[dynamic_batching]\nmax_queue_delay_us = 1000000\n")
    if track == "stable":
        (dest / "swap/1").mkdir(parents=True)
        shutil.copy(root / "tests/fixtures/swap/v1.onnx", dest / "swap/1/model.onnx")
    else:
        shutil.copytree(root / "tests/models/matmul_dyn", dest / "matmul_dyn")
        shutil.copytree(root / "tests/models/corrupt", dest / "corrupt")


def post(conn, path, body):
    conn.request("POST", path, body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def cmd_load(url, model, body, clients, pause, seconds):
    """Closed-loop clients: a new request leaves as soon as the answer is read, on the same
    connection, so a client that waits for a slow answer keeps exactly one request in flight (the
    gap between two requests is microseconds, where a curl loop spends milliseconds starting a
    process)."""
    u = urllib.parse.urlsplit(url)
    path, data, deadline = f"/v2/models/{model}/infer", body.encode(), time.monotonic() + float(seconds)

    def client():
        conn = None
        while time.monotonic() < deadline:
            try:
                conn = conn or http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                post(conn, path, data)
            except (OSError, http.client.HTTPException):
                conn = None
                time.sleep(0.1)  # the server is going away; do not spin
            if float(pause) > 0:
                time.sleep(float(pause))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(int(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def cmd_burst(url, model, body, n):
    u = urllib.parse.urlsplit(url)
    statuses = []

    def one():
        try:
            statuses.append(post(http.client.HTTPConnection(u.hostname, u.port, timeout=30), f"/v2/models/{model}/infer", body.encode()))
        except (OSError, http.client.HTTPException) as err:
            statuses.append(str(err))

    threads = [threading.Thread(target=one) for _ in range(int(n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log(f"burst of {n} requests to {model}: answers {sorted(map(str, statuses))}")


def cmd_wait_held(pairs):
    for url, n in zip(pairs[::2], pairs[1::2]):
        n = int(n)
        poll(f"{url} to hold {n} requests of model held", lambda: inflight(url, "held") == n)
        log(f"{url}: {n} requests of model held in flight")


# ---- prove ------------------------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def api(self, path, **params):
        query = urllib.parse.urlencode(params, doseq=True)
        status, body = fetch(f"{self.url}/api/v1/{path}?{query}")
        doc = json.loads(body)
        if status != 200 or doc.get("status") != "success":
            raise ProofError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]


def values(result):
    return [float(r["value"][1]) for r in result]


def finite(result):
    return [v for v in values(result) if math.isfinite(v)]


def describe(result, limit=4):
    """One line: each series' distinguishing labels and value."""
    parts = []
    for r in result[:limit]:
        labels = {k: v for k, v in r["metric"].items() if k not in ("__name__", "namespace", "job", "service", "container", "endpoint", "instance")}
        label = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        parts.append(f"{{{label}}} {float(r['value'][1]):.4g}")
    more = f" (+{len(result) - limit} more)" if len(result) > limit else ""
    return "; ".join(parts) + more if parts else "empty"


def substitute(expr, values_):
    """Grafana's variable interpolation for the forms the dashboard uses: ${x}, $x, [[x]]."""
    for name in sorted(values_, key=len, reverse=True):
        expr = expr.replace("${" + name + "}", values_[name]).replace("[[" + name + "]]", values_[name])
        expr = re.sub(r"\$" + re.escape(name) + r"(?![\w])", lambda _m: values_[name], expr)
    if "$" in expr:
        raise ProofError(f"unsubstituted variable in {expr}")
    return expr


def adapter_query(template, series, namespace, pods, selector=None):
    """metricsQuery filled in as prometheus-adapter does for a pods query (pkg/naming/metrics_query.go):
    the HPA's metric selector first, then namespace="ns", then pod="p" or pod=~"p1|p2"; GroupBy is
    the pod label."""
    matchers = [f'{k}="{v}"' for k, v in (selector or {}).items()]
    matchers.append(f'namespace="{namespace}"')
    matchers.append(f'pod="{pods[0]}"' if len(pods) == 1 else f'pod=~"{"|".join(pods)}"')
    return (template.replace("<<.Series>>", series).replace("<<.LabelMatchers>>", ",".join(matchers))
            .replace("<<.GroupBy>>", "pod"))


def metric_names(expr):
    """sluice_* and kube_* metric names in a PromQL expression (not recorded names: they contain ':')."""
    names = set()
    for tok in re.findall(r'(?<![\w:"])[a-zA-Z_:][\w:]*', re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
        if ":" not in tok and (tok.startswith("sluice_") or tok.startswith("kube_")):
            names.add(tok)
    return names


class Sampler(threading.Thread):
    """Reads each server's own in-flight sum from /metrics every 250 ms while the proof runs."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.samples = {s["pod"]: [] for s in servers}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for s in self.servers:
                try:
                    self.samples[s["pod"]].append(inflight(s["url"]))
                except (ProofError, urllib.error.URLError, OSError):
                    pass
            self.stop.wait(0.25)

    def mean(self, pod):
        xs = self.samples[pod]
        return sum(xs) / len(xs) if xs else float("nan")


def prove(args):
    root = Path(args.root)
    prom = Prometheus(args.prometheus)
    servers = []
    for spec in args.server:
        name, url, pod, held = spec.split(",")
        servers.append({"name": name, "url": url, "pod": pod, "held": int(held)})
    stable = next(s for s in servers if s["name"] == "stable")
    canary = next(s for s in servers if s["name"] == "canary")
    pods = [s["pod"] for s in servers]
    report = []  # (source, what, query, result line)
    failures = []

    def check(ok, msg):
        if not ok:
            failures.append(msg)
            log(f"FAIL  {msg}")

    def record(source, what, query, result_line):
        report.append((source, what, query, result_line))

    sampler = Sampler(servers)
    sampler.start()

    # -- Prometheus scrapes both servers (and fails to scrape the dead target).
    def targets_seen():
        active = prom.api("targets")["activeTargets"]
        health = {t["labels"].get("pod"): t["health"] for t in active}
        return all(health.get(p) == "up" for p in pods) and health.get(args.dead_pod) == "down"
    poll("Prometheus to scrape both servers and miss the dead target", targets_seen)
    log("Prometheus scrapes both servers; the dead target is down")

    # -- Events while Prometheus watches: a hot swap on stable, a failed reload and a burst over
    # the in-flight cap on the canary.
    repo = Path(args.work) / "repo-stable" / "swap"
    (repo / "2").mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "tests/fixtures/swap/v2.onnx", repo / "2/model.onnx")
    status, body = fetch(f"{stable['url']}/v2/repository/models/swap/load", data=b"")
    check(status == 200, f"hot swap of model swap on stable answered {status}: {body}")
    status, body = fetch(f"{canary['url']}/v2/repository/models/corrupt/load", data=b"")
    check(status >= 400, f"reloading the corrupt model on the canary should fail, answered {status}")
    log("events: swap v1 -> v2 on stable, failed reload of corrupt on canary")

    # -- Wait until Prometheus has seen them.
    poll("the swap in Prometheus", lambda: prom.query('sluice_model_state{model="swap",version="2",state="ready"} == 1'))
    poll("the failed reload in Prometheus", lambda: finite(prom.query('increase(sluice_model_load_failures_total{model="corrupt"}[1m]) > 0')))

    # ---- 1. prometheus-adapter: the HPA's metric ------------------------------------------------
    # An average needs samples: wait until Prometheus holds MIN_SAMPLES scrapes of each pod, so one
    # sample that caught an iris request in flight moves the average by 1 / MIN_SAMPLES at most.
    poll(f"{MIN_SAMPLES} samples of each pod", lambda: len(finite(prom.query(
        f'count_over_time(sluice_inflight_requests{{model="held"}}[1m]) >= {MIN_SAMPLES}'))) == len(pods))
    adapter = yaml.safe_load((root / "deploy/prometheus-adapter/config.yaml").read_text())
    hpa = yaml.safe_load((root / "deploy/base/hpa.yaml").read_text())
    hpa_metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    served = set()
    for rule in adapter["rules"]:
        series_query = rule["seriesQuery"].strip("'")
        found = prom.api("series", **{"match[]": series_query})
        name = re.match(r"[\w:]+", series_query).group(0)
        as_name = re.sub(rule["name"]["matches"], rule["name"]["as"], name)
        served.add(as_name)
        series_pods = sorted({s.get("pod") for s in found})
        check(series_pods == sorted(pods), f"adapter seriesQuery {series_query}: pods {series_pods}, expected {sorted(pods)}")
        check(all(s.get("namespace") == "sluice" for s in found), f"adapter seriesQuery {series_query}: series without namespace")
        record("prometheus-adapter", f"seriesQuery ({as_name})", series_query, f"{len(found)} series on pods {', '.join(series_pods)}")
    check(hpa_metric in served, f"the HPA's metric {hpa_metric} is served by no adapter rule")

    for rule in adapter["rules"]:
        name = re.match(r"[\w:]+", rule["seriesQuery"].strip("'")).group(0)
        at = time.time()
        query = adapter_query(rule["metricsQuery"], name, "sluice", pods)
        result = prom.query(query, at)
        per_pod = {r["metric"].get("pod"): float(r["value"][1]) for r in result}
        check(set(per_pod) == set(pods), f"adapter {name}: pods {sorted(per_pod)}, expected {sorted(pods)}")
        # The same arithmetic from the raw samples Prometheus holds: mean per series, summed per pod.
        raw = prom.query(f'{name}{{namespace="sluice",pod=~"{"|".join(pods)}"}}[1m]', at)
        from_raw, samples = {}, {}
        for r in raw:
            xs = [float(v) for _, v in r["values"]]
            from_raw[r["metric"]["pod"]] = from_raw.get(r["metric"]["pod"], 0.0) + sum(xs) / len(xs)
            if any(xs):
                samples.setdefault(r["metric"]["pod"], []).append(f"{r['metric'].get('model')}: {' '.join(f'{x:g}' for x in xs)}")
        for s in servers:
            got = per_pod.get(s["pod"], float("nan"))
            check(abs(got - from_raw.get(s["pod"], float("nan"))) < 1e-9,
                  f"adapter {name} {s['pod']}: {got} differs from the mean of its raw samples {from_raw.get(s['pod'])}")
            # Held requests wait ~1 s in the queue and run in microseconds: queued ~ in flight ~ N.
            # Other traffic adds a little (iris requests in flight for a few ms each), and each
            # held cycle has a short gap (the gauge drops before the answer is written, and the
            # client sends its next request after reading it) that a loaded machine stretches.
            check(abs(got - s["held"]) <= TOLERANCE, f"adapter {name} {s['pod']}: {got:.3f}, expected {s['held']} ± {TOLERANCE}; "
                  f"samples {'; '.join(samples.get(s['pod'], []))}")
            if name == "sluice_inflight_requests":
                own = sampler.mean(s["pod"])
                check(abs(got - own) <= TOLERANCE, f"adapter {name} {s['pod']}: {got:.3f}, the server's own /metrics averaged {own:.3f}")
        line = "; ".join(f"{p}: {v:.3f}" for p, v in sorted(per_pod.items()))
        if name == "sluice_inflight_requests":
            line += " (held " + ", ".join(f"{s['held']}" for s in servers) + "; servers' /metrics mean " + \
                ", ".join(f"{sampler.mean(s['pod']):.3f}" for s in servers) + ")"
            inflight_at, inflight_per_pod = at, per_pod
        record("prometheus-adapter", f"metricsQuery ({name})", query, line)
        # With an HPA metric selector (one model autoscaled on its own): exactly the held requests.
        if name == "sluice_inflight_requests":
            query = adapter_query(rule["metricsQuery"], name, "sluice", pods, {"model": "held"})
            result = prom.query(query)
            per_pod = {r["metric"].get("pod"): float(r["value"][1]) for r in result}
            for s in servers:
                got = per_pod.get(s["pod"], float("nan"))
                check(s["held"] - TOLERANCE <= got <= s["held"], f"adapter {name} model=held {s['pod']}: {got:.3f}, expected {s['held']} - {TOLERANCE}")
            record("prometheus-adapter", f"metricsQuery ({name}, selector model=held)", query,
                   "; ".join(f"{p}: {v:.3f}" for p, v in sorted(per_pod.items())))

    # ---- 2. KEDA --------------------------------------------------------------------------------
    scaled = yaml.safe_load((root / "deploy/keda/scaledobject.yaml").read_text())
    for trig in scaled["spec"]["triggers"]:
        query = trig["metadata"]["query"]
        result = prom.query(query, inflight_at)
        total = sum(inflight_per_pod.values())
        check(len(result) == 1 and abs(values(result)[0] - total) < 1e-9,
              f"KEDA {trig['name']}: {describe(result)}, expected the adapter's per-pod values summed: {total}")
        record("KEDA", f"trigger {trig['name']} (threshold {trig['metadata']['threshold']})", query, describe(result))

    # ---- 3. the canary analysis -------------------------------------------------------------------
    analysis = yaml.safe_load((root / "deploy/overlays/canary/analysistemplate.yaml").read_text())
    args_ = {a["name"]: a.get("value", "") for a in analysis["spec"]["args"]}
    for metric in analysis["spec"]["metrics"]:
        query = re.sub(r"\{\{\s*args\.([\w-]+)\s*\}\}", lambda m: args_[m.group(1)], metric["provider"]["prometheus"]["query"])
        result = poll(f"analysis {metric['name']}", lambda q=query: finite(prom.query(q)) and prom.query(q))
        check(len(result) == 1, f"analysis {metric['name']}: {len(result)} results, the template reads result[0]")
        v = values(result)[0]
        if metric["name"] == "error-ratio-delta":
            # The canary fails matmul_dyn runs, stable fails nothing: the gate must catch it.
            check(v > 0.01, f"analysis error-ratio-delta: {v}, the canary fails its matmul_dyn runs: expected > 0.01 (Failed)")
        else:
            check(v > 0, f"analysis {metric['name']}: {v}")
        verdict = "Failed" if eval_condition(metric["failureCondition"], v) else "Successful" if eval_condition(metric["successCondition"], v) else "Inconclusive"
        record("AnalysisTemplate", f"metric {metric['name']} -> {verdict}", " ".join(query.split()), describe(result))

    # ---- 4. the dashboard ---------------------------------------------------------------------------
    dash = json.loads((root / "deploy/grafana/sluice.json").read_text())
    variables = dict(GRAFANA_VALUES)
    for v in dash["templating"]["list"]:
        if v["type"] == "constant":
            variables[v["name"]] = v["query"]
    dash_queries = []  # (what, expr)
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            dash_queries.append((f"variable {v['name']}", q))
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            dash_queries.append((f"annotation {a['name']}", a["expr"]))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            dash_queries.append((f"panel {p['title']} / {t['refId']} ({t.get('legendFormat', '')})", t["expr"]))
    exceptions = []
    for what, expr in dash_queries:
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\)\s*", expr)
        if m:  # Grafana asks /api/v1/label/<label>/values?match[]=<selector> for these
            selector, label = substitute(m.group(1), variables), m.group(2)
            got = poll(what, lambda: prom.api(f"label/{label}/values", **{"match[]": selector}))
            record("dashboard", what, expr, ", ".join(got))
            continue
        query = substitute(expr, variables)
        names = metric_names(query)
        if names and names <= KUBE_STATE_METRICS:
            # No kube-state-metrics runs here: the query must evaluate without error, and only a
            # fallback (`or vector(...)`) can give it data.
            result = prom.query(query)
            if not result:
                exceptions.append(what)
                record("dashboard", what + " [kube-state-metrics: empty here]", query, "empty (no kube-state-metrics)")
            else:
                record("dashboard", what + " [kube-state-metrics absent: its fallback]", query, describe(result))
            continue
        result = poll(what, lambda q=query: finite(prom.query(q)) and prom.query(q))
        record("dashboard", what, query, describe(result))

    # ---- 5. recording rules, rule health and alerts ------------------------------------------------
    groups = prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    for r in rules:
        check(r["health"] == "ok", f"rule {r.get('name')}: health {r['health']} {r.get('lastError', '')}")
    for r in (r for r in rules if r["type"] == "recording"):
        result = poll(r["name"], lambda n=r["name"]: finite(prom.query(n)) and prom.query(n))
        record("recording rule", r["name"], r["query"], describe(result))

    canary_pod, stable_pod = canary["pod"], stable["pod"]
    expected_active = {
        "SluiceModelUnavailable": {"model": "corrupt", "pod": canary_pod},
        "SluiceModelLoadFailed": {"model": "corrupt", "pod": canary_pod},
        "SluiceHighErrorRatio": {"model": "matmul_dyn"},
        "SluiceLatencyP99AboveSLO": {"model": "held"},
        "SluiceCanaryErrorRatioAboveStable": {"namespace": "sluice"},
        "SluiceTargetDown": {"pod": args.dead_pod},
    }
    expected_quiet = ["SluiceMetricsAbsent", "SluiceHandlerPanics", "SluicePodsNotReady", "SluiceInflightAboveHPATarget", "SluiceQueueFull"]

    def alerts_in_place():
        active = prom.api("alerts")["alerts"]
        return all(any(a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in want.items()) for a in active)
                   for name, want in expected_active.items()) and active
    active = poll("the expected alerts to be pending or firing", alerts_in_place)
    for name, want in expected_active.items():
        hits = [a for a in active if a["labels"]["alertname"] == name and all(a["labels"].get(k) == v for k, v in want.items())]
        rule = next(r for r in rules if r["name"] == name)
        record("alert", f"{name} -> {', '.join(sorted({a['state'] for a in hits}))}", " ".join(rule["query"].split()),
               "; ".join("{" + ",".join(f"{k}={a['labels'][k]}" for k in sorted(want)) + f"}} value {float(a['value']):.4g}" for a in hits))
    for name in expected_quiet:
        hits = [a for a in active if a["labels"]["alertname"] == name]
        check(not hits, f"alert {name} should be inactive, is {[a['state'] for a in hits]}")
        rule = next(r for r in rules if r["name"] == name)
        record("alert", f"{name} -> inactive", " ".join(rule["query"].split()), "inactive, as expected")
    others = sorted({r["name"] for r in rules if r["type"] == "alerting"} - set(expected_active) - set(expected_quiet))
    for name in others:
        hits = [a for a in active if a["labels"]["alertname"] == name]
        record("alert", f"{name} (not asserted)", "", ", ".join(a["state"] for a in hits) or "inactive")

    # ---- 6. every metric name against the servers' live /metrics -------------------------------------
    live = set()
    for s in servers:
        live |= {n for n, _, _ in parse_metrics(metrics_text(s["url"]))}
    used = {}
    sources = [("dashboard", e) for _, e in dash_queries]
    sources += [("rules", r["query"]) for r in rules]
    sources += [("prometheus-adapter", r["metricsQuery"].replace("<<.Series>>", re.match(r"[\w:]+", r["seriesQuery"].strip("'")).group(0)))
                for r in adapter["rules"]]
    sources += [("KEDA", t["metadata"]["query"]) for t in scaled["spec"]["triggers"]]
    sources += [("AnalysisTemplate", m["provider"]["prometheus"]["query"]) for m in analysis["spec"]["metrics"]]
    for where, expr in sources:
        for n in metric_names(expr):
            used.setdefault(n, set()).add(where)
    for n, wheres in sorted(used.items()):
        if n in live:
            continue
        if n in FUTURE_METRICS:
            log(f"note  {n} ({', '.join(sorted(wheres))}) is not exported yet: {FUTURE_METRICS[n]}")
        elif n in KUBE_STATE_METRICS:
            pass
        else:
            check(False, f"{n} ({', '.join(sorted(wheres))}) is not in the live /metrics of either server")
    sluice_used = sorted(n for n in used if n.startswith("sluice_"))
    live_ok = [n for n in sluice_used if n in live]
    sampler.stop.set()

    # ---- report --------------------------------------------------------------------------------------
    log("")
    current = None
    for source, what, query, result_line in report:
        if source != current:
            log(f"-- {source}")
            current = source
        log(f"   {what}")
        if query:
            log(f"      query:  {query}")
        log(f"      result: {result_line}")
    log("")
    log(f"metric names: {len(live_ok)} of {len(sluice_used)} sluice_* names used by deploy/ are in the live /metrics; "
        f"not yet exported: {', '.join(n for n in sluice_used if n not in live) or 'none'}; "
        f"kube-state-metrics names (not run here): {len([n for n in used if n.startswith('kube_')])}")
    log(f"dashboard: {len(dash_queries)} queries, {len(dash_queries) - len(exceptions)} returned data, "
        f"{len(exceptions)} kube-state-metrics queries evaluated empty: {'; '.join(exceptions)}")
    if failures:
        raise ProofError(f"{len(failures)} check(s) failed: " + " | ".join(failures))


def eval_condition(cond, value):
    """Argo's successCondition/failureCondition for the `result[0] <op> number` form used here."""
    m = re.fullmatch(r"\s*result\[0\]\s*(<=|>=|<|>|==)\s*([\d.]+)\s*", cond)
    if not m:
        raise ProofError(f"unsupported analysis condition {cond}")
    op, x = m.group(1), float(m.group(2))
    return {"<=": value <= x, ">=": value >= x, "<": value < x, ">": value > x, "==": value == x}[op]


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    try:
        if cmd == "rules":
            cmd_rules(argv[2], argv[3], argv[4:])
        elif cmd == "repo":
            cmd_repo(argv[2], argv[3], argv[4])
        elif cmd == "load":
            cmd_load(*argv[2:8])
        elif cmd == "burst":
            cmd_burst(*argv[2:6])
        elif cmd == "wait-held":
            cmd_wait_held(argv[2:])
        elif cmd == "prove":
            import argparse
            p = argparse.ArgumentParser(prog="prometheus-proof.py prove")
            p.add_argument("--root", required=True)
            p.add_argument("--prometheus", required=True)
            p.add_argument("--work", required=True)
            p.add_argument("--server", action="append", required=True, help="name,url,pod,held")
            p.add_argument("--dead-pod", required=True)
            prove(p.parse_args(argv[2:]))
        else:
            sys.exit(__doc__)
    except ProofError as err:
        print(f"prometheus-proof: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
