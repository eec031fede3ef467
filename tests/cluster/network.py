"""Pod addresses from network namespaces the test makes itself.

The apiserver refuses loopback addresses in Endpoints, so every pod gets a real address: a
network namespace per pod, joined by a veth pair to one bridge in the host namespace. The host
side of the bridge carries the gateway address, which also serves the stand-in custom-metrics
API (the aggregator reaches it through a Service's Endpoints). Everything is removed on close,
and leftovers of an earlier run that died are removed on open.
"""

import ipaddress
import subprocess
import threading

BRIDGE = "sluicebr0"
PREFIX = "sluicepod"
SUBNET = ipaddress.ip_network("10.213.0.0/24")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class PodNetwork:
    def __init__(self):
        hosts = list(SUBNET.hosts())
        self.gateway = str(hosts[0])
        self._free = [str(a) for a in hosts[1:200]]
        self._used = {}  # address -> namespace name
        self._lock = threading.Lock()
        self._serial = 0

    def open(self):
        self.close()
        ip("link", "add", BRIDGE, "type", "bridge")
        ip("addr", "add", f"{self.gateway}/{SUBNET.prefixlen}", "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        return self

    def close(self):
        for ns in ip("netns", "list", check=False).stdout.split("\n"):
            name = ns.split(" ")[0]
            if name.startswith(PREFIX):
                ip("netns", "delete", name, check=False)
        ip("link", "delete", BRIDGE, check=False)

    def add(self):
        """A new namespace with its own address; returns (namespace, address)."""
        with self._lock:
            if not self._free:
                raise RuntimeError("no pod address left in " + str(SUBNET))
            address = self._free.pop(0)
            self._serial += 1
            ns = f"{PREFIX}{self._serial}"
            self._used[address] = ns
        host_end, pod_end = f"slh{self._serial}", f"slp{self._serial}"
        ip("netns", "add", ns)
        ip("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        ip("link", "set", pod_end, "netns", ns)
        ip("link", "set", host_end, "master", BRIDGE)
        ip("link", "set", host_end, "up")
        ip("-n", ns, "addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", pod_end)
        ip("-n", ns, "link", "set", pod_end, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", ns, "route", "add", "default", "via", self.gateway)
        return ns, address

    def remove(self, address):
        with self._lock:
            ns = self._used.pop(address, None)
        if ns:
            ip("netns", "delete", ns, check=False)  # takes the veth pair with it
            with self._lock:
                self._free.append(address)
