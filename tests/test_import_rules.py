"""One-way imports inside the package, read from the import statements of every module under src/dgseg
(top-level and inside functions alike, since a lazy import is still a dependency):

- no import cycles between modules;
- ``dgseg.models`` never imports ``dgseg.engine`` (it may import ``dgseg.config`` for its dataclasses);
- ``dgseg.data`` never imports ``dgseg.models`` or ``dgseg.engine``.

A package is its ``__init__.py``; importing ``a.b.c`` is counted as depending on ``a.b.c`` only, not on the
parent packages Python also initialises.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
FORBIDDEN = {  # importer prefix -> imported prefixes it may not use
    "dgseg.models": ("dgseg.engine",),
    "dgseg.data": ("dgseg.models", "dgseg.engine"),
}


def module_files(src: Path, package: str) -> dict[str, Path]:
    """{dotted module name: file} for every ``.py`` file of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package.replace(".", "/")).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(src: Path, package: str) -> dict[str, dict[str, int]]:
    """{module: {imported module of the package: line of the first import}} from the modules' ASTs."""
    files = module_files(src, package)
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # "from pkg import sub" depends on the submodule; "from mod import name" on the module
                subs = [f"{module}.{alias.name}" for alias in node.names]
                targets = [t if t in files else module for t in subs]
            else:
                continue
            for target in targets:
                if target in files and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def forbidden_imports(graph: dict[str, dict[str, int]], src: Path) -> list[str]:
    """'file:line: a imports b' for every import that breaks :data:`FORBIDDEN`."""
    bad = []
    for importer, edges in graph.items():
        for prefix, banned in FORBIDDEN.items():
            if importer == prefix or importer.startswith(prefix + "."):
                for target, line in edges.items():
                    if any(target == b or target.startswith(b + ".") for b in banned):
                        path = module_files(src, "dgseg")[importer].relative_to(src).as_posix()
                        bad.append(f"{path}:{line}: {importer} imports {target}")
    return sorted(bad)


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return "; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in cycle for b in cycle if b in graph[a])


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    return import_graph(SRC, "dgseg")


def test_the_graph_sees_the_package(graph):
    assert {"dgseg.config", "dgseg.models.pretrained", "dgseg.data.synthetic.layout"} <= set(graph)
    assert "dgseg.models.adapters.rein" in graph["dgseg.models.adapters"]  # from .rein import Rein
    assert "dgseg.data.labels" in graph["dgseg.data.synthetic.codes"]  # from ..labels import CLASSES


def test_no_import_cycles(graph):
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(describe(c, graph) for c in found)


def test_models_never_import_engine_and_data_never_imports_models_or_engine(graph):
    bad = forbidden_imports(graph, SRC)
    assert not bad, "imports against the layering rules:\n" + "\n".join(bad)


def test_the_rules_catch_a_cycle_and_a_forbidden_import(tmp_path):
    """The checker itself: a lazy (function-level) import closing a circle, and data importing engine."""
    pkg = tmp_path / "dgseg"
    for folder, files in {
        pkg: {"__init__.py": "", "config.py": ""},
        pkg / "models": {"__init__.py": "", "a.py": "from . import b\n", "b.py": "def f():\n    from .a import x\n"},
        pkg / "data": {"__init__.py": "from .ok import y\n", "ok.py": "import dgseg.engine.loop\n"},
        pkg / "engine": {"__init__.py": "", "loop.py": "from ..models import a\nfrom dgseg import config\n"},
    }.items():
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text)
    g = import_graph(tmp_path, "dgseg")
    assert cycles(g) == [["dgseg.models.a", "dgseg.models.b"]]
    assert g["dgseg.engine.loop"] == {"dgseg.models.a": 1, "dgseg.config": 2}
    assert g["dgseg.data"] == {"dgseg.data.ok": 1}
    assert forbidden_imports(g, tmp_path) == ["dgseg/data/ok.py:1: dgseg.data.ok imports dgseg.engine.loop"]
