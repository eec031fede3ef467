#!/usr/bin/env python3
"""make test-cluster: deploy/ run by the real Kubernetes controllers on metrics from a real
Prometheus, with real Sluice processes as the pods.

  tests/cluster/run.py --bin-dir DIR --sluice BINARY [--record] [--only NAME ...]

Real: etcd, kube-apiserver, kube-controller-manager (the deployment, replicaset, HPA, endpoint,
garbage-collector and namespace controllers), Prometheus discovering the pods through the
apiserver, and Sluice. Stand-ins: the node agent (node_agent.py: the kubelet's part) and the
custom-metrics API (metrics_api.py: prometheus-adapter's part). Scenarios, in order:

  dryrun   every manifest of deploy/, rendered for 1.20, through `kubectl apply --dry-run=server`,
           and the Gateway API routes applied for real (dryrun.py)
  hpa      deploy/base under load that rises, plateaus and falls: the HPA controller scales up and
           back down, with no failed request
  canary   deploy/overlays/canary: the canary's share of requests follows its share of the
           Service's endpoints; promote and roll back, with no failed request

--record writes the HPA run to docs/hpa-real.csv (plotted by `sluice-plot-hpa`). Everything
started here is stopped on the way out, failure or not.
"""

import argparse
import csv
import fcntl
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from controlplane import ControlPlane, HPA_SYNC_SECONDS  # noqa: E402
from kube import ApiError, wait_for  # noqa: E402
from load import Endpoints, Load  # noqa: E402
from metrics_api import MetricsApi  # noqa: E402
from network import PodNetwork  # noqa: E402
from node_agent import Image, NodeAgent  # noqa: E402
from render import for_1_20, render  # noqa: E402

NAMESPACE = "sluice"
# Prometheus scrapes every 5 s here (deploy/base/servicemonitor.yaml says 15 s): the windows of
# the adapter's query ([1m]) and the HPA's behaviour are what the scenario checks, and a shorter
# scrape only makes the metric fresher.
SCRAPE_SECONDS = 5
# The test's only changes to deploy/base/hpa.yaml, so that a scale-down fits in a test run: the
# scale-down stabilisation window 300 s -> 30 s and the scale-down policies' period 60 s -> 15 s.
# Everything else (target, min/max, scale-up policies) is the shipped manifest.
DOWN_WINDOW_SECONDS = 30
DOWN_PERIOD_SECONDS = 15
IRIS = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] test-cluster: {message}", flush=True)


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)
    log("ok: " + message)


# ---- set-up ----------------------------------------------------------------------------------

def image_models(work):
    """The models the stand-in image carries: the bundled iris, and `held`, iris's graph batched
    for a whole second (max_batch_size above any client count), so that N closed-loop clients keep
    N requests in flight at almost no CPU cost: the in-flight value the HPA reads is known."""
    models = os.path.join(work, "image-models")
    shutil.copytree(os.path.join(ROOT, "models", "iris"), os.path.join(models, "iris"))
    os.makedirs(os.path.join(models, "held", "1"))
    shutil.copy(os.path.join(ROOT, "models", "iris", "1", "model.onnx"), os.path.join(models, "held", "1"))
    with open(os.path.join(models, "held", "config.toml"), "w") as f:
        f.write("max_batch_size = 1024\ninstances = 1\nintra_op_threads = 1\n"
                "[dynamic_batching]\nmax_queue_delay_us = 1000000\n")
    return models


class Targets:
    """The scrape targets the Prometheus Operator makes of deploy/base/servicemonitor.yaml,
    computed from the real Endpoints and Pods and handed to Prometheus as a file_sd file.

    Debian's Prometheus is built without Kubernetes service discovery, so this does what its
    `role: endpoints` discovery plus the Operator's relabelling would: the ready addresses of the
    Services the ServiceMonitor selects, on the port it names, labelled namespace, service, pod,
    container and endpoint, plus its podTargetLabels."""

    def __init__(self, api, work):
        with open(os.path.join(ROOT, "deploy", "base", "servicemonitor.yaml")) as f:
            self.monitor = yaml.safe_load(f)["spec"]
        self.api = api
        self.path = os.path.join(work, "targets.json")
        self.endpoints = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._write()
        threading.Thread(target=api.watch, args=(f"/api/v1/namespaces/{NAMESPACE}/endpoints", self._event, self.stop),
                         daemon=True).start()

    def _event(self, kind, obj):
        with self.lock:
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.endpoints.pop(name, None)
            else:
                self.endpoints[name] = obj
            self._write()

    def _write(self):
        wanted = self.monitor["selector"]["matchLabels"]
        port_name = self.monitor["endpoints"][0]["port"]
        groups = []
        for name, ep in sorted(self.endpoints.items()):
            try:
                service = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/services/{name}")
            except ApiError:
                continue
            labels = service["metadata"].get("labels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                continue
            for subset in ep.get("subsets") or []:
                port = next((p["port"] for p in subset.get("ports", []) if p.get("name") == port_name), None)
                for address in subset.get("addresses") or [] if port else []:
                    pod_name = address.get("targetRef", {}).get("name", "")
                    target = {"namespace": NAMESPACE, "service": name, "pod": pod_name, "container": "sluice",
                              "endpoint": port_name}
                    try:
                        pod_labels = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods/{pod_name}")["metadata"].get("labels", {})
                    except ApiError:
                        pod_labels = {}
                    for label in self.monitor.get("podTargetLabels", []):
                        if pod_labels.get(label):
                            target[sanitize(label)] = pod_labels[label]
                    groups.append({"targets": [f"{address['ip']}:{port}"], "labels": target})
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(groups, f)
        os.replace(tmp, self.path)

    def close(self):
        self.stop.set()


def prometheus_config(work, targets):
    with open(os.path.join(ROOT, "deploy", "base", "servicemonitor.yaml")) as f:
        endpoint = yaml.safe_load(f)["spec"]["endpoints"][0]
    config = {
        "global": {"scrape_interval": f"{SCRAPE_SECONDS}s", "scrape_timeout": "4s"},
        "scrape_configs": [{
            "job_name": f"serviceMonitor/{NAMESPACE}/sluice/0",
            "metrics_path": endpoint.get("path", "/metrics"),
            "scheme": endpoint.get("scheme", "http"),
            "honor_labels": endpoint.get("honorLabels", False),
            "file_sd_configs": [{"files": [targets.path], "refresh_interval": "1s"}],
        }],
    }
    path = os.path.join(work, "prometheus.yml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


def sanitize(label):
    return "".join(c if c.isalnum() else "_" for c in label)


class Cluster:
    """Everything the scenarios share, started in order and stopped in reverse."""

    def __init__(self, args, work):
        self.args, self.work = args, work
        self.stack = []

    def __enter__(self):
        self.network = PodNetwork().open()
        self.stack.append(self.network.close)
        self.cp = ControlPlane(self.args.bin_dir, self.work)
        self.stack.append(self.cp.stop)
        self.cp.start()
        self.api = self.cp.api
        log(f"control plane up: kube-apiserver on 127.0.0.1:{self.cp.port}")
        binary = os.path.abspath(self.args.sluice)
        image = Image(binary, image_models(self.work),
                      os.path.join(ROOT, ".onnxruntime", "lib", "libonnxruntime.so"))
        self.agent = NodeAgent(self.api, self.network, image, self.work).start()
        self.stack.append(self.agent.close)
        self.targets = Targets(self.api, self.work)
        self.stack.append(self.targets.close)
        config = prometheus_config(self.work, self.targets)
        prom_dir = os.path.join(self.work, "prometheus")
        self.prometheus = subprocess.run([os.path.join(ROOT, "scripts", "prometheus.sh"), "start", prom_dir, config,
                                          str(self.args.lifetime)], check=True, capture_output=True,
                                         text=True).stdout.strip().splitlines()[-1]
        self.stack.append(lambda: subprocess.run([os.path.join(ROOT, "scripts", "prometheus.sh"), "stop", prom_dir]))
        log(f"Prometheus at {self.prometheus}")
        self.metrics = MetricsApi(self.api, self.prometheus, self.network.gateway, self.work).start()
        self.stack.append(self.metrics.stop)
        self.metrics.wait_available(wait_for)
        log("custom.metrics.k8s.io/v1beta1 registered and Available")
        return self

    def __exit__(self, *exc):
        for stop in reversed(self.stack):
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - go on stopping the rest
                log(f"while stopping: {e}")
        return False

    def apply(self, objects):
        docs = "\n---\n".join(yaml.safe_dump(o) for o in objects)
        out = self.cp.kubectl("apply", "-f", "-", input=docs, check=False)
        if out.returncode != 0:
            raise Failure(f"kubectl apply refused: {out.stderr.strip()}")
        return out.stdout

    def delete(self, objects):
        docs = "\n---\n".join(yaml.safe_dump(o) for o in objects)
        self.cp.kubectl("delete", "--wait=false", "--ignore-not-found", "-f", "-", input=docs, check=False)

    def deployment(self, name):
        return self.api.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")

    def ready_replicas(self, name):
        return self.deployment(name).get("status", {}).get("readyReplicas", 0)

    def prom(self, query, at=None):
        params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)["data"]["result"]

    def scraped_after(self, moment, pods):
        """Waits until Prometheus has a sample of each pod taken after `moment` (Unix time)."""
        selector = "|".join(pods)

        def done():
            got = self.prom(f'timestamp(up{{namespace="{NAMESPACE}",pod=~"{selector}"}})')
            return len(got) == len(pods) and all(float(r["value"][1]) > moment for r in got)
        # `moment` may lie ahead: wait for it, then for up to a few scrapes.
        wait_for(f"a scrape of {pods} after {moment:.0f}", done,
                 timeout=max(0.0, moment - time.time()) + 4 * SCRAPE_SECONDS + 10)

    def pods(self, selector):
        listed = self.api.get(f"/api/v1/namespaces/{NAMESPACE}/pods", labelSelector=selector)
        return [p["metadata"]["name"] for p in listed["items"] if not p["metadata"].get("deletionTimestamp")]

    def wait_pods_gone(self, timeout=120):
        wait_for("every pod of the namespace gone", lambda: not self.api.get(
            f"/api/v1/namespaces/{NAMESPACE}/pods")["items"], timeout=timeout, interval=0.5)

    def check_terminations(self):
        """Every pod the controllers removed stopped by itself within its grace period, with 0."""
        bad = [(p.name, p.exit_status) for p in self.agent.finished if any(s != 0 for s in p.exit_status.values())]
        check(not bad, f"{len(self.agent.finished)} pods terminated so far, each exited 0 after SIGTERM: {bad or 'all'}")
        check(not self.agent.problems, f"the node agent saw no problem: {self.agent.problems}")


# ---- scenarios -----------------------------------------------------------------------------------

def scenario_dryrun(c):
    import dryrun
    results = dryrun.dry_run_all(c.cp) + dryrun.check_routes(c.cp) + dryrun.check_limits(c.cp)
    for rel, name, result in results:
        log(f"  {'ok' if result.startswith('ok') else 'REFUSED'} {rel} {name}{result[2:] if result.startswith('ok') else ': ' + result}")
    refused = [r for r in results if r[2].startswith("REFUSED")]
    c.summary["dryrun"] = {"checked": len(results), "refused": len(refused)}
    check(not refused, f"{len(results)} server-side checks of deploy/ (dry-run apply, Gateway routes, "
                       f"1.20 limits): {len(refused)} refused")


def without_operators(objects):
    """The objects the real controllers act on: not those of operators that do not run here
    (the Prometheus Operator's ServiceMonitor: Targets does its part; Gateway API; Argo Rollouts).
    The dryrun scenario validates those against their CRDs."""
    return [o for o in objects if o["apiVersion"].split("/")[0] not in
            ("monitoring.coreos.com", "gateway.networking.k8s.io", "argoproj.io")]


def hpa_objects():
    objects = without_operators(for_1_20(render(os.path.join(ROOT, "deploy", "base"))))
    for o in objects:
        if o["kind"] == "HorizontalPodAutoscaler":
            down = o["spec"]["behavior"]["scaleDown"]
            down["stabilizationWindowSeconds"] = DOWN_WINDOW_SECONDS
            for policy in down["policies"]:
                policy["periodSeconds"] = DOWN_PERIOD_SECONDS
    return objects


def hpa_state(c):
    hpa = c.api.get(f"/apis/autoscaling/v2beta2/namespaces/{NAMESPACE}/horizontalpodautoscalers/sluice")
    status = hpa.get("status", {})
    metric = None
    for m in status.get("currentMetrics") or []:
        if m.get("type") == "Pods":
            metric = quantity(m["pods"]["current"]["averageValue"])
    return status.get("currentReplicas", 0), status.get("desiredReplicas", 0), metric, hpa["spec"]


def quantity(text):
    text = str(text)
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    if text.endswith("k"):
        return float(text[:-1]) * 1000
    return float(text)


def scenario_hpa(c):
    base = hpa_objects()
    namespace = render(os.path.join(ROOT, "deploy", "namespace"))
    c.apply(namespace)
    c.apply(base)
    hpa_spec = next(o for o in base if o["kind"] == "HorizontalPodAutoscaler")["spec"]
    target = quantity(hpa_spec["metrics"][0]["pods"]["target"]["averageValue"])
    low, high, fall = 40, 300, 20
    wait_for("the HPA's minimum of 2 ready pods", lambda: c.ready_replicas("sluice") == hpa_spec["minReplicas"],
             timeout=180, interval=0.5)
    endpoints = Endpoints(c.api, NAMESPACE, "sluice", "http")
    endpoints.wait_count(2, timeout=60)
    load = Load(endpoints, "held", IRIS, per_connection=5)
    rows, phase = [], {"name": "low", "clients": low}
    t0 = time.time()
    stop = threading.Event()

    def record():
        while not stop.is_set():
            try:
                current, desired, metric, _ = hpa_state(c)
                ready = c.ready_replicas("sluice")
            except (ApiError, OSError, KeyError) as e:
                log(f"recorder: {e}")
                stop.wait(1)
                continue
            ok, failed = load.counts()
            rows.append({"t": round(time.time() - t0, 1), "phase": phase["name"], "clients": phase["clients"],
                         "metric": "" if metric is None else round(metric, 2), "target": target,
                         "current_replicas": current, "desired_replicas": desired, "ready_replicas": ready,
                         "ok": ok, "failed": failed})
            stop.wait(1)

    recorder = threading.Thread(target=record, daemon=True)
    recorder.start()
    try:
        load.set_clients(low)
        # Low load until the HPA reads a metric (the adapter's window needs a few scrapes): it
        # must keep 2 pods (20 per pod is far below the target of 90).
        wait_for("the HPA reading sluice_inflight_requests", lambda: hpa_state(c)[2] is not None, timeout=120, interval=1)
        low_until = time.time() + 20
        while time.time() < low_until:
            check_no_scale(c, 2)
            time.sleep(1)
        phase.update(name="high", clients=high)
        t_high = time.time()
        load.set_clients(high)
        expected = math.ceil(high / target)
        bound = HPA_SYNC_SECONDS + 60 + SCRAPE_SECONDS + 10
        wait_for(f"the HPA scaling up within {bound} s of the overload", lambda: hpa_state(c)[1] > 2,
                 timeout=bound, interval=0.5)
        t_up = time.time() - t_high
        log(f"scale-up decided {t_up:.1f} s after the load rose")
        wait_for(f"{expected} ready pods ({high} clients / target {target:g})",
                 lambda: c.ready_replicas("sluice") >= expected, timeout=180, interval=0.5)
        plateau_until = time.time() + 30
        while time.time() < plateau_until:
            time.sleep(1)
        peak = max(r["desired_replicas"] for r in rows)
        phase.update(name="fall", clients=fall)
        t_fall = time.time()
        load.set_clients(fall)
        wait_for("the HPA back at minReplicas 2", lambda: hpa_state(c)[0] == 2 and c.ready_replicas("sluice") == 2,
                 timeout=60 + DOWN_WINDOW_SECONDS + 6 * DOWN_PERIOD_SECONDS + 60, interval=1)
        down_rows = [r for r in rows if r["t"] >= t_fall - t0 and r["desired_replicas"] < peak]
        t_down = down_rows[0]["t"] - (t_fall - t0) if down_rows else float("nan")
        wait_for("the removed pods terminated", lambda: len(c.agent.finished) >= peak - 2, timeout=120, interval=0.5)
    finally:
        stop.set()
        load.close()
        endpoints.close()
        recorder.join(5)
    ok, failed = load.counts()
    c.summary["hpa"] = {"scale_up_s": round(t_up, 1), "first_scale_down_s": round(t_down, 1), "peak": peak,
                        "expected_peak": expected, "ok": ok, "failed": failed, "rows": rows}
    check(failed == 0, f"{ok} requests across the scaling, {failed} failed: {load.failures[:5]}")
    check(t_up <= bound, f"scaled up {t_up:.1f} s after the overload (bound: sync {HPA_SYNC_SECONDS} s + "
                         f"metric window 60 s + scrape {SCRAPE_SECONDS} s + 10 s)")
    check(peak >= expected, f"peak desired replicas {peak} >= ceil({high} / {target:g}) = {expected}")
    check_decisions(rows, target, hpa_spec["minReplicas"])
    c.check_terminations()
    if c.args.record:
        write_csv(os.path.join(ROOT, "docs", "hpa-real.csv"), rows)
    c.delete(base)
    c.wait_pods_gone()


def recommendation(row, target, min_replicas):
    """The replica calculator's answer for one recorded HPA status: ceil(current x metric /
    target), or no change within the 0.1 tolerance; never below minReplicas."""
    if row["metric"] == "":
        return None
    current, metric = row["current_replicas"], float(row["metric"])
    if abs(metric / target - 1) <= 0.1:
        return current
    return max(min_replicas, math.ceil(current * metric / target - 1e-9))


def check_decisions(rows, target, min_replicas):
    """Each decision of the controller against its own inputs, as recorded: a scale-up never goes
    past what the metric asks at that sync; a scale-down never goes below the highest
    recommendation of the stabilisation window before it. The status is sampled every second and
    the controller syncs every HPA_SYNC_SECONDS, so the window checked is the part of
    [T - window, T] that certainly preceded the sync: [T - window + sync + 1, T - sync - 1]."""
    def recs(low, high):
        return [r for r in (recommendation(x, target, min_replicas) for x in rows if low <= x["t"] <= high)
                if r is not None]
    decisions = 0
    for previous, row in zip(rows, rows[1:]):
        before, after, t = previous["desired_replicas"], row["desired_replicas"], row["t"]
        if after == before or not before:
            continue
        decisions += 1
        if after > before:
            asked = recs(t - HPA_SYNC_SECONDS - 1, t)
            if not asked or after > max(asked):
                raise Failure(f"scale-up to {after} at {t} s: the metric asked for at most {asked}")
        else:
            window = recs(t - DOWN_WINDOW_SECONDS + HPA_SYNC_SECONDS + 1, t - HPA_SYNC_SECONDS - 1)
            if window and after < max(window):
                raise Failure(f"scale-down to {after} at {t} s inside the stabilisation window: "
                              f"recommendations {window}")
    log(f"ok: {decisions} scaling decisions, each within what the recorded metric asked and, "
        f"down, the highest recommendation of the {DOWN_WINDOW_SECONDS} s window")


def check_no_scale(c, replicas):
    current, desired, _, _ = hpa_state(c)
    if desired not in (0, replicas):
        raise Failure(f"the HPA wants {desired} replicas at low load (expected {replicas})")


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log(f"wrote {os.path.relpath(path, ROOT)} ({len(rows)} rows)")


def canary_share(c, at, window):
    """Requests answered per version label in the `window` seconds before `at`, through
    Prometheus (increase() over the pods' request counters, by the podTargetLabel)."""
    result = c.prom(f'sum by (app_kubernetes_io_version) (increase(sluice_requests_total'
                    f'{{namespace="{NAMESPACE}",model="iris"}}[{window}s]))', at=at)
    return {r["metric"].get("app_kubernetes_io_version", ""): float(r["value"][1]) for r in result}


def scenario_canary(c):
    """Stable and canary behind one Service: the canary's share of requests is its share of the
    ready endpoints. Load runs throughout, across the promotion and the rollback."""
    core = without_operators(for_1_20(render(os.path.join(ROOT, "deploy", "overlays", "canary"))))
    c.apply(render(os.path.join(ROOT, "deploy", "namespace")))
    c.apply(core)
    stable_min = next(o for o in core if o["kind"] == "HorizontalPodAutoscaler")["spec"]["minReplicas"]
    wait_for(f"{stable_min} stable and 1 canary pods ready",
             lambda: c.ready_replicas("sluice-stable") == stable_min and c.ready_replicas("sluice-canary") == 1,
             timeout=240, interval=0.5)
    endpoints = Endpoints(c.api, NAMESPACE, "sluice", "http")
    endpoints.wait_count(stable_min + 1, timeout=60)
    load = Load(endpoints, "iris", IRIS, per_connection=1)
    load.set_clients(8)
    window, results = 20, []
    try:
        for name, canary in (("canary", 1), ("promoted", stable_min), ("rolled back", 0)):
            c.api.patch(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/sluice-canary/scale",
                        {"spec": {"replicas": canary}})
            wait_for(f"{canary} canary pods ready", lambda: c.ready_replicas("sluice-canary") == canary
                     and len(c.pods("track=canary")) == canary, timeout=180, interval=0.5)
            endpoints.wait_count(stable_min + canary, timeout=60)
            # Every connection from now on picks among the new endpoints; measure a window that
            # starts after the change and ends after Prometheus scraped every pod once more.
            at = time.time() + window + SCRAPE_SECONDS
            pods = c.pods("app.kubernetes.io/name=sluice")
            c.scraped_after(at, pods)
            by_version = canary_share(c, at, window)
            total = sum(by_version.values())
            share = by_version.get("0.2.0", 0.0) / total if total else float("nan")
            expected = canary / (stable_min + canary)
            # One request per connection, each to an endpoint picked uniformly at random: the
            # share is binomial, sd sqrt(p(1-p)/n) <= 0.5/sqrt(n); 0.05 is over 5 sd at n > 2500.
            results.append({"phase": name, "stable_pods": stable_min, "canary_pods": canary,
                            "requests": round(total), "canary_share": round(share, 4), "expected": round(expected, 4)})
            check(total > 2500, f"{name}: {total:.0f} requests in the {window} s window")
            check(abs(share - expected) <= 0.05, f"{name}: canary share {share:.3f} of {total:.0f} requests; "
                                                 f"replica share {expected:.3f} ± 0.05")
    finally:
        load.close()
        endpoints.close()
    ok, failed = load.counts()
    c.summary["canary"] = {"phases": results, "ok": ok, "failed": failed}
    check(failed == 0, f"canary, promotion and rollback under load: {ok} requests, {failed} failed: {load.failures[:5]}")
    wait_for("the rolled-back canary pods terminated", lambda: not c.pods("track=canary"), timeout=120, interval=0.5)
    c.check_terminations()
    c.delete(core)
    c.wait_pods_gone()


SCENARIOS = {"dryrun": scenario_dryrun, "hpa": scenario_hpa, "canary": scenario_canary}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--sluice", required=True)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS))
    parser.add_argument("--lifetime", type=int, default=1500, help="upper bound for Prometheus, seconds")
    args = parser.parse_args()
    # One run at a time on a machine: the pod network's bridge and addresses are fixed.
    lock = open(os.path.join(tempfile.gettempdir(), "sluice-test-cluster.lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    work = tempfile.mkdtemp(prefix="sluice-cluster.")
    started = time.time()
    failed = False
    summary = {}
    try:
        with Cluster(args, work) as c:
            c.summary = summary
            for name in args.only or list(SCENARIOS):
                log(f"scenario {name}")
                SCENARIOS[name](c)
    except Exception as e:  # noqa: BLE001 - any error fails the run, after the teardown
        failed = True
        log(f"FAILED: {e}")
        traceback.print_exc()
        for name in ("kube-apiserver", "kube-controller-manager", "etcd"):
            path = os.path.join(work, f"{name}.log")
            if os.path.exists(path):
                print(f"--- {name} (last lines)\n" + "".join(open(path, errors="replace").readlines()[-15:]))
    finally:
        summary_path = os.path.join(work, "summary.json")
        with open(summary_path, "w") as f:
            json.dump(summary, f, indent=1)
        log(f"{'FAILED' if failed else 'passed'} in {time.time() - started:.0f} s; summary: "
            + json.dumps({k: {kk: vv for kk, vv in v.items() if kk != 'rows'} for k, v in summary.items()}))
        if os.environ.get("SLUICE_CLUSTER_KEEP") == "1":
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
