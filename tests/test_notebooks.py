"""Executes every notebook of notebooks/ top to bottom; any cell error fails."""

import os
import pathlib
import time

import pytest

from keras_branching.datasets.omniglot import PARTS as OMNIGLOT_PARTS

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# Each notebook must run in about a minute on 2 CPU cores (the Omniglot one,
# which trains two networks, in about three); the limit per cell leaves room
# for a slow, shared CI machine.
CELL_TIMEOUT_S = 180


def missing_data(path):
    """Why the notebook `path` cannot run here (its data set is absent), or None.

    Notebooks on real data read it from `$KERAS_BRANCHING_DATA`; they are
    skipped without it rather than run on stand-in data.
    """
    if path.name != "omniglot_allocation.ipynb":
        return None
    root = os.environ.get("KERAS_BRANCHING_DATA")
    if not root:
        return "needs the Omniglot zips in $KERAS_BRANCHING_DATA/omniglot (the variable is not set)"
    folder = os.path.join(root, "omniglot")
    missing = [
        part + ".zip"
        for part in OMNIGLOT_PARTS
        if not os.path.isfile(os.path.join(folder, part + ".zip"))
        and not os.path.isdir(os.path.join(folder, part))
    ]
    if missing:
        return f"needs the Omniglot files {missing} in {folder}"
    return None


def test_there_are_notebooks():
    names = {path.name for path in NOTEBOOKS}
    assert {
        "quick_start.ipynb",
        "affinity_branching.ipynb",
        "learning_to_branch.ipynb",
        "share_routing.ipynb",
        "omniglot_allocation.ipynb",
    } <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_stored_without_outputs_and_runs(path, tmp_path, monkeypatch):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} is stored with outputs: clear them before committing"
            )
    reason = missing_data(path)
    if reason:
        pytest.skip(f"{path.name} {reason}")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")  # the kernel's warnings are not the tests'
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # files land in tmp_path
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{path.name}: {time.perf_counter() - start:.1f}s")
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "error"
    ]
    assert not errors
