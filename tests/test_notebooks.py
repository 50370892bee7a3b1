"""The tutorial notebooks in examples/ run top to bottom, at small settings.

Each notebook holds its settings in a code cell tagged ``parameters`` (the full-run defaults); like
papermill, the test inserts a cell after it that sets small values, then executes the notebook in
memory with nbclient, in a kernel running this interpreter, from ``examples/`` (the notebooks'
relative paths start there). Whatever a notebook saves goes to ``OUT``, a temporary folder here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = ("snare_tutorial.ipynb", "extending.ipynb", "scmm.ipynb", "cvqvae.ipynb", "convnet.ipynb")
#: Seconds one cell may take before the test fails (the whole notebook takes well under a minute).
CELL_TIMEOUT = 300


def parameters_cell(notebook: nbformat.NotebookNode) -> int:
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def assigned_names(source: str) -> set[str]:
    return {target.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for target in node.targets if isinstance(target, ast.Name)}


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A ``python3`` kernelspec whose argv is this interpreter (``sys.executable``), in a folder of
    its own: a fresh virtual environment may have no kernelspec, or one that runs whatever
    ``python`` comes first on PATH."""
    folder = tmp_path_factory.mktemp("kernels")
    write_kernel_spec(folder / "python3")
    return KernelSpecManager(kernel_dirs=[str(folder)])


def run_notebook(name: str, parameters: dict[str, object], kernel_specs: KernelSpecManager) -> nbformat.NotebookNode:
    """Execute ``examples/<name>`` with ``parameters`` injected after its parameters cell; a cell
    error fails the test with that cell's source and traceback."""
    notebook = nbformat.read(EXAMPLES / name, as_version=4)
    index = parameters_cell(notebook)
    unknown = set(parameters) - assigned_names(notebook.cells[index].source)
    assert not unknown, f"{name}: the parameters cell sets no {sorted(unknown)}"
    source = "# Parameters injected by tests/test_notebooks.py\n" + "".join(
        f"{key} = {value!r}\n" for key, value in parameters.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
    client = NotebookClient(notebook, km=manager, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(EXAMPLES)}})
    try:
        client.execute()
    except CellExecutionError as error:
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the kernel's traceback, without colour codes
        pytest.fail(f"{name}: a cell failed\n{traceback}", pytrace=False)
    return notebook


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {}) for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.outputs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_clean(name):
    """Valid nbformat 4, no outputs or execution counts (clean diffs), one parameters cell first among
    the code cells, after a markdown cell that says what the notebook shows."""
    notebook = nbformat.read(EXAMPLES / name, as_version=nbformat.NO_CONVERT)
    assert notebook.nbformat == 4
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code)
    assert notebook.cells[0].cell_type == "markdown" and notebook.cells[0].source.startswith("# ")
    assert notebook.cells.index(code[0]) == parameters_cell(notebook)


def test_snare_tutorial(snare_path, kernel_specs, tmp_path):
    notebook = run_notebook("snare_tutorial.ipynb", {
        "DATA": str(snare_path), "N_CELLS": 500, "PRETRAIN_EPOCHS": 0, "EPOCHS": 1, "N_DRAWS": 10,
        "PERMUTATIONS": 20, "IG_STEPS": 4, "EMBEDDING": "pca", "RUN_EAGERLY": True, "OUT": str(tmp_path),
    }, kernel_specs)
    assert images(notebook) >= 6  # training curves, latents, volcano, pathways, running score, attribution
    assert (tmp_path / "snare.keras").exists()


def test_extending(kernel_specs, tmp_path):
    notebook = run_notebook("extending.ipynb", {"N_CELLS": 300, "EPOCHS": 2, "RUN_EAGERLY": True,
                                                  "OUT": str(tmp_path)}, kernel_specs)
    assert (tmp_path / "extending.keras").exists()
    printed = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "LogNormalCounts ResidualEncoder StudentTPrior" in printed


def test_scmm(snare_path, kernel_specs):
    notebook = run_notebook("scmm.ipynb", {
        "DATA": str(snare_path), "N_CELLS": 500, "EPOCHS": 1, "N_SAMPLES": 2, "EMBEDDING": "pca", "RUN_EAGERLY": True,
    }, kernel_specs)
    assert images(notebook) >= 4  # training curve, latent, prediction heatmaps, traversal


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.outputs)


def test_cvqvae(snare_path, kernel_specs):
    notebook = run_notebook("cvqvae.ipynb", {
        "DATA": str(snare_path), "N_CELLS": 500, "EPOCHS": 1, "EMBEDDING": "pca", "RUN_EAGERLY": True,
    }, kernel_specs)
    assert images(notebook) >= 3  # codebook usage, code composition, latent
    assert "codes hold at least one cell" in printed(notebook)


def test_convnet(snare_path, kernel_specs):
    notebook = run_notebook("convnet.ipynb", {
        "DATA": str(snare_path), "N_CELLS": 300, "EPOCHS": 1, "N_SAMPLES": 2, "EMBEDDING": "pca", "RUN_EAGERLY": True,
    }, kernel_specs)
    assert images(notebook) >= 3  # the two channels at a locus, training curves, latents
    assert "trainable parameters" in printed(notebook)


def test_multidgd(snare_path, kernel_specs, tmp_path):
    notebook = run_notebook("multidgd.ipynb", {
        "DATA": str(snare_path), "GENE_TABLE": str(snare_path.parent / "mm10_genes.tsv.gz"), "N_CELLS": 400,
        "PRETRAIN_EPOCHS": 1, "EPOCHS": 1, "N_GENES": 10, "MAX_CELLS": 20, "EMBEDDING": "pca", "RUN_EAGERLY": True,
        "OUT": str(tmp_path),
    }, kernel_specs)
    assert images(notebook) >= 3  # training curve, latents, genome track
    assert "the reloaded model gives the same rows: True" in printed(notebook)
    assert (tmp_path / "multidgd.keras").exists()
