"""Server-side validation of deploy/ against the real Kubernetes 1.20 apiserver of the cluster tests.

- `dry_run_all(cp)`: every kustomization under deploy/ (listed as scripts/validate-deploy.sh lists
  them), rendered and rewritten for 1.20 (render.py, the documented transformations), is applied
  object by object with `kubectl apply --dry-run=server -o json`. The apiserver decodes, defaults,
  validates and runs admission on each one without storing it. Its answer is then compared with
  what was sent: a field that 1.20 does not know is dropped while decoding (1.20 has no strict
  field validation), so every dropped field is reported as a refusal too.
- `check_routes(cp)`: the canary overlay's HTTPRoute and GRPCRoute applied for real (with the
  parent Gateway and a GatewayClass created here), read back, and their backendRefs' weights
  compared with the split the overlay documents (90 % / 10 %). No gateway controller runs here, so
  the routes never get a status (no Accepted / ResolvedRefs conditions): what is checked is that
  the apiserver accepts and stores them unchanged.

Custom resource kinds need their CRDs first (`install_crds`). No package on the registries this
project may use (npm, PyPI, Debian, crates.io) ships the CRD manifests of the Gateway API,
prometheus-operator, KEDA or Argo Rollouts; the @kubernetes-models/* npm packages that the offline
validation uses (deploy/tools/package.json) ship compiled validators, not schemas. So the CRDs are
constructed here: group, versions and kinds from the modules those packages define
(`<group>/<version>/<Kind>.js`), scope and plural from the table CRD_SCOPES, and a schema that
preserves unknown fields. The apiserver therefore checks that each kind and version is served and
namespaced as the manifests assume, and validates metadata; the bodies of custom resources are
validated against their schemas offline only (scripts/validate-crds.mjs). docs/cluster-validation.md.

`check_limits(cp)` shows that each transformation of the 1.20 rendering is still needed.

CLI: `python3 tests/cluster/dryrun.py BIN_DIR` starts a control plane in a temporary folder, runs
the three checks, prints one line per object and a summary, and exits non-zero on any refusal.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from render import ROOT, TOOLS_DIR, for_1_20, render  # noqa: E402

# (group, kind) -> (scope, plural) of every CRD kind installed: the kinds deploy/ uses, and the
# Gateway API's Gateway and GatewayClass that the routes attach to. Scopes and plurals as the
# projects' own CRDs define them.
CRD_SCOPES = {
    ("monitoring.coreos.com", "ServiceMonitor"): ("Namespaced", "servicemonitors"),
    ("monitoring.coreos.com", "PrometheusRule"): ("Namespaced", "prometheusrules"),
    ("keda.sh", "ScaledObject"): ("Namespaced", "scaledobjects"),
    ("argoproj.io", "AnalysisTemplate"): ("Namespaced", "analysistemplates"),
    ("gateway.networking.k8s.io", "GatewayClass"): ("Cluster", "gatewayclasses"),
    ("gateway.networking.k8s.io", "Gateway"): ("Namespaced", "gateways"),
    ("gateway.networking.k8s.io", "HTTPRoute"): ("Namespaced", "httproutes"),
    ("gateway.networking.k8s.io", "GRPCRoute"): ("Namespaced", "grpcroutes"),
}
# API group -> npm package whose modules name its kinds and versions (as scripts/validate-crds.mjs).
CRD_PACKAGES = {
    "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
    "keda.sh": "@kubernetes-models/keda",
    "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
    "argoproj.io": "@kubernetes-models/argo-rollouts",
}
CANARY = "deploy/overlays/canary"
TEST_GATEWAY_CLASS = "sluice-cluster-test"
KUBECTL_TIMEOUT = 60
# The CLI gives up after this long (a normal run takes under a minute, once the binaries are built).
CLI_DEADLINE_SECONDS = 600


def kustomizations():
    """Entry points as scripts/validate-deploy.sh finds them: every kustomization.yaml under
    deploy/ that is not a Component and not nested inside another kustomization's folder."""
    found = []
    for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, "deploy")):
        dirnames[:] = sorted(d for d in dirnames if d != "node_modules")
        if "kustomization.yaml" not in filenames:
            continue
        with open(os.path.join(dirpath, "kustomization.yaml")) as f:
            if re.search(r"^kind:\s*Component", f.read(), re.M):
                continue
        rel = os.path.relpath(dirpath, ROOT)
        parent, nested = os.path.dirname(rel), False
        while parent.startswith("deploy/"):
            if os.path.isfile(os.path.join(ROOT, parent, "kustomization.yaml")):
                nested = True
                break
            parent = os.path.dirname(parent)
        if not nested:
            found.append(rel)
    return sorted(found)


def _package_versions(group, kind):
    """Versions of `kind` that the group's npm package defines, newest API first (v1 > v1beta1 >
    v1alpha2)."""
    base = os.path.join(TOOLS_DIR, "node_modules", CRD_PACKAGES[group], group)
    if not os.path.isdir(base):
        raise RuntimeError(f"{base} missing: run scripts/validate-deploy.sh to install the npm tools")
    versions = [v for v in os.listdir(base) if os.path.isfile(os.path.join(base, v, f"{kind}.js"))]
    if not versions:
        raise RuntimeError(f"{CRD_PACKAGES[group]} defines no {group} {kind}")

    def rank(v):
        m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", v)
        stage = {"alpha": 0, "beta": 1, None: 2}[m.group(2)] if m else -1
        return (stage, int(m.group(1)) if m else 0, int(m.group(3) or 0) if m else 0)
    return sorted(versions, key=rank, reverse=True)


def crds():
    """The constructed CRDs (see the module docstring), one per kind of CRD_SCOPES."""
    out = []
    for (group, kind), (scope, plural) in CRD_SCOPES.items():
        versions = _package_versions(group, kind)
        schema = {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}
        annotations = {"sluice.dev/constructed-from": CRD_PACKAGES[group]}
        if group.endswith(".k8s.io"):
            # *.k8s.io groups are protected: a CRD must name its API review. The Gateway API's own
            # CRDs name theirs; this stand-in is not one, so it says so (the apiserver accepts the
            # "unapproved" form and sets KubernetesAPIApprovalPolicyConformant=False).
            annotations["api-approved.kubernetes.io"] = "unapproved, stand-in for the sluice cluster tests"
        out.append({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}", "annotations": annotations},
            "spec": {
                "group": group,
                "scope": scope,
                "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                          "listKind": f"{kind}List"},
                "versions": [{"name": v, "served": True, "storage": i == 0, "schema": schema,
                              "subresources": {"status": {}}}
                             for i, v in enumerate(versions)],
            },
        })
    return out


def _kubectl(cp, *args, input=None):
    out = subprocess.run([os.path.join(cp.bin, "kubectl"), "--kubeconfig", cp.kubeconfig,
                          "--request-timeout", "30s", *args],
                         input=input, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT)
    return out.returncode, out.stdout, out.stderr.strip()


def _apply(cp, objects, dry_run=False, validate=True):
    args = ["apply", "-o", "json", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    args += [] if validate else ["--validate=false"]
    return _kubectl(cp, *args, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def install_crds(cp):
    """Applies the CRDs for real and waits until the apiserver serves them (Established)."""
    defs = crds()
    rc, _, err = _apply(cp, defs)
    if rc != 0:
        raise RuntimeError(f"installing CRDs: {err}")
    names = [f"crd/{d['metadata']['name']}" for d in defs]
    rc, _, err = _kubectl(cp, "wait", "--for=condition=Established", "--timeout=60s", *names)
    if rc != 0:
        raise RuntimeError(f"CRDs not established: {err}")
    return defs


def ensure_namespaces(cp, names):
    """Creates the namespaces for real (the objects applied in dry-run mode need them)."""
    objects = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}} for n in sorted(names)]
    rc, _, err = _apply(cp, objects)
    if rc != 0:
        raise RuntimeError(f"creating namespaces {sorted(names)}: {err}")


def dropped_fields(sent, stored, path=""):
    """Paths present in `sent` but missing from `stored`: what the apiserver dropped while
    decoding. Added fields (defaults), changed scalar spellings (quantities) and empty values
    left out (`initContainers: []` after a kustomize `$patch: delete`; Go's omitempty) are fine."""
    if isinstance(sent, dict):
        if not isinstance(stored, dict):
            return [path or "."]
        out = []
        for key, value in sent.items():
            if key not in stored:
                if value in ([], {}, None):
                    continue
                out.append(f"{path}.{key}")
            else:
                out += dropped_fields(value, stored[key], f"{path}.{key}")
        return out
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [f"{path} (list of {len(sent)} stored as {stored!r:.80})"]
        return [p for i, (a, b) in enumerate(zip(sent, stored)) for p in dropped_fields(a, b, f"{path}[{i}]")]
    return []


def _name(obj):
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"


def dry_run_all(cp):
    """[(kustomization, kind/name, result)] for every object of every kustomization under deploy/;
    result is "ok" (possibly with "; note: ..." for a documented removal) or "REFUSED: <why>"."""
    results = []
    rendered = {}
    for rel in kustomizations():
        notes = []
        try:
            rendered[rel] = (for_1_20(render(rel), notes), notes)
        except (RuntimeError, ValueError) as e:
            results.append((rel, "-", f"REFUSED: {e}"))
    install_crds(cp)
    ensure_namespaces(cp, {o["metadata"]["namespace"] for objs, _ in rendered.values() for o in objs
                           if (o.get("metadata") or {}).get("namespace")})
    for rel, (objects, notes) in rendered.items():
        for obj in objects:
            name = _name(obj)
            rc, out, err = _apply(cp, [obj], dry_run=True)
            if rc != 0:
                results.append((rel, name, f"REFUSED: {err}"))
                continue
            try:
                stored = json.loads(out)
            except ValueError:
                results.append((rel, name, f"REFUSED: unreadable answer: {out[:200]!r} {err}"))
                continue
            if stored.get("kind") == "List":  # kubectl prints a List for a List input
                stored = (stored.get("items") or [{}])[0]
            dropped = dropped_fields(obj, stored)
            if dropped:
                results.append((rel, name, "REFUSED: the apiserver dropped " + ", ".join(dropped)))
                continue
            mine = [n.split(": ", 1)[1] for n in notes if n.startswith(name + ": ")]
            results.append((rel, name, "ok" + "".join(f"; note: {n}" for n in mine)))
    return results


def check_limits(cp):
    """[(kustomization, what, result)]: each transformation of render.for_1_20 is still needed.
    deploy/base rendered for 1.20 but with one transformation undone goes to the apiserver
    (`--dry-run=server --validate=false`, so the apiserver decides, not kubectl); it must refuse
    the object or drop the field. "REFUSED" here means a transformation has become unnecessary."""
    base = "deploy/base"
    current = {o["kind"]: o for o in render(base)}
    ready = {o["kind"]: o for o in for_1_20(render(base))}
    ensure_namespaces(cp, {o["metadata"]["namespace"] for o in ready.values() if o["metadata"].get("namespace")})
    variants = []
    variants.append(("autoscaling/v2 HorizontalPodAutoscaler", current["HorizontalPodAutoscaler"]))
    pdb = json.loads(json.dumps(current["PodDisruptionBudget"]))
    variants.append(("policy/v1 PodDisruptionBudget", pdb))
    if "unhealthyPodEvictionPolicy" in pdb.get("spec", {}):
        beta = json.loads(json.dumps(ready["PodDisruptionBudget"]))
        beta["spec"]["unhealthyPodEvictionPolicy"] = pdb["spec"]["unhealthyPodEvictionPolicy"]
        variants.append(("PodDisruptionBudget spec.unhealthyPodEvictionPolicy", beta))
    pod = current["Deployment"]["spec"]["template"]["spec"]
    for i, c in enumerate(pod.get("containers", [])):
        if "sleep" in ((c.get("lifecycle") or {}).get("preStop") or {}):
            dep = json.loads(json.dumps(ready["Deployment"]))
            dep["spec"]["template"]["spec"]["containers"][i]["lifecycle"] = c["lifecycle"]
            variants.append(("preStop sleep action", dep))
    if any("matchLabelKeys" in t for t in pod.get("topologySpreadConstraints", [])):
        dep = json.loads(json.dumps(ready["Deployment"]))
        dep["spec"]["template"]["spec"]["topologySpreadConstraints"] = pod["topologySpreadConstraints"]
        variants.append(("topologySpreadConstraints matchLabelKeys", dep))
    results = []
    for what, obj in variants:
        rc, out, err = _apply(cp, [obj], dry_run=True, validate=False)
        if rc != 0:
            results.append((base, f"limit {what}", f"ok 1.20 refuses it: {err.splitlines()[0][:300]}"))
            continue
        stored = json.loads(out)
        stored = (stored.get("items") or [{}])[0] if stored.get("kind") == "List" else stored
        dropped = dropped_fields(obj, stored)
        if dropped:
            results.append((base, f"limit {what}", f"ok 1.20 drops {', '.join(dropped)}"))
        else:
            results.append((base, f"limit {what}", "REFUSED: 1.20 accepts it untransformed; drop the "
                            "transformation from render.py and docs/cluster-validation.md"))
    return results


def _expected_split():
    """The split the canary overlay documents: 'send 90 % / 10 % to the per-track Services
    sluice-stable and sluice-canary' in its kustomization.yaml."""
    with open(os.path.join(ROOT, CANARY, "kustomization.yaml")) as f:
        text = " ".join(line.lstrip("# ").strip() for line in f)
    m = re.search(r"(\d+)\s*%\s*/\s*(\d+)\s*%\s+to the per-track Services\s+(\S+)\s+and\s+(\S+?)[,.\s]", text)
    if not m:
        raise RuntimeError(f"{CANARY}/kustomization.yaml no longer documents the weighted split")
    return {m.group(3): int(m.group(1)), m.group(4): int(m.group(2))}


def check_routes(cp):
    """[(kustomization, kind/name, result)] for the canary overlay's HTTPRoute and GRPCRoute,
    applied for real; see the module docstring."""
    install_crds(cp)
    expected = _expected_split()
    routes = [o for o in for_1_20(render(CANARY)) if o["kind"] in ("HTTPRoute", "GRPCRoute")]
    if {o["kind"] for o in routes} != {"HTTPRoute", "GRPCRoute"}:
        return [(CANARY, "-", f"REFUSED: expected an HTTPRoute and a GRPCRoute, rendered {[_name(o) for o in routes]}")]
    parents = {(p.get("namespace") or r["metadata"]["namespace"], p["name"])
               for r in routes for p in r["spec"].get("parentRefs", [])}
    ensure_namespaces(cp, {ns for ns, _ in parents} | {r["metadata"]["namespace"] for r in routes})
    created = [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": TEST_GATEWAY_CLASS},
                "spec": {"controllerName": "sluice.dev/no-controller-runs-here"}}]
    created += [{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                 "metadata": {"name": name, "namespace": ns},
                 "spec": {"gatewayClassName": TEST_GATEWAY_CLASS,
                          "listeners": [{"name": "http", "protocol": "HTTP", "port": 80,
                                         "allowedRoutes": {"namespaces": {"from": "All"}}}]}}
                for ns, name in sorted(parents)]
    results = []
    rc, _, err = _apply(cp, created)
    if rc != 0:
        return [(CANARY, "Gateway", f"REFUSED: creating the parent Gateway: {err}")]
    try:
        for route in routes:
            name = _name(route)
            rc, _, err = _apply(cp, [route])
            if rc != 0:
                results.append((CANARY, name, f"REFUSED: {err}"))
                continue
            plural = CRD_SCOPES[("gateway.networking.k8s.io", route["kind"])][1]
            rc, out, err = _kubectl(cp, "get", f"{plural}.gateway.networking.k8s.io", "-n",
                                    route["metadata"]["namespace"], route["metadata"]["name"], "-o", "json")
            if rc != 0:
                results.append((CANARY, name, f"REFUSED: reading it back: {err}"))
                continue
            stored = json.loads(out)
            problems = []
            if stored.get("spec") != route["spec"]:
                problems.append("the stored spec differs from the one applied")
            for i, rule in enumerate(stored["spec"].get("rules", [])):
                weights = {}
                for ref in rule.get("backendRefs", []):
                    weights[ref["name"]] = weights.get(ref["name"], 0) + ref.get("weight", 1)
                total = sum(weights.values())
                if weights != expected:
                    problems.append(f"rule {i}: weights {weights}, the overlay documents {expected}")
                elif total <= 0:
                    problems.append(f"rule {i}: weights sum to {total}")
            if stored.get("status", {}).get("parents"):
                problems.append("has a status although no gateway controller runs")
            shares = " / ".join(f"{k} {100 * v // sum(expected.values())} %" for k, v in expected.items())
            results.append((CANARY, name, f"REFUSED: {'; '.join(problems)}" if problems else
                            f"ok stored unchanged, every rule splits {shares} (no controller: no status)"))
    finally:
        for obj in routes + created[::-1]:
            kind = obj["kind"]
            plural = CRD_SCOPES[("gateway.networking.k8s.io", kind)][1]
            ns = ["-n", obj["metadata"]["namespace"]] if obj["metadata"].get("namespace") else []
            _kubectl(cp, "delete", f"{plural}.gateway.networking.k8s.io", *ns, obj["metadata"]["name"],
                     "--ignore-not-found", "--wait=false")
    return results


def _crash_hint(work):
    """Kubernetes 1.20 vendors github.com/modern-go/reflect2 1.0.1, which faults in mapiterinit
    when built with Go >= 1.18: the apiserver dies on the first custom resource."""
    try:
        with open(os.path.join(work, "kube-apiserver.log"), errors="replace") as f:
            log = f.read()
    except OSError:
        return ""
    if "fatal error: fault" in log and "reflect2" in log:
        return ("\n  kube-apiserver crashed in github.com/modern-go/reflect2 (1.0.1, vendored by Kubernetes "
                "1.20, faults under Go >= 1.18): build it with reflect2 >= 1.0.2 (Debian's "
                "golang-github-modern-go-reflect2-dev) in vendor/; docs/cluster-validation.md")
    return ""


def main(argv):
    if len(argv) != 1:
        print("usage: python3 tests/cluster/dryrun.py BIN_DIR   (the bin/ of scripts/setup-cluster.sh's folder)",
              file=sys.stderr)
        return 2
    from controlplane import ControlPlane

    bin_dir = os.path.abspath(argv[0])
    if not os.path.isfile(os.path.join(bin_dir, "kube-apiserver")) and \
            os.path.isfile(os.path.join(bin_dir, "bin", "kube-apiserver")):
        bin_dir = os.path.join(bin_dir, "bin")
    work = tempfile.mkdtemp(prefix="sluice-dryrun-")
    cp = ControlPlane(bin_dir, work)
    start = time.monotonic()
    failed = False

    def give_up(_signum, _frame):
        raise TimeoutError(f"not done after {CLI_DEADLINE_SECONDS} s")
    signal.signal(signal.SIGALRM, give_up)
    signal.alarm(CLI_DEADLINE_SECONDS)
    try:
        cp.start()
        results = dry_run_all(cp) + check_routes(cp) + check_limits(cp)
        for rel, name, result in results:
            if result.startswith("REFUSED"):
                failed = True
                print(f"REFUSED {rel} {name}: {result[len('REFUSED: '):]}")
            else:
                print(f"ok {rel} {name}{result[2:]}")
        if not cp.apiserver.running():
            raise RuntimeError("kube-apiserver exited during the checks" + _crash_hint(work))
        refused = sum(r.startswith("REFUSED") for _, _, r in results)
        print(f"dryrun: {len(results) - refused} ok, {refused} refused, {len(kustomizations())} "
              f"kustomizations, Kubernetes 1.20 apiserver, {time.monotonic() - start:.0f} s")
    except Exception as e:  # noqa: BLE001 - report and fail; the control plane is stopped below
        failed = True
        print(f"dryrun: FAILED: {e}" + ("" if "reflect2" in str(e) else _crash_hint(work)))
        for log in ("kube-apiserver.log",):
            path = os.path.join(work, log)
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text = f.read()
                crash = text.find("\nfatal error")
                shown = text[crash:crash + 3000] if crash >= 0 else text[-3000:]
                print(f"--- {log} ({'the crash' if crash >= 0 else 'tail'})\n{shown}")
    finally:
        signal.alarm(0)
        cp.stop()
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"dryrun: logs kept in {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
