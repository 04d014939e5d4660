"""No import cycles among relay/, clients/ and sims/, function-level imports included.

A module that imports another inside a function to dodge a circular import still depends on it:
each such pair is one design decided in two places. The graph is read with ``ast`` from the
source, so an import inside a function or under ``TYPE_CHECKING`` counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("relay", "clients", "sims")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unprefixed(module: str) -> str:
    """``relaysim.sims.x`` → ``sims.x``: installed, the folders are one package (relaysim/ links to them)."""
    return module.removeprefix("relaysim.") if module.startswith("relaysim.") else module


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> nx.DiGraph:
    """Module → the modules of ``packages`` it imports anywhere in its source (edges point to the imported)."""
    files = {_module_name(p, root): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [_unprefixed(a.name) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    module = _unprefixed(node.module or "")
                # ``from a import b`` imports the submodule a.b when there is one, else a name of a
                targets = [
                    f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names
                ]
            for target in targets:
                while target and target not in files:  # ``import a.b.c`` of a name inside a module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph.add_edge(name, target)
    return graph


def test_there_are_no_import_cycles() -> None:
    graph = import_graph(ROOT)
    assert ("sims.world.simulation", "relay.core") in graph.edges  # the graph sees relaysim.* imports
    cycles = sorted(" → ".join([*c, c[0]]) for c in nx.simple_cycles(graph))
    assert cycles == []


def test_the_exceptional_access_interventions_do_not_import_the_simulation() -> None:
    graph = import_graph(ROOT)
    access = [m for m in graph if m == "sims.access" or m.startswith("sims.access.")]
    assert "sims.access.escrow" in access
    assert {(m, t) for m in access for t in nx.descendants(graph, m) if t == "sims.world.simulation"} == set()


def test_the_cycle_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "sims"
    (pkg / "inner").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from sims.b import g\n    return g\n")
    (pkg / "b.py").write_text("from . import c\n")
    (pkg / "c.py").write_text("import sims.a\n")
    (pkg / "inner" / "__init__.py").write_text("from .d import x\n")
    (pkg / "inner" / "d.py").write_text("from ..inner import e\n")
    (pkg / "inner" / "e.py").write_text("x = 1\n")
    graph = import_graph(tmp_path, ("sims",))
    assert {("sims.a", "sims.b"), ("sims.b", "sims.c"), ("sims.c", "sims.a")} <= set(graph.edges)
    assert {("sims.inner", "sims.inner.d"), ("sims.inner.d", "sims.inner.e")} <= set(graph.edges)
    assert [sorted(c) for c in nx.simple_cycles(graph)] == [["sims.a", "sims.b", "sims.c"]]
