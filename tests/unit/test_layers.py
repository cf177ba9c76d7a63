"""Strict layers: no import cycles (module or top-level package), and no import up the layer order
that README.md's "Architecture" section documents. Imports inside functions count too: a lazy import
is still a dependency."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "lorapipe"

# Lowest first. A module may import its own layer and the ones below it, never one above.
LAYERS = [
    ["lorapipe.errors", "lorapipe.manifest", "lorapipe.textfiles"],
    ["lorapipe.config", "lorapipe.codehash", "lorapipe.events", "lorapipe.progress"],
    ["lorapipe.models", "lorapipe.adapter_files", "lorapipe.llamacpp", "lorapipe.llm", "lorapipe.generation",
     "lorapipe.testing", "lorapipe.decoding"],
    ["lorapipe.data", "lorapipe.train", "lorapipe.evaluate", "lorapipe.probe"],
    ["lorapipe.pipeline"],
    ["lorapipe.registry", "lorapipe.export", "lorapipe.serve"],
    ["lorapipe.rebuild"],
    ["lorapipe.cli", "lorapipe.__main__"],
]


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        rel = f.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        found |= {t for t in targets if t in known and t != name and not name.startswith(t + ".")}
    return found


def layer_of(name: str) -> int | None:
    best = None
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return None if best is None else best[0]


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
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

    for v in list(g):
        if v not in index:
            visit(v)
    return out


def package(name: str) -> str:
    return ".".join(name.split(".")[:2])


def test_every_module_has_a_layer():
    assert [m for m in modules() if m != "lorapipe" and layer_of(m) is None] == []


def test_no_import_cycles_between_modules_or_packages():
    g = graph()
    assert cycles(g) == []
    pg: dict[str, set[str]] = {}
    for m, targets in g.items():
        pg.setdefault(package(m), set()).update(package(t) for t in targets if package(t) != package(m))
    assert cycles(pg) == []


def test_no_import_goes_up_the_layers():
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in sorted(graph().items()) for t in sorted(targets)
              if m != "lorapipe" and t != "lorapipe" and layer_of(t) > layer_of(m)]  # type: ignore[operator]
    assert upward == []


def test_the_checker_sees_a_cycle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert layer_of("lorapipe.serve.engine") > layer_of("lorapipe.pipeline.runner")  # type: ignore[operator]
