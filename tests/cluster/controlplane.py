"""The real control plane on loopback: Debian's etcd, and kube-apiserver and
kube-controller-manager built from Debian's `kubernetes` source package (scripts/setup-cluster.sh).

What differs from a production cluster, and why:
- Token authentication (one admin token) and --authorization-mode=AlwaysAllow: the tests check
  the controllers' decisions, not RBAC.
- The ServiceAccount admission plugin is off (no token controller runs), and the pods of
  deploy/ set automountServiceAccountToken: false anyway.
- --endpoint-reconciler-type=none: the apiserver listens on loopback, which Endpoints refuse.
- --enable-aggregator-routing: the aggregator reaches the custom-metrics API through its
  Service's Endpoints, since no kube-proxy gives the Service a working cluster IP.
- The controller-manager runs only the controllers the scenarios need, with the HPA's sync
  period shortened (HPA_SYNC_SECONDS; the default is 15 s).
"""

import os
import secrets
import socket
import subprocess

from kube import Kube, wait_for
from processes import Child

HPA_SYNC_SECONDS = 5
CONTROLLERS = "deployment,replicaset,horizontalpodautoscaling,garbagecollector,namespace,endpoint,endpointslice,disruption,serviceaccount"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ControlPlane:
    def __init__(self, bin_dir, work):
        self.bin = bin_dir
        self.work = work
        self.children = []
        self.token = secrets.token_hex(16)
        self.port = None
        self.kubeconfig = os.path.join(work, "kubeconfig")

    def _start(self, name, argv):
        child = Child(name, argv, os.path.join(self.work, f"{name}.log"))
        self.children.append(child)
        return child

    def start(self):
        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        os.makedirs(os.path.join(self.work, "pki"), exist_ok=True)
        key = os.path.join(self.work, "pki", "sa.key")
        pub = os.path.join(self.work, "pki", "sa.pub")
        subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True)
        tokens = os.path.join(self.work, "tokens.csv")
        with open(tokens, "w") as f:
            f.write(f'{self.token},admin,admin,"system:masters"\n')
        with open(self.kubeconfig, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://127.0.0.1:{self.port}
    insecure-skip-tls-verify: true
users:
- name: admin
  user:
    token: {self.token}
contexts:
- name: test
  context: {{cluster: test, user: admin}}
current-context: test
""")
        etcd = f"http://127.0.0.1:{etcd_port}"
        self.etcd = self._start("etcd", [
            "etcd", "--name", "sluice-test", "--data-dir", os.path.join(self.work, "etcd"),
            "--listen-client-urls", etcd, "--advertise-client-urls", etcd,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"sluice-test=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync"])
        self.apiserver = self._start("kube-apiserver", [
            os.path.join(self.bin, "kube-apiserver"),
            "--etcd-servers", etcd,
            "--bind-address", "127.0.0.1", "--secure-port", str(self.port),
            "--cert-dir", os.path.join(self.work, "pki"),
            "--token-auth-file", tokens,
            "--authorization-mode", "AlwaysAllow",
            "--service-account-key-file", pub,
            "--service-account-signing-key-file", key,
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--disable-admission-plugins", "ServiceAccount",
            "--service-cluster-ip-range", "10.214.0.0/16",
            "--endpoint-reconciler-type", "none",
            "--enable-aggregator-routing",
            "--insecure-port", "0"])
        self.api = Kube("127.0.0.1", self.port, self.token)
        wait_for("kube-apiserver healthy", lambda: self._healthy(), timeout=120, interval=0.5)
        self.controller_manager = self._start("kube-controller-manager", [
            os.path.join(self.bin, "kube-controller-manager"),
            "--kubeconfig", self.kubeconfig,
            "--controllers", CONTROLLERS,
            "--leader-elect=false",
            "--bind-address", "127.0.0.1", "--secure-port", "0", "--port", "0",
            "--service-account-private-key-file", key,
            "--horizontal-pod-autoscaler-sync-period", f"{HPA_SYNC_SECONDS}s",
            "--v", "2"])
        return self

    def _healthy(self):
        if not self.apiserver.running():
            raise RuntimeError("kube-apiserver exited:\n" + self.apiserver.tail())
        return self.api.request("GET", "/readyz") == "ok"

    def kubectl(self, *args, input=None, check=True):
        return subprocess.run([os.path.join(self.bin, "kubectl"), "--kubeconfig", self.kubeconfig, *args],
                              input=input, capture_output=True, text=True, check=check)

    def stop(self):
        for child in reversed(self.children):
            child.stop(grace=10)
