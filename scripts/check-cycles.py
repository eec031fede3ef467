#!/usr/bin/env python3
"""Fails when the files of src/ import each other in a cycle.

A file depends on another when its code names an item of that file: a `use`
of it, or a qualified path (`crate::a::b::f()`, `super::x`). Re-exports
(`pub use`, `pub(crate) use`) are facades, not dependencies, and are not
counted; nor is test code (everything from the first `#[cfg(test)]` on).
A path resolves to the deepest module file it names, so `crate::service::X`
is `src/service/mod.rs` unless `X` is itself a module file.

usage: scripts/check-cycles.py [src-dir]
"""

import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
PATH = re.compile(rf"\b(crate|super|self)((?:::{IDENT})+)")
USE = re.compile(r"^\s*(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.M)


def module_of(path: Path) -> tuple:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def expand(tree: str) -> list:
    """`a::{b, c::{d, e}}` -> [a::b, a::c::d, a::c::e]."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)  # `x as y` names x
    tree = re.sub(r"\s+", "", tree)
    brace = tree.find("{")
    if brace < 0:
        return [tree]
    prefix, body = tree[:brace], tree[brace + 1 : -1]
    items, depth, start = [], 0, 0
    for i, ch in enumerate(body):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(body[start:i])
            start = i + 1
    items.append(body[start:])
    return [p for item in items if item for p in expand(prefix + item)]


def main() -> int:
    files = {}
    for path in sorted(ROOT.rglob("*.rs")):
        if path.name == "main.rs" and path.parent == ROOT:
            continue  # the binary is its own crate
        files[module_of(path)] = path
    graph = {m: set() for m in files}
    for module, path in files.items():
        text = path.read_text()
        cut = text.find("#[cfg(test)]")
        if cut >= 0:
            text = text[:cut]
        text = re.sub(r"//[^\n]*", "", text)
        is_mod_file = path.name in ("mod.rs", "lib.rs")
        here = module if is_mod_file else module
        parent = module[:-1]
        refs = []
        for m in USE.finditer(text):
            if m.group(1):
                continue  # a re-export
            for p in expand(m.group(2)):
                first = p.split("::")[0]
                if first not in ("crate", "super", "self"):
                    p = "self::" + p  # 2018 paths: a child module of this one
                refs.append(p)
        body = USE.sub("", text)
        refs += [m.group(0) for m in PATH.finditer(body)]
        # Paths relative to this module: its child modules by name.
        children = [k[-1] for k in files if k[:-1] == module and len(k) == len(module) + 1]
        for child in children:
            for m in re.finditer(rf"(?<![:\w]){child}::", body):
                refs.append("self::" + child)
        for ref in refs:
            segs = ref.split("::")
            head, rest = segs[0], [s for s in segs[1:] if s and s not in ("*",)]
            if head == "crate":
                base = ()
            elif head == "super":
                base = parent
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
            elif head == "self":
                base = here
            else:
                continue
            target = base
            for s in rest:
                s = s.split(" as ")[0]
                if target + (s,) in files:
                    target = target + (s,)
                else:
                    break
            if target != module and target in files:
                graph[module].add(target)
    # Cycles: strongly connected components with more than one file.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    name = lambda m: str(files[m])
    for comp in out:
        members = set(comp)
        print("import cycle between: " + ", ".join(sorted(name(m) for m in comp)))
        for m in sorted(comp, key=name):
            deps = sorted(name(d) for d in graph[m] if d in members)
            print(f"    {name(m)} -> {', '.join(deps)}")
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
