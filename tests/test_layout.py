"""The package layout: data flows one way, so no package imports one that imports it back."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
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
    # pictures of results: numpy, matplotlib, the I/O layer and the default grey-value window
    "viz": {"io", "normalization"},
    # Objects from label maps and probabilities: arrays in, arrays out (and the tuned values
    # a model file stores).
    "instances": FOUNDATION | {"models"},
    # The model on a volume's windows; patches are shared with training, nothing else of data.
    "inference": FOUNDATION | {"models", "data", "instances"},
    "blockwise": FOUNDATION | {"models", "inference", "instances", "interrupts"},
    "prediction": FOUNDATION
    | {"models", "inference", "instances", "blockwise", "viz", "interrupts"},
    "evaluation": FOUNDATION | {"models", "data", "viz"},
    "tuning": FOUNDATION | {"models", "data", "inference", "instances", "evaluation"},
    "export": FOUNDATION | {"models"},
    # fingerprint -> plan -> experiment file: reads data, prices networks, trains nothing
    "planning": FOUNDATION | {"models", "data"},
    # The napari plugin: runs the predictor's per-file driver, shows the samples.
    "napari": FOUNDATION
    | {"models", "data", "inference", "instances", "blockwise", "prediction", "interrupts"},
}
# Packages that run models on data without training them: none may load Lightning (7 s of
# imports) or the training data module.
NO_LIGHTNING = ("instances", "inference", "blockwise", "prediction", "tuning")
# GUI packages: only the napari plugin (unet_seg/napari/, behind the `napari` extra) uses them.
GUI = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "vispy")


def _part(module: str) -> str:
    """``unet_seg.io.tiff`` -> ``io``; ``unet_seg.normalization`` -> ``normalization``."""
    return module.split(".")[1]


@functools.cache  # parsing every module takes ~0.4 s; some 20 tests read the graph
def package_imports() -> dict[str, set[str]]:
    """``{package: packages of unet_seg it imports}`` from every module's import statements,
    including those inside functions (read once per session: callers must not change it)."""
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


def module_imports(package: str) -> set[str]:
    """Every ``unet_seg`` module (dotted) imported anywhere in ``package``'s files."""
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
    return found


@pytest.mark.parametrize("package", NO_LIGHTNING)
def test_model_users_never_import_lightning_nor_the_data_module(package):
    imported = module_imports(package)
    assert "unet_seg.data.datamodule" not in imported
    assert not any(m.split(".")[0] in ("lightning", "pytorch_lightning") for m in imported)


def test_loading_the_tuner_and_the_predictor_loads_no_lightning():
    """Transitively too: what these packages import must not pull Lightning in."""
    code = (
        "import sys, unet_seg.tuning.write_back, unet_seg.prediction.batch; "
        "print(sorted(m for m in sys.modules if 'lightning' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loading_the_planner_loads_no_lightning():
    """Planning a folder of images needs neither Lightning nor the data module (a nnU-Net
    dataset loads them, for reading its dataset.json, only when one is planned)."""
    code = (
        "import sys, unet_seg.planning.run, unet_seg.cli.plan; "
        "print(sorted(m for m in sys.modules if 'lightning' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_module_of_io_imports_one_that_imports_it_back():
    """Inside the I/O layer too (lazy imports included): readers below writers, one way."""
    io = ROOT / "io"
    modules = {".".join(p.relative_to(io).with_suffix("").parts): p for p in io.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                imported.update(n.removeprefix("unet_seg.io.") for n in names)
        graph[name] = (imported & set(modules)) - {name}

    def reaches(start: str, goal: str, seen: frozenset[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n}))
                   for n in graph.get(start, ()))  # fmt: skip

    assert [m for m in graph if reaches(m, m, frozenset({m}))] == []


def test_tests_mirror_the_package():
    """``tests/<package>/`` for each package's tests: no folder without a package of its name."""
    tests = Path(__file__).resolve().parent
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert folders <= packages, folders - packages
    assert {"io", "prediction", "blockwise", "instances", "tuning"} <= folders


def test_only_the_plugin_imports_napari_or_qt():
    """Anywhere in a module (functions too): the core works where no GUI is installed."""
    found = []
    for path in ROOT.rglob("*.py"):
        if path.relative_to(ROOT).parts[0] == "napari":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in GUI]
    assert found == []


@pytest.mark.slow  # imports every module: Lightning, Dask, ONNX Runtime, ...
def test_importing_the_core_and_the_plugin_reader_loads_no_gui():
    """Every module outside the widget (the reader, the widget's work and the samples
    included) imports without napari, magicgui or a Qt binding."""
    modules = sorted(
        "unet_seg." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in ROOT.rglob("*.py")
        if p.name != "__main__.py" and p.relative_to(ROOT).parts[-1] != "widget.py"
    )
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(GUI)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
