"""notebooks/demo.ipynb: committed without outputs, and executed top to bottom in a fresh
IPython kernel (nbclient + ipykernel) it runs offline without an error and shows what it
promises: the image figure, the two token figures and the two HTML token heatmaps.

The kernel runs this interpreter through a kernel spec written into a temporary folder
(``JUPYTER_PATH``), on one thread (``OMP_NUM_THREADS=1``), with a temporary working directory
and temporary palrp output / cache / IPython folders, so that nothing is written into the
checkout; the test checks that the notebook wrote no file at all there.
"""
import html
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "demo.ipynb"
KERNEL = "palrp-notebook-test"
MAP_NAMES = ("AttnLRP", "PA-LRP", "PE-only")


def test_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert len(code) >= 4
    assert all(cell.outputs == [] and cell.execution_count is None for cell in code), (
        "clear the notebook's outputs before committing it (e.g. jupyter nbconvert "
        "--clear-output --inplace notebooks/demo.ipynb)")


def _kernel_spec(folder: Path) -> Path:
    """A kernel spec that starts ipykernel with this interpreter; returns the JUPYTER_PATH."""
    spec = folder / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "palrp test", "language": "python"}))
    return folder


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_notebook_runs_and_shows_its_figures(tmp_path, monkeypatch):
    work, cache, out = tmp_path / "work", tmp_path / "cache", tmp_path / "results"
    work.mkdir()
    monkeypatch.setenv("JUPYTER_PATH", str(_kernel_spec(tmp_path / "jupyter")))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("PALRP_CACHE_DIR", str(cache))
    monkeypatch.setenv("PALRP_OUTPUT_DIR", str(out))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the notebook's figures are inline
    before = NOTEBOOK.read_bytes(), _listing(NOTEBOOK.parent)

    nb = nbformat.read(NOTEBOOK, as_version=4)
    # raises CellExecutionError, naming the cell, if any cell fails
    NotebookClient(nb, kernel_name=KERNEL, timeout=240, allow_errors=False,
                   resources={"metadata": {"path": str(work)}}).execute()

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr, stderr
    stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "predicted" in stdout and "next token" in stdout and "share of |relevance|" in stdout

    data = [o.data for o in outputs if o.output_type in ("display_data", "execute_result")]
    pngs = [d for d in data if "image/png" in d]
    assert len(pngs) >= 3, f"expected the image figure and two token figures, got {len(pngs)} PNGs"
    pages = [html.unescape(d["text/html"]) for d in data
             if "text/html" in d and "srcdoc=" in d["text/html"]]
    assert len(pages) == 2, "expected the HTML token heatmaps of the LM and of the classifier"
    for page in pages:
        assert 'class="tok"' in page
        assert all(f"<h2>{name}</h2>" in page for name in MAP_NAMES)

    # nothing written: not into the checkout, not into the working or palrp folders
    assert (NOTEBOOK.read_bytes(), _listing(NOTEBOOK.parent)) == before
    assert _listing(work) == [] and _listing(cache) == [] and _listing(out) == []
