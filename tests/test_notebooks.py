"""The tutorial notebooks run top to bottom (their cells assert their numbers) and are committed
without outputs.

The kernel is a temporary kernelspec that starts ``sys.executable``, so the notebooks see the same
environment (and the editable ``unet_seg``) as the tests, whatever kernels the user has installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from unet_seg.config import PROJECT_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
KERNEL_NAME = "unet-seg-tests"
FAST = ["01_transposed_convolution.ipynb"]
# Trains a small network for a minute or more on CPU.
SLOW = ["02_unet_walkthrough.ipynb"]


@pytest.fixture
def kernel_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Install a kernelspec for this interpreter into a temporary Jupyter data dir."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "unet-seg tests",
        "language": "python",
        # tempfile in the notebooks writes under the test's own temporary folder.
        "env": {"MPLBACKEND": "module://matplotlib_inline.backend_inline", "TMPDIR": str(tmp_path)},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    from jupyter_client.kernelspec import KernelSpecManager

    found = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert found.argv[0] == sys.executable
    return KERNEL_NAME


def run_notebook(path: Path, workdir: Path, kernel_name: str) -> nbformat.NotebookNode:
    """Execute ``path`` in ``workdir``; raises ``CellExecutionError`` naming the failing cell."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        kernel_name=kernel_name,
        timeout=600,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return notebook


def stream_text(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


@pytest.mark.parametrize("name", FAST + SLOW)
def test_committed_notebook_has_no_outputs(name: str) -> None:
    path = NOTEBOOK_DIR / name
    if not path.is_file():
        pytest.skip(f"{path} not written yet")
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells
    for index, cell in enumerate(code_cells):
        assert cell.outputs == [], f"{name}: code cell {index} has outputs; clear them"
        assert cell.execution_count is None, f"{name}: code cell {index} has an execution count"


def test_transposed_convolution_notebook_runs(tmp_path: Path, kernel_name: str) -> None:
    notebook = run_notebook(NOTEBOOK_DIR / FAST[0], tmp_path, kernel_name)
    text = stream_text(notebook)
    # The asserts inside the notebook check the numbers; these check that the cells printed them.
    assert "[ 9. 24. 16.]" in text
    assert "[ 9. 12. 12. 16.]" in text
    assert "Mismatched elements: 6 / 9" in text
    figures = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert figures >= 5


@pytest.mark.slow
def test_unet_walkthrough_notebook_runs(tmp_path: Path, kernel_name: str) -> None:
    path = NOTEBOOK_DIR / SLOW[0]
    if not path.is_file():
        pytest.skip(f"{path} not written yet")
    notebook = run_notebook(path, tmp_path, kernel_name)
    assert "388" in stream_text(notebook)


def test_failing_cell_fails_the_run(tmp_path: Path, kernel_name: str) -> None:
    """The notebooks check themselves with asserts; a failing one must fail the test."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"),
            nbformat.v4.new_code_cell("assert 1 + 1 == 3, 'arithmetic'"),
        ]
    )
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="arithmetic"):
        run_notebook(path, tmp_path, kernel_name)
