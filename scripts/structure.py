#!/usr/bin/env python3
"""Checks the crates' module structure: no import cycle between the top-level modules of a crate,
no source file over 600 lines of non-test code, and every module of a crate named in its root's
layout list (the `//!` comment of lib.rs, as `name` or [`name`]) (scripts/test.sh runs it).

A module depends on another when its non-test code names it as `crate::other` (in a path, a `use`,
or a doc link). Non-test code is a file's text before its `#[cfg(test)] mod ...`. Prints each cycle
and each long file; exits 1 if there is any.

    scripts/structure.py [--limit 600]
"""
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LIMIT = int(sys.argv[sys.argv.index("--limit") + 1]) if "--limit" in sys.argv else 600
TESTS = re.compile(r"^#\[cfg\(test\)\]\s*\n\s*mod\s", re.M)


def modules(src):
    """Non-test text of each top-level module of the crate whose source is `src`, and long files."""
    text, long_files = {}, []
    for folder, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, src)
            top = relative.split(os.sep)[0].removesuffix(".rs")
            body = open(path, encoding="utf-8").read()
            cut = TESTS.search(body)
            code = body[: cut.start()] if cut else body
            lines = code.count("\n")
            if lines > LIMIT:
                long_files.append((os.path.relpath(path, ROOT), lines))
            module = None if top in ("lib", "main") else top
            text.setdefault(module, []).append(code)
    return text, long_files


def graph(text):
    names = {m for m in text if m}
    edges = {m: set() for m in text}
    for module, parts in text.items():
        for code in parts:
            referred = set(re.findall(r"crate::(\w+)", code))
            for group in re.findall(r"crate::\{([^}]*)\}", code):
                referred |= set(re.findall(r"\w+", group))
            edges[module] |= {r for r in referred if r in names and r != module}
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(str(m) for m in component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def unlisted(src):
    """Top-level modules declared in lib.rs that its `//!` comment does not name."""
    path = os.path.join(src, "lib.rs")
    if not os.path.exists(path):
        return []
    body = open(path, encoding="utf-8").read()
    docs = "\n".join(line for line in body.splitlines() if line.startswith("//!"))
    named = set(re.findall(r"`(\w+)`", docs))
    declared = re.findall(r"^(?:pub(?:\(crate\))? )?mod (\w+);", body, re.M)
    return [m for m in declared if m not in named]


def main():
    problems = 0
    crates = os.path.join(ROOT, "crates")
    for crate in sorted(os.listdir(crates)):
        src = os.path.join(crates, crate, "src")
        if not os.path.isdir(src):
            continue
        text, long_files = modules(src)
        for component in cycles(graph(text)):
            print(f"cycle in {crate}: {' -> '.join(component)}")
            problems += 1
        for module in unlisted(src):
            print(f"crates/{crate}/src/lib.rs: module `{module}` is not in the layout list")
            problems += 1
        for path, lines in long_files:
            print(f"{path}: {lines} lines of non-test code (at most {LIMIT})")
            problems += 1
    print(f"structure: {'ok' if problems == 0 else f'{problems} problems'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
