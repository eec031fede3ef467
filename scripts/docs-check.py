#!/usr/bin/env python3
"""make docs-check: the documentation, run and compared against the real thing.

1. Runs the examples. Every fenced ```sh/bash/shell/console and ```python block of
   README.md, docs/*.md and load-tests/README.md runs against a real Sluice (the debug
   binary) serving a copy of the bundled models/ on free loopback ports, and every
   ```toml block is loaded as a model's config.toml by a real Sluice, which must accept
   it. A block runs unless an HTML comment right before it says otherwise:

     <!-- docs-check: skip — REASON -->     not run; listed with its reason at the end
     <!-- docs-check: setup: COMMAND -->    a shell line run before the block (unseen by readers)
     <!-- docs-check: run-with OPTION... [— comment] -->, OPTIONs:
       session=NAME       the blocks of one file with this NAME behave like one terminal:
                          shell variables carry over, processes they start in the background
                          live until the last of them, and they get ports of their own (for
                          blocks that start their own server)
       short-load         sluice-load steps last at most 1 s (no warm-up, at most 200
                          requests), so a sweep is checked in seconds
       expect-status=N[,M...]  curl does not fail on these HTTP statuses, each of them must
                          be seen, and no other status of 400 or more may be
       timeout=SECONDS    instead of 120

   How blocks run: shell blocks with `bash -euo pipefail`, Python blocks with the
   conformance venv's Python (the real tritonclient and numpy), each in its own process
   group that is killed afterwards, with a timeout, in a scratch copy of the repository
   (so examples that write files or publish model versions change nothing here).
   `localhost:8000`, `127.0.0.1:8000`, `--http-port 8000` (and 8001, and sluice-load's echo
   port 18080) are rewritten to the ports chosen here. curl is a shell function that adds
   `--fail-with-body --show-error`, so an HTTP error fails the block. In the scratch copy,
   target/release/sluice and target/release/sluice-load run the debug builds: sluice-load
   gets `--url`/`--grpc-url` of the server here unless the block gives them, and fails when
   any of its requests failed; `sluice serve` gets `--host 127.0.0.1` and the block's ports
   unless the block gives them, and `sluice healthcheck` the block's server's URL.

2. Generated checks, which compare instead of keeping a list:
   - every flag of `sluice serve --help` is in docs/configuration.md's flag table and every
     flag there is in `--help`, with the same environment variable and default;
   - every config.toml key the parser accepts, at the top level and in every nested table,
     and every value of its enumerations, is in docs/configuration.md's key table, and
     every key there is accepted: enumerated from the parser's own `unknown field ...,
     expected one of ...` answers, got from a real server loading deliberately wrong
     configs;
   - every metric name `sluice_*` in the docs exists in a live /metrics (after the
     examples ran; a second server provokes a failed load, a refused request and a
     refused connection), except METRIC_EXCEPTIONS below.

usage: scripts/docs-check.py [--bin PATH] [--python PATH] [--only TEXT] [--list] [--keep]
  --only TEXT   run only the blocks whose "file:line" starts with TEXT (no generated checks)
  --list        print every block and what would happen to it, run nothing
  --keep        keep the scratch folder (its path is printed)
Exit status: 0 when everything passed, 1 otherwise, 2 on a usage error.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
        "load-tests/README.md"]
SHELL_LANGS = {"sh", "bash", "shell", "console"}
PYTHON_LANGS = {"python", "py", "python3"}
TOML_LANGS = {"toml"}
DEFAULT_TIMEOUT = 120
# Ignored build outputs and tools the scratch copy links to instead of copying.
LINKED = [".onnxruntime", ".venv-conformance", ".venv-tools", ".tools", ".cache"]
# Documented metric names that a live server here cannot show, each with why.
_REMOTE = ("labelled per remote repository, so present only with an object-store repository; "
           "tests/it/remote/ reads it from servers on real moto and Azurite stores")
METRIC_EXCEPTIONS: dict[str, str] = {
    name: _REMOTE
    for name in (
        "sluice_repository_download_bytes_total",
        "sluice_repository_download_duration_seconds",
        "sluice_repository_failures_total",
        "sluice_repository_syncs_total",
        "sluice_repository_last_sync_timestamp_seconds",
        "sluice_repository_cache_bytes",
    )
}
# A name no config key has, to make the parser list the keys it accepts.
UNKNOWN = "docs_check_unknown"


def say(*args):
    print(*args, flush=True)


# --------------------------------------------------------------------------- blocks

MARKER = re.compile(r"^\s*<!--\s*docs-check:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)[^`]*$")
SEPARATORS = "—–-: "
RUN_WITH = {"session", "short-load", "expect-status", "timeout"}


class DocError(Exception):
    pass


class Block:
    def __init__(self, file, line, lang, code):
        self.file, self.line, self.lang, self.code = file, line, lang, code
        self.skip = None
        self.setup = []
        self.session = None
        self.short_load = False
        self.expect = []
        self.timeout = DEFAULT_TIMEOUT

    @property
    def where(self):
        return f"{self.file}:{self.line}"

    @property
    def kind(self):
        if self.lang in SHELL_LANGS:
            return "shell"
        if self.lang in PYTHON_LANGS:
            return "python"
        if self.lang in TOML_LANGS:
            return "toml"
        return None


def parse_marker(block, body, where):
    if body.startswith("skip"):
        reason = body[4:].lstrip(SEPARATORS).strip()
        if not reason:
            raise DocError(f"{where}: a skip marker needs a reason: <!-- docs-check: skip — why -->")
        block.skip = reason
    elif body.startswith("setup:"):
        block.setup.append(body[len("setup:"):].strip())
    elif body.startswith("run-with"):
        options = re.split(r"\s+(?:—|--)\s+", body[len("run-with"):], maxsplit=1)[0].split()
        if not options:
            raise DocError(f"{where}: run-with needs an option ({', '.join(sorted(RUN_WITH))})")
        for option in options:
            key, _, value = option.partition("=")
            if key not in RUN_WITH:
                raise DocError(f"{where}: unknown run-with option '{key}' "
                               f"(known: {', '.join(sorted(RUN_WITH))})")
            if key == "session":
                block.session = value or "default"
            elif key == "short-load":
                block.short_load = True
            elif key == "expect-status":
                block.expect = [int(s) for s in value.split(",") if s]
                if not block.expect:
                    raise DocError(f"{where}: expect-status needs HTTP statuses")
            elif key == "timeout":
                block.timeout = int(value)
    else:
        raise DocError(f"{where}: unknown docs-check marker '{body}' "
                       "(skip — REASON, setup: COMMAND, or run-with OPTIONS)")


def extract(file):
    """The fenced blocks of one Markdown file, with their markers."""
    lines = (REPO / file).read_text().splitlines()
    blocks, pending, i = [], [], 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            pending.append((i + 1, m.group(1)))
            i += 1
            continue
        f = FENCE.match(line)
        if not f:
            if pending:
                raise DocError(f"{file}:{pending[0][0]}: a docs-check marker must stand right "
                               "before a fenced block")
            i += 1
            continue
        indent, fence = len(f.group("indent")), f.group("fence")
        lang = f.group("info").lower()
        body, j = [], i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) <= {fence[0]}:
                break
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        block = Block(file, i + 1, lang, "\n".join(body) + "\n")
        for at, text in pending:
            parse_marker(block, text, f"{file}:{at}")
        if pending and block.kind is None:
            raise DocError(f"{file}:{pending[0][0]}: marker before a ```{lang} block, which is "
                           "never run")
        pending = []
        blocks.append(block)
        i = j + 1
    if pending:
        raise DocError(f"{file}:{pending[0][0]}: a docs-check marker at the end of the file")
    return blocks


def console_commands(code):
    """The commands of a console block: the `$ ` lines and their continuations."""
    out, cont = [], False
    for line in code.splitlines():
        if line.startswith("$ ") or cont:
            text = line[2:] if line.startswith("$ ") and not cont else line
            out.append(text)
            cont = text.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def rewrite_ports(code, ports):
    host = r"((?:localhost|127\.0\.0\.1|0\.0\.0\.0|\[::1\]):)"
    flag = r"(--(?:http|grpc|metrics)-port[ =])"
    for pattern in (host, flag):
        code = re.sub(pattern + r"(8000|8001|18080)\b",
                      lambda m: m.group(1) + str(ports[int(m.group(2))]), code)
    return code


# --------------------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(proc, grace=5.0):
    """Ends a process group this script started (its leader is `proc`)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # the leader is gone; members it left behind still share its group id
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Server:
    """A `sluice serve` of this script, bounded in time, always stopped."""

    def __init__(self, name, binary, repository, workdir, extra=()):
        self.name, self.http_port, self.grpc_port = name, free_port(), free_port()
        self.log = workdir / f"{name}.log"
        args = ["timeout", "-k", "5", "1800", str(binary), "serve",
                "--model-repository", str(repository), "--host", "127.0.0.1",
                "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port),
                "--log", "warn", *extra]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=clean_env(),
                                         start_new_session=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.http_port}"

    def wait(self, path, deadline_s=180):
        deadline = time.time() + deadline_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the {self.name} server exited ({self.proc.returncode}):\n"
                                   + self.log.read_text()[-4000:])
            try:
                if http("GET", self.url + path, timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the {self.name} server did not answer 200 on {path} within "
                           f"{deadline_s} s:\n" + self.log.read_text()[-4000:])

    def stop(self):
        kill_group(self.proc, grace=15.0)


def clean_env():
    """This environment without SLUICE_* settings, which would change the servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}


# --------------------------------------------------------------------------- scratch copy

SLUICE_LOAD_WRAPPER = r'''#!{python}
# docs-check: target/release/sluice-load runs the debug build against the check's server.
import json, os, subprocess, sys, tempfile
real = os.environ["DOCS_CHECK_TARGET"] + "/debug/sluice-load"
args = sys.argv[1:]
if any(a in ("-h", "--help", "-V", "--version") or a.startswith("--serve-echo") for a in args):
    os.execv(real, [real] + args)
def value_of(flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return i + 1
    return None
def has(flag):
    return any(a == flag or a.startswith(flag + "=") for a in args)
if not has("--url"):
    args += ["--url", os.environ["DOCS_CHECK_URL"]]
if not has("--grpc-url"):
    args += ["--grpc-url", os.environ["DOCS_CHECK_GRPC_URL"]]
if os.environ.get("DOCS_CHECK_SHORT_LOAD"):
    for flag, cap in (("--duration-secs", 1.0), ("--warmup-secs", 0.0), ("--requests", 200)):
        i = value_of(flag)
        if i is not None:
            args[i] = str(min(type(cap)(args[i]), cap))
    if not has("--duration-secs"):
        args += ["--duration-secs", "1"]
out = value_of("--output")
tmp = None
if out is None:
    tmp = tempfile.NamedTemporaryFile(suffix=".json", delete=False, dir=os.environ["DOCS_CHECK_TREE"])
    args += ["--output", tmp.name]
    out_path = tmp.name
else:
    out_path = args[out]
rc = subprocess.call([real] + args)
if rc != 0:
    sys.exit(rc)
steps = json.load(open(out_path))
if tmp:
    os.unlink(tmp.name)
failed = sum(s["error_count"] for s in steps)
if failed:
    print(f"docs-check: sluice-load had {{failed}} failed requests: "
          f"{{[s['errors'] for s in steps]}}", file=sys.stderr)
    sys.exit(1)
'''

SLUICE_WRAPPER = r'''#!/usr/bin/env bash
# docs-check: target/release/sluice runs the debug build; `serve` gets loopback and the
# block's ports unless the block gives them, and `healthcheck` probes the block's server.
set -euo pipefail
real="$DOCS_CHECK_TARGET/debug/sluice"
if [[ "${{1:-}}" == serve ]]; then
  extra=()
  [[ " $* " == *" --host"* ]] || extra+=(--host 127.0.0.1)
  [[ " $* " == *" --http-port"* ]] || extra+=(--http-port "$DOCS_CHECK_HTTP_PORT")
  [[ " $* " == *" --grpc-port"* ]] || extra+=(--grpc-port "$DOCS_CHECK_GRPC_PORT")
  shift
  exec "$real" serve "${{extra[@]}}" "$@"
fi
if [[ "${{1:-}}" == healthcheck && " $* " != *" --url"* ]]; then
  exec "$real" healthcheck --url "$DOCS_CHECK_URL/v2/health/ready" "${{@:2}}"
fi
exec "$real" "$@"
'''


def make_scratch(target):
    """A copy of the repository's files (tracked and new), with links to build outputs."""
    scratch = Path(tempfile.mkdtemp(prefix="sluice-docs-check."))
    tree = scratch / "repo"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO / name
        if src.is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tree / name)
    for name in LINKED:
        if (REPO / name).exists():
            (tree / name).symlink_to(REPO / name)
    (tree / "target" / "release").mkdir(parents=True)
    (tree / "target" / "debug").symlink_to(target / "debug")
    wrappers = {"sluice-load": SLUICE_LOAD_WRAPPER.format(python=sys.executable),
                "sluice": SLUICE_WRAPPER.format()}
    for name, text in wrappers.items():
        path = tree / "target" / "release" / name
        path.write_text(text)
        path.chmod(0o755)
    return scratch, tree


SHELL_PRELUDE = r'''cd "$DOCS_CHECK_TREE"
__dc_vars=$(compgen -v)
__dc_save() {
  [[ -n "${DOCS_CHECK_STATE_OUT:-}" ]] || return 0
  local __dc_v
  for __dc_v in $(compgen -v); do
    case "$__dc_v" in __dc_*|BASH*|FUNCNAME|PIPESTATUS|_|PWD|OLDPWD|SHLVL|LINENO|RANDOM|SECONDS|SRANDOM|EPOCH*|COLUMNS|LINES|HISTCMD|COMP_*|DIRSTACK|GROUPS) continue ;; esac
    grep -qxF -- "$__dc_v" <<<"$__dc_vars" || declare -p "$__dc_v" 2>/dev/null || true
  done >"$DOCS_CHECK_STATE_OUT"
  env -0 >"$DOCS_CHECK_ENV_OUT"
}
trap __dc_save EXIT
# curl fails on an HTTP error (unless the block expects that status) and reports each status.
curl() {
  local fmt="" args=()
  while (($#)); do
    case "$1" in
      -w|--write-out) fmt=$2; shift 2 ;;
      --write-out=*) fmt=${1#--write-out=}; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  local fail=(--fail-with-body)
  [[ -z "${DOCS_CHECK_EXPECT_STATUS:-}" ]] || fail=()
  command curl "${fail[@]}" --show-error --connect-timeout 10 "${args[@]}" \
    --write-out "${fmt}%{stderr}docs-check: HTTP %{http_code} %{method} %{url_effective}\n"
}
if [[ -n "${DOCS_CHECK_STATE_IN:-}" && -f "${DOCS_CHECK_STATE_IN:-}" ]]; then
  source "$DOCS_CHECK_STATE_IN"
fi
'''


class Session:
    def __init__(self, name, scratch, ports):
        self.name, self.ports = name, ports
        self.state = scratch / f"session-{name}.state"
        self.env = scratch / f"session-{name}.env"
        self.procs = []

    def saved_env(self):
        if not self.env.exists():
            return {}
        pairs = (item.split("=", 1) for item in self.env.read_bytes().decode().split("\0")
                 if "=" in item)
        return {k: v for k, v in pairs
                if k not in ("PWD", "OLDPWD", "SHLVL", "_") and not k.startswith("DOCS_CHECK_")}

    def end(self):
        for proc in self.procs:
            kill_group(proc)
        self.procs.clear()


class Runner:
    def __init__(self, args, scratch, tree, main):
        self.args, self.scratch, self.tree, self.main = args, scratch, tree, main
        self.echo_port = free_port()
        self.main_ports = {8000: main.http_port, 8001: main.grpc_port, 18080: self.echo_port}
        self.sessions = {}
        self.count = 0

    def session(self, block):
        key = (block.file, block.session)
        if key not in self.sessions:
            ports = {8000: free_port(), 8001: free_port(), 18080: free_port()}
            self.sessions[key] = Session(f"{len(self.sessions)}", self.scratch, ports)
        return self.sessions[key]

    def end_sessions(self, file=None):
        for key in [k for k in self.sessions if file is None or k[0] == file]:
            self.sessions.pop(key).end()

    def run(self, block):
        """Runs one shell or Python block; returns (ok, output, seconds)."""
        self.count += 1
        session = self.session(block) if block.session else None
        ports = session.ports if session else self.main_ports
        env = clean_env()
        if session:
            env.update(session.saved_env())
        env.update({
            "DOCS_CHECK": "1",
            "DOCS_CHECK_TREE": str(self.tree),
            "DOCS_CHECK_TARGET": str(self.args.target),
            "DOCS_CHECK_URL": f"http://127.0.0.1:{ports[8000]}",
            "DOCS_CHECK_GRPC_URL": f"http://127.0.0.1:{ports[8001]}",
            "DOCS_CHECK_HTTP_PORT": str(ports[8000]),
            "DOCS_CHECK_GRPC_PORT": str(ports[8001]),
            "PYTHONUNBUFFERED": "1",
        })
        if block.short_load:
            env["DOCS_CHECK_SHORT_LOAD"] = "1"
        if block.expect:
            env["DOCS_CHECK_EXPECT_STATUS"] = ",".join(map(str, block.expect))
        code = rewrite_ports(block.code if block.lang != "console" else console_commands(block.code),
                             ports)
        setup = "\n".join(rewrite_ports(s, ports) for s in block.setup)
        stem = self.scratch / f"block-{self.count}"
        if block.kind == "shell":
            if session:
                env["DOCS_CHECK_STATE_IN"] = str(session.state)
                env["DOCS_CHECK_STATE_OUT"] = str(session.state)
                env["DOCS_CHECK_ENV_OUT"] = str(session.env)
            script = stem.with_suffix(".sh")
            script.write_text(f"{SHELL_PRELUDE}\n# setup\n{setup}\n# {block.where}\n{code}")
            argv = ["bash", "-euo", "pipefail", str(script)]
        else:
            if setup:
                subprocess.run(["bash", "-euo", "pipefail", "-c", setup], cwd=self.tree,
                               env=env, check=True, timeout=60)
            script = stem.with_suffix(".py")
            script.write_text(code)
            argv = [str(self.args.python), "-u", str(script)]
        log = stem.with_suffix(".log")
        start = time.time()
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=self.tree, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=block.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out, rc = True, None
                kill_group(proc, grace=1.0)
            except BaseException:  # interrupted: the block's processes go too
                kill_group(proc, grace=1.0)
                raise
        seconds = time.time() - start
        if session and not timed_out:
            session.procs.append(proc)
        else:
            kill_group(proc, grace=2.0)
        output = log.read_text(errors="replace")
        problems = []
        if timed_out:
            problems.append(f"timed out after {block.timeout} s")
        elif rc != 0:
            problems.append(f"exit status {rc}")
        statuses = [int(s) for s in re.findall(r"docs-check: HTTP (\d{3})", output)]
        if block.expect:
            unexpected = sorted({s for s in statuses if s >= 400 and s not in block.expect})
            missing = [s for s in block.expect if s not in statuses]
            if unexpected:
                problems.append(f"unexpected HTTP status {unexpected}")
            if missing:
                problems.append(f"expected HTTP status {missing} not seen")
        if problems:
            return False, "; ".join(problems), output, code, seconds
        return True, "", output, code, seconds


# --------------------------------------------------------------------------- generated checks

def section(text, heading):
    """The lines under a Markdown heading, up to the next heading of its level or above."""
    lines = text.splitlines()
    level = heading.split(" ")[0]
    for i, line in enumerate(lines):
        if line.strip() == heading:
            out = []
            for rest in lines[i + 1:]:
                m = re.match(r"^(#+) ", rest)
                if m and len(m.group(1)) <= len(level):
                    break
                out.append(rest)
            return out
    raise DocError(f"docs/configuration.md has no heading '{heading}'")


def table_rows(lines):
    rows = []
    for line in lines:
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
    return rows[1:]  # without the header


def check_flags(binary):
    """`sluice serve --help` and docs/configuration.md's flag table name the same flags."""
    help_text = subprocess.run([str(binary), "serve", "--help"], check=True,
                               capture_output=True, text=True, env=clean_env()).stdout
    flags, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r"^\s{2,}(?:-\w, )?--([a-z0-9][a-z0-9-]*)", line)
        if m:
            current = m.group(1)
            flags[current] = line
        elif current and line.startswith(" "):
            flags[current] += " " + line.strip()
        else:
            current = None
    flags.pop("help", None)
    doc = (REPO / "docs/configuration.md").read_text()
    documented = {}
    for cells in table_rows(section(doc, "## Server flags")):
        for flag in re.findall(r"`--([a-z0-9][a-z0-9-]*)", cells[0]):
            documented[flag] = cells
    problems = []
    for flag in sorted(set(flags) - set(documented)):
        problems.append(f"--{flag} is in `sluice serve --help` but not in docs/configuration.md's "
                        "flag table")
    for flag in sorted(set(documented) - set(flags)):
        problems.append(f"--{flag} is in docs/configuration.md's flag table but not in "
                        "`sluice serve --help`")
    for flag in sorted(set(flags) & set(documented)):
        text, cells = flags[flag], documented[flag]
        env = re.search(r"\[env: (SLUICE_[A-Z0-9_]+)", text)
        if env and env.group(1) not in re.findall(r"SLUICE_[A-Z0-9_]+", cells[1]):
            problems.append(f"--{flag}: --help says {env.group(1)}, the docs say {cells[1]}")
        default = re.search(r"\[default: ([^\]]*)\]", text)
        if default and default.group(1) not in cells[2].replace("`", ""):
            problems.append(f"--{flag}: --help says default {default.group(1)}, the docs say "
                            f"{cells[2]}")
    return len(flags), problems


PROBE_CONFIGS = {
    # model name: (config.toml text, the table its unknown-field error lists)
    "cfg_top": (f"{UNKNOWN} = 1\n", "top"),
    "cfg_dynamic_batching": (f"[dynamic_batching]\n{UNKNOWN} = 1\n", "dynamic_batching"),
    "cfg_warmup": (f"[[warmup]]\n{UNKNOWN} = 1\n", "warmup"),
    "cfg_version_policy": (f"version_policy = {{ {UNKNOWN} = 1 }}\n", "version_policy"),
    "cfg_kind": (f'[[execution_providers]]\nkind = "{UNKNOWN}"\n', "kind"),
    "cfg_cpu": (f'[[execution_providers]]\nkind = "cpu"\n{UNKNOWN} = 1\n', "cpu"),
    "cfg_cuda": (f'[[execution_providers]]\nkind = "cuda"\n{UNKNOWN} = 1\n', "cuda"),
    "cfg_tensorrt": (f'[[execution_providers]]\nkind = "tensorrt"\n{UNKNOWN} = 1\n', "tensorrt"),
    "cfg_outputs": (f"[outputs.probabilities]\n{UNKNOWN} = 1\n", "outputs"),
    "cfg_arena_extend_strategy": (
        f'[[execution_providers]]\nkind = "cuda"\narena_extend_strategy = "{UNKNOWN}"\n',
        "cuda.arena_extend_strategy"),
    "cfg_cudnn_conv_algo_search": (
        f'[[execution_providers]]\nkind = "cuda"\ncudnn_conv_algo_search = "{UNKNOWN}"\n',
        "cuda.cudnn_conv_algo_search"),
}


def make_probe_repository(root, toml_blocks):
    """Models whose config.toml the parser must refuse (to list what it accepts), the
    docs' config.toml examples, and a corrupt model (a failed load)."""
    iris = REPO / "models/iris/1/model.onnx"
    configs = {name: text for name, (text, _) in PROBE_CONFIGS.items()}
    for i, block in enumerate(toml_blocks):
        configs[f"doc_{i}"] = block.code
    for name, text in configs.items():
        (root / name / "1").mkdir(parents=True)
        shutil.copy(iris, root / name / "1" / "model.onnx")
        (root / name / "config.toml").write_text(text)
    (root / "corrupt" / "1").mkdir(parents=True)
    shutil.copy(REPO / "tests/models/corrupt/1/model.onnx", root / "corrupt/1/model.onnx")


def expected_names(reason):
    m = re.search(rf"unknown (?:field|variant) `{UNKNOWN}`, expected (.*)", reason)
    if not m:
        return None
    return set(re.findall(r"`([^`]+)`", m.group(1)))


def check_keys(index):
    """The parser's keys (from its own errors) and docs/configuration.md's key table agree."""
    reasons = {row["name"]: row.get("reason", "") for row in index}
    accepted = {}
    problems = []
    for name, (_, table) in PROBE_CONFIGS.items():
        names = expected_names(reasons.get(name, ""))
        if names is None:
            problems.append(f"the parser did not list the keys of {table}: {name} has "
                            f"reason {reasons.get(name)!r}")
            continue
        accepted[table] = names
    if problems:
        return 0, problems
    doc = (REPO / "docs/configuration.md").read_text()
    rows = table_rows(section(doc, "### Keys"))
    documented = {}
    for cells in rows:
        for key in re.findall(r"`([^`]+)`", cells[0]):
            documented[key] = " ".join(cells[1:])
    wanted = set()
    for key in accepted["top"]:
        if key in ("dynamic_batching", "warmup", "execution_providers", "outputs"):
            continue  # documented by their own keys below
        wanted.add(key)
    wanted |= {f"dynamic_batching.{k}" for k in accepted["dynamic_batching"]}
    wanted |= {f"warmup[].{k}" for k in accepted["warmup"]}
    wanted |= {f"outputs.<name>.{k}" for k in accepted["outputs"]}
    wanted.add("execution_providers[].kind")
    for kind in accepted["kind"]:
        wanted |= {f"{kind}.{k}" for k in accepted.get(kind, ())}
    for key in sorted(wanted - set(documented)):
        problems.append(f"config.toml key {key} is accepted by the parser but not in "
                        "docs/configuration.md's key table")
    for key in sorted(set(documented) - wanted):
        problems.append(f"docs/configuration.md's key table has {key}, which the parser refuses")
    values = {"execution_providers[].kind": accepted["kind"],
              "version_policy": accepted["version_policy"],
              "cuda.arena_extend_strategy": accepted["cuda.arena_extend_strategy"],
              "cuda.cudnn_conv_algo_search": accepted["cuda.cudnn_conv_algo_search"]}
    for key, names in values.items():
        row = documented.get(key, "")
        for value in sorted(names):
            if not re.search(rf"\b{re.escape(value)}\b", row):
                problems.append(f"config.toml {key} accepts {value}, which its row in "
                                "docs/configuration.md does not mention")
    return len(wanted), problems


def check_toml_blocks(index, toml_blocks):
    reasons = {row["name"]: row.get("reason", "") for row in index}
    problems = []
    for i, block in enumerate(toml_blocks):
        reason = reasons.get(f"doc_{i}", "")
        if "config.toml" in reason:
            problems.append(f"{block.where}: the example config.toml is refused: {reason}")
    return problems


def metric_names(text):
    names = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))
    return names


def documented_metrics():
    found = {}
    for file in DOCS:
        for n, line in enumerate((REPO / file).read_text().splitlines(), 1):
            for name in re.findall(r"(?<![\w:])(sluice_[a-z0-9_]+)(?![\w:])", line):
                found.setdefault(name, f"{file}:{n}")
    return found


def provoke(probe, token):
    """A refused request (no token) and a refused connection (idle past the handshake
    timeout) on the probe server."""
    status, _ = http("GET", probe.url + "/v2/models/cfg_top")
    assert status == 401, f"the probe server answered {status} without a token"
    with socket.create_connection(("127.0.0.1", probe.http_port), timeout=10) as s:
        s.settimeout(10)
        try:
            s.recv(1)  # the server closes it after --handshake-timeout-secs
        except OSError:
            pass


def check_metrics(main, probe, token):
    auth = {"authorization": f"Bearer {token}"}
    # one inference of our own, so the request families exist whatever ran before
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                                   "data": [5.1, 3.5, 1.4, 0.2]}]}).encode()
    status, text = http("POST", main.url + "/v2/models/iris/infer", body,
                        {"content-type": "application/json"})
    assert status == 200, text
    provoke(probe, token)
    live = metric_names(http("GET", main.url + "/metrics")[1])
    live |= metric_names(http("GET", probe.url + "/metrics", headers=auth)[1])
    problems = []
    docs = documented_metrics()
    for name, where in sorted(docs.items()):
        if name in METRIC_EXCEPTIONS:
            if name in live:
                problems.append(f"{name} is exported now: remove it from METRIC_EXCEPTIONS "
                                "in scripts/docs-check.py")
            continue
        if name not in live:
            problems.append(f"{where}: {name} is not in /metrics")
    return len(docs), problems


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", default="target/debug/sluice")
    parser.add_argument("--python", default=".venv-conformance/bin/python")
    parser.add_argument("--only")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.chdir(REPO)
    binary = (REPO / args.bin).resolve()
    args.target = binary.parent.parent
    args.python = REPO / args.python  # the venv's python is a link: keep its path

    try:
        blocks = [b for file in DOCS for b in extract(file)]
    except DocError as e:
        say(f"docs-check: {e}")
        return 1
    runnable = [b for b in blocks if b.kind in ("shell", "python")]
    toml_blocks = [b for b in blocks if b.kind == "toml" and not b.skip]
    selected = [b for b in runnable if not args.only or b.where.startswith(args.only)]
    if args.list:
        for b in blocks:
            if b.kind is None:
                continue
            what = f"skip — {b.skip}" if b.skip else "run" + (
                f" (session {b.session})" if b.session else "")
            if b.kind == "toml" and not b.skip:
                what = "load as a model's config.toml"
            say(f"{b.where:32} {b.lang:7} {what}")
        return 0
    needs = [(binary, "cargo build --bin sluice"),
             (args.python, "make conformance (it makes .venv-conformance)")]
    if any("sluice-load" in b.code for b in selected if not b.skip):
        needs.append((args.target / "debug/sluice-load", "cargo build -p sluice-load"))
    for path, hint in needs:
        if not path.exists():
            say(f"docs-check: {path} is missing: run {hint} first (make docs-check does)")
            return 2

    started = time.time()
    scratch, tree = make_scratch(args.target)
    say(f"docs-check: scratch copy in {tree}")
    servers, runner, failures, skipped = [], None, [], []
    token = "docs-check-" + os.urandom(8).hex()

    def stop(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        main_server = Server("main", binary, tree / "models", scratch)
        servers.append(main_server)
        probe = None
        if not args.only:
            probe_repo = scratch / "probe-models"
            make_probe_repository(probe_repo, toml_blocks)
            probe = Server("probe", binary, probe_repo, scratch,
                           ["--auth-admin-token", token, "--handshake-timeout-secs", "1",
                            "--auth-protect-metrics"])
            servers.append(probe)
        main_server.wait("/v2/health/ready")
        say(f"docs-check: sluice serving models/ on 127.0.0.1:{main_server.http_port} (HTTP) "
            f"and :{main_server.grpc_port} (gRPC)")

        if not args.only:
            n, problems = check_flags(binary)
            report("flags: `sluice serve --help` = docs/configuration.md", n, problems, failures)
            probe.wait("/v2/health/live")
            index = []
            deadline = time.time() + 120
            while time.time() < deadline:
                status, text = http("POST", probe.url + "/v2/repository/index", b"{}",
                                    {"authorization": f"Bearer {token}"})
                index = json.loads(text) if status == 200 else []
                if index and all(r.get("state") != "LOADING" for r in index):
                    break
                time.sleep(0.2)
            n, problems = check_keys(index)
            report("config.toml keys: the parser = docs/configuration.md", n, problems, failures)
            problems = check_toml_blocks(index, toml_blocks)
            report("config.toml examples parse", len(toml_blocks), problems, failures)

        runner = Runner(args, scratch, tree, main_server)
        if not args.only:
            for block in (b for b in blocks if b.kind == "toml" and b.skip):
                skipped.append(block)
                say(f"skip  {block.where} ({block.lang}) — {block.skip}")
        last_file = None
        for block in selected:
            if block.file != last_file:
                if last_file:
                    runner.end_sessions(last_file)
                last_file = block.file
            if block.skip:
                skipped.append(block)
                say(f"skip  {block.where} ({block.lang}) — {block.skip}")
                continue
            ok, why, output, code, seconds = runner.run(block)
            if ok:
                say(f"ok    {block.where} ({block.lang}, {seconds:.1f} s)")
            else:
                failures.append(f"{block.where}: {why}")
                say(f"FAIL  {block.where} ({block.lang}, {seconds:.1f} s): {why}")
                say("      --- the block as run ---")
                say("\n".join("      " + line for line in code.rstrip().splitlines()))
                say("      --- its output (the end) ---")
                say("\n".join("      " + line for line in output[-6000:].rstrip().splitlines()))
        runner.end_sessions()

        if not args.only:
            n, problems = check_metrics(main_server, probe, token)
            report("metric names in the docs are in /metrics", n, problems, failures)
    except KeyboardInterrupt as e:
        failures.append(f"interrupted ({e})")
    except (RuntimeError, AssertionError, DocError, subprocess.SubprocessError, OSError) as e:
        failures.append(f"error: {e}")
        say(f"docs-check: error: {e}")
    finally:
        if runner:
            runner.end_sessions()
        for server in servers:
            server.stop()
        if args.keep:
            say(f"docs-check: kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    ran = runner.count if runner else 0
    say("")
    if skipped:
        say(f"docs-check: {len(skipped)} blocks skipped, each with its reason:")
        for b in skipped:
            say(f"  {b.where}: {b.skip}")
    say(f"docs-check: {ran} blocks run, {len(skipped)} skipped, {len(failures)} failed "
        f"({time.time() - started:.0f} s)")
    for f in failures:
        say(f"  FAILED {f}")
    return 1 if failures else 0


def report(title, n, problems, failures):
    if problems:
        say(f"FAIL  {title} ({n} checked)")
        for p in problems:
            say(f"      {p}")
        failures.extend(f"{title}: {p}" for p in problems)
    else:
        say(f"ok    {title} ({n} checked)")


if __name__ == "__main__":
    sys.exit(main())
