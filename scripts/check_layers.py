#!/usr/bin/env python3
"""Checks that imports only point down the layers of DESIGN.md, and that no files import each other
in a circle. Run by `make lint`; exits 1 naming each offending `use crate::…` line.

    wiring      app, cli, main
    boundaries  api, ws, jobs, web, state
    actors      actors (the session service included)
    clients     media, voice, livekit, rtc, store, net, crypto, cluster
    foundation  domain, config, metrics

A module may import from its own layer or any layer below; within a layer, the import graph of the
files must have no cycle (the same holds across layers, where a cycle would need an upward edge).
"""
import re
import sys
from pathlib import Path

LAYERS = [
    ("foundation", {"domain", "config", "metrics"}),
    ("clients", {"media", "voice", "livekit", "rtc", "store", "net", "crypto", "cluster"}),
    ("actors", {"actors"}),
    ("boundaries", {"api", "ws", "jobs", "web", "state"}),
    ("wiring", {"app", "cli", "main", "lib"}),
]
RANK = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}
NAME = {rank: name for rank, (name, _) in enumerate(LAYERS)}

SRC = Path(__file__).resolve().parent.parent / "src"
USE = re.compile(r"\buse\s+((?:crate|super)::[A-Za-z0-9_:{}, \n*]+?);", re.S)


def module_of(path: Path) -> list[str]:
    """src/actors/session/mod.rs -> ['actors', 'session']."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "mod":
        parts.pop()
    return parts


def file_of(parts: list[str]) -> str | None:
    """The longest prefix of `parts` that names a source file."""
    for n in range(len(parts), 0, -1):
        base = SRC.joinpath(*parts[:n])
        if base.with_suffix(".rs").exists():
            return "/".join(parts[:n])
        if (base / "mod.rs").exists():
            return "/".join(parts[:n])
    return None


def expand(tree: str) -> list[list[str]]:
    """`a::{b, c::d}` -> [['a', 'b'], ['a', 'c', 'd']] (enough of Rust's use-tree grammar)."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix: list[str], text: str):
        if "{" not in text:
            for item in split_top(text):
                out.append(prefix + [p for p in item.split("::") if p and p != "self" and p != "*"])
            return
        head, _, rest = text.partition("{")
        inner = rest[: rest.rfind("}")]
        head_parts = [p for p in head.split("::") if p]
        for item in split_top(inner):
            walk(prefix + head_parts, item)

    walk([], tree)
    return out


def split_top(text: str) -> list[str]:
    items, depth, cur = [], 0, ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        items.append(cur)
    return [i for i in items if i]


def main() -> int:
    problems = []
    edges: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        me = module_of(path)
        my_file = "/".join(me) if me else "lib"
        top = me[0] if me else "lib"
        if top not in RANK:
            problems.append(f"{path.relative_to(SRC.parent)}: module `{top}` has no layer in scripts/check_layers.py")
            continue
        text = path.read_text()
        # Test modules may reach anywhere: they are not part of the layering.
        text = text.split("#[cfg(test)]")[0]
        is_mod_rs = path.name in ("mod.rs", "lib.rs", "main.rs")
        for match in USE.finditer(text):
            for target in expand(match.group(1)):
                # `super::` is relative to the module (a mod.rs is its own module's file).
                here = list(me) if is_mod_rs else list(me[:-1]) + [me[-1]]
                if target and target[0] == "crate":
                    target = target[1:]
                else:
                    base = here
                    while target and target[0] == "super":
                        base = base[:-1]
                        target = target[1:]
                    target = base + target
                if not target:
                    continue
                their_top = target[0]
                if their_top not in RANK:
                    continue
                line = text[: match.start()].count("\n") + 1
                if RANK[their_top] > RANK[top]:
                    problems.append(
                        f"{path.relative_to(SRC.parent)}:{line}: `{top}` ({NAME[RANK[top]]}) imports "
                        f"`crate::{'::'.join(target)}` ({NAME[RANK[their_top]]}), a layer above it"
                    )
                target_file = file_of(target)
                if target_file and target_file != my_file and not my_file.startswith(target_file + "/"):
                    edges.setdefault(my_file, set()).add(target_file)
    # Cycles between files (a parent module re-exporting its children is not an import of them).
    seen, on_path, stack = set(), set(), []

    def visit(node: str):
        seen.add(node)
        on_path.add(node)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt.startswith(node + "/"):
                continue
            if nxt in on_path:
                cycle = stack[stack.index(nxt):] + [nxt]
                problems.append("import cycle: " + " -> ".join(cycle))
            elif nxt not in seen:
                visit(nxt)
        stack.pop()
        on_path.discard(node)

    for node in sorted(edges):
        if node not in seen:
            visit(node)
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)")
        return 1
    print(f"layers: ok ({len(edges)} files import others, all downward, no cycles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
