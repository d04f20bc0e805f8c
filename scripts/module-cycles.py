#!/usr/bin/env python3
"""Fails when the top-level modules of a crate import each other in a cycle.

The crates are layers and the compiler holds that line between them; inside a crate, only this
check does. For each crate under crates/ (and the root crate), a module's edges are the
`crate::<module>` paths its files name (code, not comments); a strongly connected component of
more than one module is a cycle, printed with the files that close it.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")


def code(text):
    """The text without line comments and doc comments (which name paths in prose)."""
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def graph(src):
    edges, where = {}, {}
    for f in sorted(src.rglob("*.rs")):
        rel = f.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main", "bin"):
            continue
        for m in PATH.findall(code(f.read_text())):
            if m != top and ((src / f"{m}.rs").exists() or (src / m).is_dir()):
                edges.setdefault(top, set()).add(m)
                where.setdefault((top, m), str(f.relative_to(ROOT)))
    return edges, where


def cycles(edges):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def main():
    crates = [ROOT / "src"] + sorted(p / "src" for p in (ROOT / "crates").iterdir() if (p / "src").is_dir())
    failed = False
    for src in crates:
        edges, where = graph(src)
        for comp in cycles(edges):
            failed = True
            name = src.parent.name if src.parent != ROOT else "canary"
            print(f"module-cycles: {name}: {' <-> '.join(comp)}", file=sys.stderr)
            for a in comp:
                for b in comp:
                    if (a, b) in where:
                        print(f"  {a} -> {b}: {where[(a, b)]}", file=sys.stderr)
    if failed:
        print("module-cycles: move the shared piece down into the module both use", file=sys.stderr)
        return 1
    print(f"module-cycles: no cycles between the top-level modules of {len(crates)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
