"""Runs notebooks/leopard_phone_case_search.ipynb top to bottom in smoke mode with nbclient.

The kernel is this test's own Python (a kernelspec written to a temporary JUPYTER_PATH), so a clean CI venv needs
no `ipykernel install`. Milvus Lite and the cache live in tmp_path. The notebook is committed without outputs.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "leopard_phone_case_search.ipynb"
KERNEL_NAME = "mmsearch-test-python"

pytestmark = pytest.mark.slow


def _texts(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o.get("text", ""))
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "".join(out)


def _images(cell) -> int:
    return sum(1 for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))


def _execute(tmp_path: Path) -> list:
    """Run the notebook once with the environment set by `smoke_env`; its code cells, with outputs."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name=KERNEL_NAME, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    return [c for c in nb.cells if c.cell_type == "code"]


@pytest.fixture
def smoke_env(tmp_path, monkeypatch, tmp_path_factory):
    pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="ipykernel is needed to run the notebook")
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "mmsearch test kernel",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("MMSEARCH_SMOKE", "1")
    monkeypatch.setenv("MMSEARCH_MILVUS_URI", str(tmp_path / "milvus.db"))
    monkeypatch.setenv("MMSEARCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "smoke-cache"))
    monkeypatch.setenv("MMSEARCH_DEVICE", "cpu")
    monkeypatch.delenv("MMSEARCH_COLLECTION", raising=False)
    return tmp_path


@pytest.fixture
def executed(smoke_env):
    return _execute(smoke_env)


def test_notebook_is_committed_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code), (
        "clear the notebook's outputs"
    )


def test_notebook_smoke_run_labels_itself_and_shows_every_step(executed):
    text = "\n".join(_texts(c) for c in executed)
    assert "SMOKE RUN: SMOKE MODE: tiny random-weight models" in text
    assert "every ranking below is meaningless" in text
    step = {n: next((c for c in executed if f"STEP {n} " in _texts(c)), None) for n in range(1, 6)}
    assert all(step.values()), f"missing step output: {[n for n, c in step.items() if c is None]}"
    assert "indexed 18," in _texts(step[1])
    for n in (2, 3, 4, 5):
        assert _images(step[n]) == 1, f"step {n} must display one image"
    for n in (3, 4, 5):
        assert "[SMOKE: tiny random models]" in _texts(step[n])
    assert "Before -> after ranks:" in text
    assert "Timings (ms):" in text and "encode_ms" in text and "rerank_ms" in text


def _step_text(cells, n: int) -> str:
    return next((_texts(c) for c in cells if f"STEP {n} " in _texts(c)), "")


def test_notebook_runs_twice_in_a_row_on_the_same_database(smoke_env):
    """The second run re-indexes into the first run's collection (whose temp catalogue is gone) and still shows
    every image; neither run leaves a folder behind in the working directory."""
    before = set(Path(tempfile.gettempdir()).glob("mmsearch-demo-*"))
    first = _execute(smoke_env)
    second = _execute(smoke_env)
    for cells in (first, second):
        assert "indexed 18," in _step_text(cells, 1)
        assert all(_images(c) == 1 for c in cells if any(f"STEP {n} " in _texts(c) for n in (2, 3, 4, 5)))
        assert sum(1 for n in (2, 3, 4, 5) if _step_text(cells, n)) == 4
    assert sorted(p.name for p in smoke_env.iterdir()) == ["jupyter", "milvus.db"]
    assert set(Path(tempfile.gettempdir()).glob("mmsearch-demo-*")) == before
