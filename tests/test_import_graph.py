"""The import graph between files: no cycles, anywhere in the product's packages.

`lint-imports` (in `make test`) holds the packages to their layers; a cycle
between two files of one package is invisible to it, so this test looks for
those with the same graph library (grimp) import-linter uses.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp
import networkx as nx

REPO = Path(__file__).resolve().parents[1]


def _packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["root_packages"]


def test_no_file_imports_itself_through_others():
    graph = grimp.build_graph(*_packages())
    edges = nx.DiGraph()
    for module in graph.modules:
        for imported in graph.find_modules_directly_imported_by(module):
            if not imported.startswith(module + "."):  # a package re-exporting its own part
                edges.add_edge(module, imported)
    cycles = [sorted(c) for c in nx.strongly_connected_components(edges) if len(c) > 1]
    assert cycles == []


def test_no_module_is_over_500_lines():
    long = {}
    for package in _packages():
        for path in (REPO / package).rglob("*.py"):
            lines = path.read_text().count("\n")
            if lines > 500:
                long[str(path.relative_to(REPO))] = lines
    assert long == {}
