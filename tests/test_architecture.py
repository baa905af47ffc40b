"""The shape of the code (docs/architecture.md), checked: imports point down, no import circles,
modules a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cortexlink"

#: What each layer may import from (besides itself); docs/architecture.md draws the same picture.
ALLOWED = {
    "core": set(),
    "codec": {"core"},
    "dsp": {"core"},
    "decoders": {"core", "dsp"},
    "sim": {"core"},
    "tasks": {"core"},
    "io": {"core", "dsp", "decoders", "codec"},
    "quality": {"core", "dsp", "decoders", "io"},
    "runtime": {"core", "stim", "codec", "dsp", "decoders", "sim", "tasks", "io"},
    "stim": {"core"},
    "sorting": {"core", "dsp", "io"},
    "bench": {"core", "stim", "codec", "dsp", "decoders", "sim", "tasks", "io", "quality", "runtime", "web", "sorting"},
    "web": {"core", "stim", "dsp", "decoders", "sim", "tasks", "io", "runtime"},
    "evidence": {"core"},
    "cli": {"core", "stim", "codec", "dsp", "decoders", "sim", "tasks", "io", "quality", "runtime", "bench", "web", "sorting",
            "evidence"},
}
#: Known exceptions, each with the reason it is still there (remove the entry with the reason).
LAYER_EXCEPTIONS: set[tuple[str, str]] = set()
#: The one allowed import circle: an explicit plugin registry (decoders._base.load imports the
#: package so that every decoder class has registered itself).
CYCLE_EXCEPTIONS = {"cortexlink.decoders"}
MAX_LINES = 620
#: Modules still over the limit (to be split; the list may only shrink).
LONG_MODULES: set[str] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts)
        out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = p
    return out


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cortexlink"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cortexlink"))
    return out


def test_imports_point_down():
    wrong = []
    for name, path in _modules().items():
        parts = name.split(".")
        if len(parts) < 3:
            continue
        layer = parts[1]
        rel = path.relative_to(SRC).as_posix()
        for imp in _imports(path):
            p = imp.split(".")
            if len(p) < 2 or p[1] == layer or p[1] not in ALLOWED:
                continue
            if p[1] not in ALLOWED[layer] and (rel, p[1]) not in LAYER_EXCEPTIONS:
                wrong.append(f"{rel} imports {imp}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(sorted(set(wrong)))


def test_no_import_circles():
    mods = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for imp in _imports(p):
            t = resolve(imp)
            # a package importing its own submodules (its __init__ re-exporting) is no circle
            if t and t != m and not t.startswith(m + "."):
                edges[m].add(t)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    groups: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
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
                groups.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    bad = [g for g in groups if not all(any(m == e or m.startswith(e + ".") for e in CYCLE_EXCEPTIONS) for m in g)]
    assert not bad, f"import circles: {bad}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: p.relative_to(SRC).as_posix())
def test_modules_stay_short(path):
    rel = path.relative_to(SRC).as_posix()
    n = len(path.read_text().splitlines())
    if rel in LONG_MODULES:
        return
    assert n <= MAX_LINES, f"{rel} has {n} lines (limit {MAX_LINES}): split it by what its parts do"


def test_the_list_of_long_modules_only_shrinks():
    still = {rel for rel in LONG_MODULES if (SRC / rel).exists()
             and len((SRC / rel).read_text().splitlines()) > MAX_LINES}
    assert still == {rel for rel in LONG_MODULES if (SRC / rel).exists()}, \
        f"now short enough, remove from LONG_MODULES: {sorted(set(LONG_MODULES) - still)}"
