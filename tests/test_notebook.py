"""The walkthrough notebook runs top to bottom in a fresh kernel and shows what it promises."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the whole notebook in a kernel

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "walkthrough.ipynb"


def _outputs(nb, tag: str) -> list[dict]:
    cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]
    assert cells, f"no cell tagged {tag!r}"
    return cells[0].outputs


def _text(outputs: list[dict]) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        for mime in ("text/plain", "text/html"):
            parts.append(str(o.get("data", {}).get(mime, "")))
    return "\n".join(parts)


@pytest.fixture
def venv_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A ``python3`` kernelspec that runs this interpreter (the venv), ahead of any system-wide one."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (handclust venv)", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "python3"


def test_walkthrough_notebook_runs(tmp_path: Path, venv_kernel: str):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    client = NotebookClient(nb, kernel_name=venv_kernel, timeout=180, resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors
    assert "01_production_masonry.mp4" in _text(_outputs(nb, "footage"))
    summary = _text(_outputs(nb, "discover"))
    assert "'clips_ok': 2" in summary and "'activities'" in summary
    assert "duration_s" in _text(_outputs(nb, "pandas_clips"))
    assert "01_production_masonry.mp4" in _text(_outputs(nb, "pandas_activities"))
    assert "mean_s" in _text(_outputs(nb, "duckdb_durations"))
    assert "activities" in _text(_outputs(nb, "duckdb_clips")) and "prep" in _text(_outputs(nb, "duckdb_clips"))
    assert any("image/png" in o.get("data", {}) for o in _outputs(nb, "timeline"))
    assert "report/index.html" in _text(_outputs(nb, "report"))
    # It wrote into its own working directory, not into the checkout.
    assert (work / "walkthrough_run" / "report" / "index.html").exists()
    assert (work / "walkthrough_footage" / "ground_truth.parquet").exists()
