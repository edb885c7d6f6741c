"""The package layout: data flows one way, so no package imports one that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import unet_seg

ROOT = Path(unet_seg.__file__).resolve().parent
# What the lowest layers may use; everything above them may use these too.
FOUNDATION = {"errors", "io", "normalization", "config"}
ALLOWED = {
    "errors": set(),
    "io": {"errors"},
    "normalization": {"errors"},
    "config": {"errors"},
    "models": FOUNDATION,
    "data": FOUNDATION | {"models"},
    "viz": {"io"},  # pictures of results: numpy, matplotlib and the I/O layer only
}


def _part(module: str) -> str:
    """``unet_seg.io.tiff`` -> ``io``; ``unet_seg.normalization`` -> ``normalization``."""
    return module.split(".")[1]


def package_imports() -> dict[str, set[str]]:
    """``{package: packages of unet_seg it imports}`` from every module's import statements,
    including those inside functions."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        source = rel.parts[0].removesuffix(".py")
        if source == "__init__":
            continue
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            targets.update(_part(n) for n in names if n.startswith("unet_seg."))
        targets.discard(source)
    return graph


def test_the_graph_is_read():
    graph = package_imports()
    assert {"io", "models", "data", "evaluation", "training", "inference", "cli"} <= set(graph)
    assert "io" in graph["inference"] and "io" in graph["data"]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_lower_layers_import_nothing_above_them(package):
    assert package_imports()[package] <= ALLOWED[package]


def test_no_package_imports_one_that_imports_it_back():
    graph = package_imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [p for p in graph if reaches(p, p, {p})]
    assert not cycles, f"import cycles through {cycles}: {graph}"


def test_training_does_not_import_inference_nor_inference_training():
    graph = package_imports()
    assert "inference" not in graph["training"] and "training" not in graph["inference"]
