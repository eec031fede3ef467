"""Child processes that never outlive the test: each gets SIGKILL when the test process dies
(PR_SET_PDEATHSIG), its own process group, and a log file in the work folder.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends, not only the process:
start children from a thread that outlives them."""

import ctypes
import os
import signal
import subprocess

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.setpgid(0, 0)


class Child:
    def __init__(self, name, argv, log_path, env=None, netns=None):
        self.name = name
        self.log_path = log_path
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        """The exit status, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace=10):
        """SIGTERM, then SIGKILL to the whole group after `grace` seconds; returns the status."""
        self.signal(signal.SIGTERM)
        status = self.wait(grace)
        if status is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            status = self.proc.wait()
        self.log.close()
        return status

    def tail(self, lines=20):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return ""
