"""The Mall Customers notebook runs top to bottom on the project's API and finds k = 5.

The kernel is this interpreter (the project's virtualenv), whatever kernelspecs the machine
has: the test writes a private kernelspec pointing at ``sys.executable`` into a temporary
``JUPYTER_PATH`` entry, so nothing has to be installed with ``ipykernel install``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "segmentation.ipynb"
KERNEL = "segstream-venv"


def outputs_text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernelspec that runs ipykernel with this interpreter, visible only to this test."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "segstream test kernel",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_notebook_runs_and_chooses_k5(
    venv_kernel: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "notebook-out"
    monkeypatch.setenv("SEGSTREAM_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=venv_kernel,
        timeout=240,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    assert errors == []
    assert all(c.execution_count for c in code), "every code cell ran"
    assert f"python: {sys.executable}" in outputs_text(code[0])

    chosen = [c for c in code if "chosen-k" in c.metadata.get("tags", [])]
    assert len(chosen) == 1
    assert outputs_text(chosen[0]).strip() == "chosen k: 5"

    shown = sum(
        1 for c in code for o in c.outputs if "application/vnd.plotly.v1+json" in o.get("data", {})
    )
    assert shown >= 8  # the charts render inline
    assert (out / "report.html").is_file()
    assert len(list((out / "charts").glob("*.png"))) == 5
