"""The ablation sweep end to end on the tiny preset: one markdown table with the shared
baselines and every preset, real metrics, and finished presets reused on rerun."""

import json

import numpy as np
import pytest

from resrank_jax import sweep
from resrank_jax.data.formats import read_candidates, read_qrels
from tests.test_evaluation import ndcg10_reference

ARGS = ["--presets", "tiny", "--dl19-queries", "2", "--scifact-queries", "2"]
ARGS += ["--passage-max-length", "32", "steps=2", "checkpoint_every=1"]
ARGS += ["model.resrank.residual=gated", "model.resrank.query_vector=gated"]
ARGS += ["stages.0.lr_scale=(('gate', 100.0),)", "stages.1.lr_scale=(('gate', 100.0),)"]


def test_sweep_writes_one_table_and_reuses_finished_presets(tmp_path, monkeypatch):
    assert sweep.main(["--output-dir", str(tmp_path), *ARGS]) == 0
    lines = (tmp_path / "ablations.md").read_text().splitlines()
    assert len(lines) == 2 + 2 + 1  # header, rule, bm25 + zero-shot dense, tiny
    assert lines[0].startswith("| run | what changes | steps | train min | DL19 (2 q) model")
    saved = json.loads((tmp_path / "ablations.json").read_text())
    queries = read_candidates("data/trec-dl19/candidates.jsonl")[:2]
    qrels = read_qrels("data/trec-dl19/qrels.txt")
    bm25 = np.mean(
        [ndcg10_reference([c.docid for c in q.candidates], qrels[q.qid]) for q in queries]
    )
    assert saved["baselines"]["DL19"]["bm25"]["nDCG@10"] == pytest.approx(bm25, abs=1e-9)
    assert f"| bm25 | baseline | - | - | {bm25:.4f} |" in lines[2]
    tiny = saved["runs"]["tiny"]["metrics"]
    for ds in ("DL19", "SciFact-test"):
        scores = [m["nDCG@10"] for m in tiny[ds].values()]
        assert (
            all(0.0 <= s <= 1.0 for s in scores)
            and tiny[ds]["dense (trained encoder)"]["queries"] == 2
        )
    assert lines[4].startswith("| tiny |  | 2 |")
    logged = [
        json.loads(x) for x in (tmp_path / "tiny/train/metrics.jsonl").read_text().splitlines()
    ]
    gates = [m["gate"] for m in logged]  # the zero-initialised gate opens (lr x 100)
    assert len(gates) == 2 and 0 < abs(gates[0]) < abs(gates[1])

    def no_training(*_, **__):
        raise AssertionError("a finished preset must not be retrained")

    monkeypatch.setattr(sweep, "run_experiment", no_training)
    assert sweep.main(["--output-dir", str(tmp_path), *ARGS]) == 0
    assert (tmp_path / "ablations.md").read_text().splitlines()[4] == lines[4]
