#!/usr/bin/env python3
"""The source tree's shape, checked by `make lint`.

Fails (exit 1) on an import cycle between modules of src/ or a source file
over the line limit. A module's imports are the `crate::`, `super::`, `self::`
and child-module paths its code names (comments are not code). A child
naming its parent is a part of the module it belongs to, not an import: a
parent's `impl` may spread over its children.
A file may pass the limit only if its first line says why it is one
cohesive thing ("one cohesive" in its first comment).

usage: modules.py [SRC_DIR] [LINE_LIMIT]
"""
import os
import re
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "src"
limit = int(sys.argv[2]) if len(sys.argv) > 2 else 800

# module path (tuple) -> file
mods = {}
for root, _, names in os.walk(src):
    for name in names:
        if not name.endswith(".rs"):
            continue
        path = os.path.join(root, name)
        parts = os.path.relpath(path, src)[:-3].split(os.sep)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        mods[tuple(parts)] = path


def code_of(text):
    """The text without comments and string literals (roughly: enough for paths)."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def resolve(segs):
    """The longest module prefix of an absolute path."""
    for i in range(len(segs), 0, -1):
        if tuple(segs[:i]) in mods:
            return tuple(segs[:i])
    return None


path_re = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)+)")
group_re = re.compile(r"\b((?:crate|super|self)(?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^{}]*)\}")

edges = {m: set() for m in mods}
for mod, path in mods.items():
    text = code_of(open(path, encoding="utf-8").read())
    # Tests may reach anywhere: only the module's own code counts.
    text = text.split("#[cfg(test)]")[0]
    found = [p for p in path_re.findall(text)]
    # Paths that start with a child module's name (`use session::Session`).
    for name in set(re.findall(r"(?<![:\w])([a-z_][a-z0-9_]*)::", text)):
        if mod + (name,) in mods:
            found.append(f"self::{name}")
    for base, inner in group_re.findall(text):
        for item in inner.split(","):
            item = item.strip().split(" as ")[0]
            if item and item != "self":
                found.append(f"{base}::{item}")
    for p in found:
        segs = p.split("::")
        if segs[0] == "crate":
            abs_segs = segs[1:]
        else:
            # `self` is the module itself, `super` its parent.
            base = list(mod)
            i = 0
            while i < len(segs) and segs[i] in ("super", "self"):
                if segs[i] == "super":
                    base = base[:-1]
                i += 1
            abs_segs = base + segs[i:]
        target = resolve(abs_segs)
        if target is None or target == mod:
            continue
        # A child naming its parent (or an ancestor) is part of it.
        if mod[: len(target)] != target:
            edges[mod].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges[v]:
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
            cycles.append(sorted("::".join(c) or "crate" for c in comp))


for v in mods:
    if v not in index:
        visit(v)

long = []
for mod, path in sorted(mods.items()):
    lines = open(path, encoding="utf-8").read().split("\n")
    if len(lines) > limit and "one cohesive" not in lines[0]:
        long.append(f"{path}: {len(lines)} lines (limit {limit})")

for c in cycles:
    print("import cycle: " + " -> ".join(c))
for l in long:
    print("file too long: " + l)
if cycles or long:
    sys.exit(1)
print(f"modules: {len(mods)} modules, no import cycle, no file over {limit} lines")
