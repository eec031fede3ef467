"""The node side, as a test harness: a stand-in for the kubelet (the way kwok stands in for
nodes), for the pods that the real controllers create.

For each pod without a node it:
- binds the pod to its one Node;
- gives it a network namespace and a real address (network.py);
- runs its init containers to completion, then its containers, as host processes inside the
  namespace. The image `sluice` is this checkout's binary and a models folder the scenario names;
  emptyDir volumes are folders of the work directory, and container paths in commands, arguments
  and environment values are mapped onto them;
- runs the startup and readiness probes as the kubelet does (HTTP GET on the pod's address, with
  the pod's periods, timeouts and thresholds) and reports Running, Ready and ContainersReady;
- when the pod is deleted: runs the preStop hook (a `sleep` action, or an `exec` of `sleep N`),
  sends SIGTERM, waits up to the pod's grace period, sends SIGKILL only past it, records the
  exit status, and then removes the pod (grace 0), as the kubelet does once its containers are
  gone.

What it does not do: pull images, enforce resources or security contexts, liveness restarts,
other volume types than emptyDir and configMap, or exec/tcp probes.
"""

import datetime
import http.client
import os
import shutil
import signal
import threading
import time

from kube import ApiError
from processes import Child

NODE = "sluice-test-node"


def say(message):
    print(f"[{time.strftime('%H:%M:%S')}] node-agent: {message}", flush=True)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Image:
    """What the image `sluice` holds (Dockerfile's runtime stage), mapped onto this machine:
    container paths on the left, host files on the right."""

    def __init__(self, binary, models, onnxruntime):
        self.files = {"/models": models, "/opt/sluice/bin/sluice": binary,
                      "/opt/sluice/bin/libonnxruntime.so": onnxruntime}
        self.entrypoint = ["/opt/sluice/bin/sluice"]
        self.cmd = ["serve"]
        self.env = {"SLUICE_MODEL_REPOSITORY": "/models", "SLUICE_HTTP_PORT": "8000", "SLUICE_GRPC_PORT": "8001",
                    "ORT_DYLIB_PATH": "/opt/sluice/bin/libonnxruntime.so", "ORT_DISABLE_TELEMETRY": "1",
                    "TMPDIR": "/tmp"}


class Pod:
    def __init__(self, agent, obj):
        self.agent = agent
        self.namespace = obj["metadata"]["namespace"]
        self.name = obj["metadata"]["name"]
        self.uid = obj["metadata"]["uid"]
        self.spec = obj["spec"]
        self.dir = os.path.join(agent.work, "pods", f"{self.namespace}_{self.name}")
        self.ns = self.address = None
        self.children = {}
        self.ready = False
        self.started = False
        self.terminating = threading.Event()
        self.gone = threading.Event()
        self.exit_status = {}
        self.conditions = {}
        self.start_time = now()

    @property
    def path(self):
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}"

    # ---- status -------------------------------------------------------------------------
    def _condition(self, kind, status):
        old = self.conditions.get(kind)
        if old and old["status"] == status:
            return
        self.conditions[kind] = {"type": kind, "status": status, "lastProbeTime": None,
                                 "lastTransitionTime": now()}

    def report(self, phase):
        containers = []
        for c in self.spec["containers"]:
            child = self.children.get(c["name"])
            state = {"running": {"startedAt": self.start_time}}
            if child is not None and not child.running():
                state = {"terminated": {"exitCode": child.proc.returncode, "finishedAt": now()}}
            containers.append({"name": c["name"], "image": c["image"], "imageID": "", "ready": self.ready,
                               "started": self.started, "restartCount": 0, "state": state})
        status = {"phase": phase, "hostIP": self.agent.network.gateway, "startTime": self.start_time,
                  "conditions": list(self.conditions.values()), "containerStatuses": containers}
        if self.address:
            status["podIP"] = self.address
            status["podIPs"] = [{"ip": self.address}]
        try:
            self.agent.api.patch(self.path + "/status", {"status": status})
        except ApiError as e:
            if e.status != 404:
                raise

    # ---- running --------------------------------------------------------------------------
    def _volumes(self):
        volumes = {}
        for v in self.spec.get("volumes", []):
            folder = os.path.join(self.dir, "volumes", v["name"])
            os.makedirs(folder, exist_ok=True)
            os.chmod(folder, 0o777)
            if "configMap" in v:
                cm = self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{v['configMap']['name']}")
                for key, value in cm.get("data", {}).items():
                    with open(os.path.join(folder, key), "w") as f:
                        f.write(value)
            volumes[v["name"]] = folder
        return volumes

    def _mapper(self, container, volumes):
        mounts = {m["mountPath"].rstrip("/"): volumes[m["name"]] for m in container.get("volumeMounts", [])}
        mounts.update(self.agent.image.files)
        mounts.setdefault("/tmp", os.path.join(self.dir, "tmp"))
        os.makedirs(mounts["/tmp"], exist_ok=True)

        def host_path(value):
            for prefix in sorted(mounts, key=len, reverse=True):
                if value == prefix or value.startswith(prefix + "/"):
                    return mounts[prefix] + value[len(prefix):]
            return value
        return host_path

    def _env(self, container, host_path):
        env = dict(self.agent.image.env, HOSTNAME=self.name)
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef")
            if ref:
                cm = self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/configmaps/{ref['name']}")
                env.update({source.get("prefix", "") + k: v for k, v in cm.get("data", {}).items()})
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = var["value"]
            elif var.get("valueFrom", {}).get("fieldRef"):
                field = var["valueFrom"]["fieldRef"]["fieldPath"]
                env[var["name"]] = {"metadata.name": self.name, "metadata.namespace": self.namespace,
                                    "status.podIP": self.address or ""}.get(field, "")
        env = {k: host_path(v) for k, v in env.items()}
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")  # the host's, for the host's `cp`
        return env

    def _argv(self, container, host_path):
        image = self.agent.image
        if container["image"].split(":")[0].rsplit("/", 1)[-1] != "sluice":
            raise RuntimeError(f"image {container['image']}: this node only has the image sluice")
        command = container.get("command") or image.entrypoint
        args = container.get("args") if "args" in container else ([] if container.get("command") else image.cmd)
        return [host_path(a) for a in [*command, *args]]

    def run(self):
        try:
            os.makedirs(self.dir, exist_ok=True)
            self.ns, self.address = self.agent.network.add()
            say(f"pod {self.name}: address {self.address}")
            self._condition("PodScheduled", "True")
            self._condition("Initialized", "False")
            self._condition("ContainersReady", "False")
            self._condition("Ready", "False")
            self.report("Pending")
            volumes = self._volumes()
            for c in self.spec.get("initContainers", []):
                host_path = self._mapper(c, volumes)
                child = Child(f"{self.name}/{c['name']}", self._argv(c, host_path),
                              os.path.join(self.dir, f"{c['name']}.log"), env=self._env(c, host_path),
                              netns=self.ns)
                status = child.wait(300)
                if status != 0:
                    raise RuntimeError(f"init container {c['name']} exited {status}: {child.tail()}")
                child.stop()
            self._condition("Initialized", "True")
            if self.terminating.is_set():  # deleted while initialising: start nothing
                return
            for c in self.spec["containers"]:
                host_path = self._mapper(c, volumes)
                self.children[c["name"]] = Child(
                    f"{self.name}/{c['name']}", self._argv(c, host_path),
                    os.path.join(self.dir, f"{c['name']}.log"), env=self._env(c, host_path), netns=self.ns)
            self.report("Running")
            self._probe_loop()
            # The children die with the thread that started them (PR_SET_PDEATHSIG is per
            # thread): this one lives until terminate() has stopped them.
            self.gone.wait()
        except Exception as e:  # noqa: BLE001 - a pod that cannot start is reported, not fatal
            self.agent.problems.append(f"pod {self.namespace}/{self.name}: {e}")
            say(f"pod {self.namespace}/{self.name}: {e}")
            self.terminating.set()

    def _http_probe(self, container, probe):
        get = probe["httpGet"]
        port = get["port"]
        if isinstance(port, str):
            port = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
        conn = http.client.HTTPConnection(self.address, port, timeout=probe.get("timeoutSeconds", 1))
        try:
            conn.request("GET", get.get("path", "/"))
            return 200 <= conn.getresponse().status < 400
        except OSError:
            return False
        finally:
            conn.close()

    def _probe_loop(self):
        container = self.spec["containers"][0]
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        successes = failures = 0
        while not self.terminating.is_set():
            child = self.children[container["name"]]
            if not child.running():
                self.agent.problems.append(f"pod {self.namespace}/{self.name}: container exited {child.proc.returncode}"
                                           f" without being stopped: {child.tail(5)}")
                self.ready = False
                self._condition("Ready", "False")
                self._condition("ContainersReady", "False")
                self.report("Failed")
                return
            if not self.started:
                probe = startup or readiness
                if probe is None or self._http_probe(container, probe):
                    self.started = True
                    self.report("Running")
                    continue
                self.terminating.wait(probe.get("periodSeconds", 10))
                continue
            if readiness is None:
                ok = True
            else:
                ok = self._http_probe(container, readiness)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
            ready = self.ready
            if ok and successes >= (readiness or {}).get("successThreshold", 1):
                ready = True
            if not ok and failures >= (readiness or {}).get("failureThreshold", 3):
                ready = False
            if ready != self.ready:
                self.ready = ready
                self._condition("ContainersReady", "True" if ready else "False")
                self._condition("Ready", "True" if ready else "False")
                self.report("Running")
            self.terminating.wait((readiness or {}).get("periodSeconds", 10))

    def terminate(self, grace):
        """preStop, SIGTERM, SIGKILL past the grace period; then the pod object goes."""
        self.terminating.set()
        deadline = time.monotonic() + grace
        for c in self.spec["containers"]:
            pre_stop = c.get("lifecycle", {}).get("preStop", {})
            seconds = 0
            if "sleep" in pre_stop:
                seconds = pre_stop["sleep"]["seconds"]
            elif pre_stop.get("exec", {}).get("command", [""])[0] == "sleep":
                seconds = float(pre_stop["exec"]["command"][1])
            say(f"pod {self.name}: deleted (grace {grace} s); preStop {seconds or 'none'}")
            if seconds:
                # The hook's time counts against the grace period, as in the kubelet.
                self.gone.wait(min(seconds, max(0.0, deadline - time.monotonic())))
        say(f"pod {self.name}: SIGTERM")
        for name, child in self.children.items():
            child.signal(signal.SIGTERM)
        for name, child in self.children.items():
            status = child.wait(max(0.0, deadline - time.monotonic()))
            if status is None:
                child.signal(signal.SIGKILL)
                status = -9
                self.agent.problems.append(f"pod {self.namespace}/{self.name}: {name} did not stop within "
                                           f"its grace period of {grace} s and was killed")
            self.exit_status[name] = status
            say(f"pod {self.name}: {name} exited {status}")
            child.stop(grace=1)
        if self.address:
            self.agent.network.remove(self.address)
        self.agent.api.delete(self.path, grace=0)
        self.gone.set()


class NodeAgent:
    def __init__(self, api, network, image, work):
        self.api, self.network, self.image, self.work = api, network, image, work
        self.pods = {}
        self.finished = []  # terminated pods, for the scenarios' checks
        self.problems = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def start(self):
        try:
            self.api.create("/api/v1/nodes", {
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
            })
        except ApiError as e:
            if e.status != 409:
                raise
        self.api.patch(f"/api/v1/nodes/{NODE}/status", {"status": {
            "capacity": {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "addresses": [{"type": "InternalIP", "address": self.network.gateway}],
            "conditions": [{"type": "Ready", "status": "True", "reason": "NodeAgentReady",
                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
        }})
        self.thread = threading.Thread(target=self.api.watch, args=("/api/v1/pods", self._event, self.stop),
                                       daemon=True)
        self.thread.start()
        return self

    def _event(self, kind, obj):
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"], meta["uid"])
        with self.lock:
            pod = self.pods.get(key)
            if kind == "DELETED":
                if pod and not pod.terminating.is_set():
                    threading.Thread(target=pod.terminate, args=(0,), daemon=True).start()
                return
            if pod is None and meta.get("deletionTimestamp") is None:
                if obj["spec"].get("nodeName") not in (None, NODE):
                    return
                pod = self.pods[key] = Pod(self, obj)
                if not obj["spec"].get("nodeName"):
                    threading.Thread(target=self._bind_and_run, args=(pod,), daemon=True).start()
                else:
                    threading.Thread(target=pod.run, daemon=True).start()
                return
            if pod and meta.get("deletionTimestamp") and not getattr(pod, "deleting", False):
                pod.deleting = True
                grace = meta.get("deletionGracePeriodSeconds", pod.spec.get("terminationGracePeriodSeconds", 30))
                threading.Thread(target=self._terminate, args=(key, pod, grace), daemon=True).start()

    def _bind_and_run(self, pod):
        try:
            self.api.create(f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/binding", {
                "apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod.name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}})
        except ApiError as e:
            self.problems.append(f"binding {pod.namespace}/{pod.name}: {e}")
            return
        pod.run()

    def _terminate(self, key, pod, grace):
        pod.terminate(grace)
        with self.lock:
            self.pods.pop(key, None)
            self.finished.append(pod)

    def close(self):
        self.stop.set()
        with self.lock:
            pods = list(self.pods.values())
        for pod in pods:
            pod.terminating.set()
            for child in pod.children.values():
                child.stop(grace=5)
        for pod in pods:
            if pod.address:
                self.network.remove(pod.address)
        if os.path.isdir(os.path.join(self.work, "pods")) and os.environ.get("SLUICE_CLUSTER_KEEP") != "1":
            shutil.rmtree(os.path.join(self.work, "pods"), ignore_errors=True)
