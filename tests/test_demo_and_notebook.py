"""The demo (reduced mode) and the Colab notebook run end to end on CPU (slow)."""

import json
import os
import subprocess
import sys

import pytest

from tests.train_runs import ROOT

pytestmark = pytest.mark.slow


def one_device_env(**extra: str) -> dict[str, str]:
    """The environment of a user's CPU machine: conftest's 8 fake devices removed. On 8 of
    them the demo trains data-parallel with every param and optimizer state replicated, and
    its peak RSS goes from 9.5 to 20.5 GB (measured on the reduced demo)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    return dict(os.environ, XLA_FLAGS=" ".join(kept), **extra)


def test_demo_reduced_mode_prints_a_real_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "resrank_jax.demo", "--reduced", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env=one_device_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| DL19 (all 43 q) | bm25 | 0.5058 |" in proc.stdout
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rows"]
    resrank = [m for k, m in rows.items() if "resrank" in k]
    assert len(resrank) == 2 and all(
        0.0 <= m["nDCG@10"] <= 1.0 and m["model_calls"] > 0 for m in resrank
    )
    assert (tmp_path / "ndcg_vs_latency.svg").read_text().startswith("<svg")


def test_notebook_executes(tmp_path):
    notebook = json.loads((ROOT / "examples" / "resrank_colab.ipynb").read_text())
    code = "\n\n".join(
        "".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"
    )
    (tmp_path / "data").symlink_to(ROOT / "data")
    script = tmp_path / "notebook.py"
    script.write_text(code)
    env = one_device_env(RESRANK_NOTEBOOK_SMOKE="1")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| bm25 | bm25 |" in proc.stdout and "| resrank | resrank |" in proc.stdout
