#!/usr/bin/env python3
"""Checks that every path a file names points down the layers of DESIGN.md, and that no files name
each other in a circle. Run by `make lint`; exits 1 naming each upward edge and each circle
(`-v`: every edge inside each circle, not just one way round it).

Layers of the root crate (`src/`); a module may name its own layer or any layer below (the same map
as the README's "Layers" and `src/lib.rs`'s; a top-level module missing from it, or one it names
that `src/` lacks, is a problem too):

    wiring      app, cli, main, lib
    boundaries  api, ws, jobs, web, state
    actors      actors (the session service included)
    clients     media, voice, livekit, store, net, crypto, cluster
    foundation  domain, config, metrics

Each `crates/*/src` is a crate of its own (`crate::` is its `src/`); it has no layers, but its files
must have no circle either (`src/main.rs`, the binary, names the library as `avatar_supervisor::`,
read as `crate::`). An edge is file -> file: every `use` tree (braces, `self`, globs, `as`)
and every inline path (`crate::a::b`, `super::x`, `self::x`, `$crate::`, macro calls `crate::m!`)
outside comments and literals, resolved to the longest module prefix that has a file (`x.rs`,
`x/mod.rs`). A child naming its parent's items is an edge child -> parent; a parent's `mod child;`
is not an edge, but its `child::Thing` or `pub use child::Thing` is, so a parent and a child that
name each other are a circle. Test code is left out by module: the item after `#[cfg(test)]`
(a `mod tests { … }`, fn, impl, use, statement) and the whole file of a `#[cfg(test)] mod x;`.

Approximations: a path may also start with a name the module binds: an import (any `use` in the
module, fn bodies included, is taken as module-wide), an item, a child module, or a name from a
glob import of a module; a name that a module only re-imports is followed to the module that
defines it. Items are found by keyword (`fn`, `struct`, …), so associated items count as the
module's. Local variables and generic parameters are not told from modules of the same name,
paths written inside string literals (`#[serde(with = "…")]`) are not read, and `#[path]` is
ignored.
"""
import bisect
import re
import sys
from functools import lru_cache
from pathlib import Path

LAYERS = [
    ("foundation", {"domain", "config", "metrics"}),
    ("clients", {"media", "voice", "livekit", "store", "net", "crypto", "cluster"}),
    ("actors", {"actors"}),
    ("boundaries", {"api", "ws", "jobs", "web", "state"}),
    ("wiring", {"app", "cli", "main", "lib"}),
]
RANK = {module: rank for rank, (_, modules) in enumerate(LAYERS) for module in modules}
NAME = {rank: name for rank, (name, _) in enumerate(LAYERS)}
ROOT = Path(__file__).resolve().parent.parent


def top(module: tuple) -> str:
    """The top-level module a file belongs to (`lib` for the crate root)."""
    return module[0] if module else "lib"


# A comment, or a string or char literal (not a lifetime `'a`); strings are finished by hand.
CHAR = r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F_]*\}|.)|[^\\'\n])'"
SKIP = re.compile(r"//[^\n]*|/\*|(?<!\w)(?:[bc]?r(#*)\"|[bc]?\"|" + CHAR + ")")
CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*(?:test|all\s*\(\s*test\s*,[^\]]*\))\s*\)\s*\]")
INLINE_MOD = re.compile(r"\bmod\s+(\w+)\s*\{")
VIS = r"\s*(?:pub(?:\s*\([^)]*\))?\s+)?"
TEST_MOD_FILE = re.compile(VIS + r"mod\s+(\w+)\s*;")
USE = re.compile(r"\buse\s+([^;]*);")
ITEM = re.compile(r"\b(?:fn|struct|enum|union|trait|type|const|static|macro_rules\s*!)\s+(\w+)")
PATH = re.compile(r"(?<![\w$:])(\$?[A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)+)(\s*!)?")
TOKEN = re.compile(r"::|[{},*]|\$?\w+")


def blank(text: str) -> str:
    return re.sub(r"[^\n]", " ", text)


def strip(text: str) -> str:
    """Blanks comments and the insides of string and char literals, keeping every line in place."""
    out, i, n = [], 0, len(text)
    while m := SKIP.search(text, i):
        out.append(text[i : m.start()])
        token, i = m.group(0), m.end()
        if token == "/*":  # block comments nest
            depth = 1
            while depth and i < n:
                step = 1 + (text[i : i + 2] in ("/*", "*/"))
                depth += {"/*": 1, "*/": -1}.get(text[i : i + 2], 0)
                i += step
            out.append(blank(text[m.start() : i]))
        elif token.startswith("//"):
            out.append(blank(token))
        elif token.endswith("'"):
            q = token.index("'") + 1
            out.append(token[:q] + blank(token[q:-1]) + "'")
        else:
            if m.group(1) is not None:  # raw: no escapes, ends at `"` and as many `#`
                j = text.find('"' + m.group(1), i)
                j = n if j < 0 else j
            else:
                j = i
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
            end = min(n, j + 1 + len(m.group(1) or ""))
            out.append(token + blank(text[i:j]) + text[j:end])
            i = end
    return "".join(out) + text[i:]


def close(text: str, i: int) -> int:
    """The index just past the bracket that closes the one at `i`."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] in "([{":
            depth += 1
        elif text[j] in ")]}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(text)


def item_end(text: str, i: int) -> int:
    """The end of the item (or statement) that starts at `i`, past any further attributes."""
    while m := re.compile(r"\s*#\s*\[").match(text, i):
        i = close(text, m.end() - 1)
    ends_at_semicolon = re.compile(VIS + r"(?:use|const|static|let|type)\b").match(text, i)
    j = i
    while j < len(text):
        if text[j] == ";":
            return j + 1
        if text[j] in "([" or (text[j] == "{" and ends_at_semicolon):
            j = close(text, j)
        elif text[j] == "{":
            return close(text, j)
        else:
            j += 1
    return j


def inline_mods(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), close(text, m.end() - 1), m.group(1)) for m in INLINE_MOD.finditer(text)]


def scope_at(module: tuple, mods: list, pos: int) -> tuple:
    return module + tuple(name for start, end, name in mods if start < pos < end)


def use_leaves(tree: str) -> list[tuple[list[str], str | None]]:
    """`a::{self, b as c, d::*}` -> [(['a'], 'a'), (['a', 'b'], 'c'), (['a', 'd'], '*')]."""
    toks, out = TOKEN.findall(tree), []

    def walk(i: int, prefix: list[str]) -> int:
        path = list(prefix)
        while i < len(toks):
            t = toks[i]
            if t == "::":
                i += 1
            elif t == "{":
                i += 1
                while i < len(toks) and toks[i] != "}":
                    i = walk(i, path)
                    i += toks[i] == "," if i < len(toks) else 0
                return i + 1
            elif t == "*":
                out.append((path, "*"))
                return i + 1
            elif t in (",", "}"):
                return i
            else:
                path, i = path + [t], i + 1
                if i < len(toks) and toks[i] == "::":
                    continue
                if path[-1] == "self" and len(path) > 1:
                    path = path[:-1]
                binding = path[-1]
                if i + 1 < len(toks) and toks[i] == "as":
                    binding, i = toks[i + 1], i + 2
                out.append((path, None if binding == "_" else binding))
                return i
        return i

    walk(0, [])
    return out


class Crate:
    def __init__(self, name: str, src: Path, lib: str):
        self.name, self.src, self.lib = name, src, lib
        self.files: dict[tuple, Path] = {}  # module -> file
        self.scopes: dict[tuple, tuple] = {}  # module or inline module -> its file's module
        self.items: dict[tuple, set] = {}
        self.aliases: dict[tuple, dict] = {}  # scope -> binding -> path, as written there
        self.globs: dict[tuple, list] = {}
        self.refs: list = []  # (file module, scope, path, position, text)
        self.lines: dict[tuple, list] = {}

    def module_of(self, path: Path) -> tuple:
        parts = list(path.relative_to(self.src).with_suffix("").parts)
        if parts[-1] == "mod":
            parts.pop()
        return () if parts == ["lib"] else tuple(parts)

    def load(self) -> None:
        texts, test_mods = {}, set()
        for path in sorted(self.src.rglob("*.rs")):
            module, text = self.module_of(path), strip(path.read_text())
            if re.search(r"#!\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]", text):
                test_mods.add(module)
            mods = inline_mods(text)
            for m in reversed(list(CFG_TEST.finditer(text))):
                end = item_end(text, m.end())
                if decl := TEST_MOD_FILE.match(text, m.end()):
                    test_mods.add(scope_at(module, mods, m.start()) + (decl.group(1),))
                text = text[: m.start()] + blank(text[m.start() : end]) + text[end:]
            texts[module] = (path, text)
        for module, (path, text) in texts.items():
            if any(module[: len(t)] == t for t in test_mods):
                continue
            self.files[module] = path
            self.scopes[module] = module
            self.lines[module] = [m.start() for m in re.finditer("\n", text)]
            mods = inline_mods(text)
            for start, _, _ in mods:
                self.scopes[scope_at(module, mods, start + 1)] = module
            for m in ITEM.finditer(text):
                self.items.setdefault(scope_at(module, mods, m.start()), set()).add(m.group(1))
            for m in USE.finditer(text):
                scope = scope_at(module, mods, m.start())
                for segs, binding in use_leaves(m.group(1)):
                    if binding == "*":
                        self.globs.setdefault(scope, []).append(segs)
                    elif binding:
                        self.aliases.setdefault(scope, {})[binding] = segs
                    self.refs.append((module, scope, tuple(segs), m.start(), "::".join(segs)))
                text = text[: m.start()] + blank(m.group(0)) + text[m.end() :]
            for m in PATH.finditer(text):
                segs = tuple(re.split(r"\s*::\s*", m.group(1)))
                text_ = "::".join(segs) + ("!" if m.group(2) else "")
                self.refs.append((module, scope_at(module, mods, m.start()), segs, m.start(), text_))

    @lru_cache(maxsize=None)
    def lookup(self, scope: tuple, name: str, depth: int = 0) -> tuple | None:
        """What `name` means in `scope`, as an absolute module path, if it is of this crate."""
        if depth > 8:
            return None
        if scope + (name,) in self.scopes or name in self.items.get(scope, ()):
            return scope + (name,)
        if name in self.aliases.get(scope, {}):
            return self.resolve(scope, tuple(self.aliases[scope][name]), depth + 1)
        for glob in self.globs.get(scope, []):
            target = self.resolve(scope, tuple(glob), depth + 1)
            if target in self.scopes and (found := self.lookup(target, name, depth + 1)):
                return found
        return None

    @lru_cache(maxsize=None)
    def resolve(self, scope: tuple, segs: tuple, depth: int = 0) -> tuple | None:
        head, rest = segs[0], segs[1:]
        if head in ("crate", "$crate", self.lib):
            return rest
        if head in ("self", "super"):
            base = scope
            for i, seg in enumerate(segs):
                if seg == "super":
                    if not base:
                        return None
                    base = base[:-1]
                elif seg != "self":
                    return base + segs[i:]
            return base
        found = self.lookup(scope, head, depth)
        return None if found is None else found + rest

    def file_of(self, path: tuple, depth: int = 0) -> tuple:
        """The file module holding `path`, following names a module only re-imports."""
        k = max(n for n in range(len(path) + 1) if path[:n] in self.scopes)
        if k < len(path) and depth < 8:
            target = self.lookup(path[:k], path[k])
            if target is not None and target != path[: k + 1]:
                return self.file_of(target + path[k + 1 :], depth + 1)
        return self.scopes[path[:k]]

    def edges(self) -> dict:
        """(from, to) -> [(line, path text)], between file modules."""
        out: dict = {}
        for module, scope, segs, pos, text in self.refs:
            target = self.resolve(scope, segs)
            if target is None:
                continue
            to = self.file_of(target)
            if to != module:
                line = bisect.bisect_left(self.lines[module], pos) + 1
                out.setdefault((module, to), []).append((line, text))
        return out

    def where(self, module: tuple, line: int | None = None) -> str:
        rel = self.files[module].relative_to(ROOT)
        return f"{rel}:{line}" if line else str(rel)


def crate_name(toml: Path) -> str:
    section, names = "", {}
    for line in toml.read_text().splitlines():
        if m := re.match(r"\s*\[([^\]]+)\]", line):
            section = m.group(1)
        elif (m := re.match(r'\s*name\s*=\s*"([^"]+)"', line)) and section in ("package", "lib"):
            names[section] = m.group(1)
    return names.get("lib", names.get("package", "")).replace("-", "_")


def cycles(nodes: set, edges: dict) -> list[tuple[list, list]]:
    """Each set of files that reach one another (more than one file), with one shortest circle."""
    succ = {n: sorted(b for a, b in edges if a == n) for n in nodes}
    reach = {}
    for v in nodes:
        seen, todo = set(), list(succ[v])
        while todo:
            if (w := todo.pop()) not in seen:
                seen.add(w)
                todo += succ[w]
        reach[v] = seen
    comps = {tuple(sorted(w for w in reach[v] if v in reach[w])) for v in nodes if v in reach[v]}
    out = []
    for comp in sorted(comps):
        start, prev, queue = comp[0], {}, [comp[0]]
        for v in queue:  # breadth first, inside the component, back to the start
            for w in succ[v]:
                if w in comp and w not in prev:
                    prev[w] = v
                    queue.append(w)
        cycle = [start, prev[start]]
        while cycle[-1] != start:
            cycle.append(prev[cycle[-1]])
        out.append((list(comp), cycle[::-1]))
    return out


def main() -> int:
    verbose = "-v" in sys.argv
    crates = [Crate("avatar-supervisor", ROOT / "src", crate_name(ROOT / "Cargo.toml"))]
    for toml in sorted(ROOT.glob("crates/*/Cargo.toml")):
        crates.append(Crate(toml.parent.name, toml.parent / "src", crate_name(toml)))
    problems, n_files, n_edges = [], 0, 0
    for crate in crates:
        crate.load()
        edges = crate.edges()
        n_files, n_edges = n_files + len(crate.files), n_edges + len(edges)
        if crate is crates[0]:
            for module in crate.files:
                if top(module) not in RANK:
                    problems.append(f"{crate.where(module)}: module `{top(module)}` has no layer here")
            for module in sorted(set(RANK) - {top(m) for m in crate.files}):
                problems.append(f"the layer map names `{module}`, which src/ does not have")
            for (a, b), seen in sorted(edges.items()):
                ra, rb = RANK.get(top(a)), RANK.get(top(b))
                if ra is not None and rb is not None and rb > ra:
                    line, text = seen[0]
                    more = f" (+{len(seen) - 1} more)" if len(seen) > 1 else ""
                    problems.append(f"{crate.where(a, line)}: `{top(a)}` ({NAME[ra]}) names `{text}` in "
                                    f"`{top(b)}` ({NAME[rb]}), a layer above it{more}")
        for comp, cycle in cycles(set(crate.files), edges):
            names = ", ".join(str(crate.where(m)) for m in comp)
            lines = [f"circle of {len(comp)} files in {crate.name}: {names}"]
            inside = sorted(e for e in edges if set(e) <= set(comp))
            shown = inside if verbose else zip(cycle, cycle[1:])
            for a, b in shown:
                line, text = edges[(a, b)][0]
                lines.append(f"    {crate.where(a, line)} -> {crate.where(b)}: `{text}`")
            problems.append("\n".join(lines))
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s) ({n_files} files, {n_edges} edges)")
        return 1
    print(f"layers: ok ({n_files} files, {n_edges} edges)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
