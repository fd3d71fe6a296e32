"""The ablation sweep end to end on the tiny preset: one markdown table with the shared
baselines and every preset, real metrics, and finished presets reused on rerun."""

import json

import numpy as np
import pytest

from resrank_jax.apps import sweep
from resrank_jax.data.formats import read_candidates, read_qrels
from resrank_jax.rerank.encode import encode_texts
from tests.test_evaluation import ndcg10_reference
from tests.train_runs import QRELS, forward_scores, ir_ndcg10

ARGS = ["--presets", "tiny", "--dl19-queries", "2", "--scifact-queries", "2"]
ARGS += ["--passage-max-length", "32", "steps=2", "checkpoint_every=1"]
ARGS += ["model.resrank.residual=gated", "model.resrank.query_vector=gated"]
ARGS += ["stages.0.lr_scale=(('gate', 100.0),)", "stages.1.lr_scale=(('gate', 100.0),)"]


def reference_ndcg(run_dir) -> dict[str, dict[str, float]]:
    """nDCG@10 (ir_measures) of the first 2 queries of each set, ranked by scores recomputed
    here from the trained run: dense as NumPy dot products of ``encode_texts`` vectors, ResRank
    through the training forward pass (``tests.train_runs.forward_scores``)."""
    from resrank_jax.apps.experiment import eval_datasets
    from resrank_jax.train.models import load_trained

    model, task, _ = load_trained(run_dir)
    task = task.with_recipe(passage_max_length=32)
    tok = task.encoder_tokenizer
    out = {}
    for dataset, n in eval_datasets(2, 2):
        ranked: dict[str, dict[str, list[str]]] = {"dense": {}, "resrank": {}}
        for qc in dataset.queries[:n]:
            texts = [c.text for c in qc.candidates]
            docs = encode_texts(model.encoder, tok, texts, max_length=32).astype(np.float64)
            query = encode_texts(
                model.encoder,
                tok,
                [task.query_input(qc.query)],
                max_length=task.recipe.query_max_length,
            ).astype(np.float64)[0]
            for name, scores in (
                ("dense", docs @ query),
                ("resrank", forward_scores(model, task, qc.query, texts)),
            ):
                order = np.argsort(-scores, kind="stable")
                ranked[name][qc.qid] = [qc.candidates[i].docid for i in order]
        out[dataset.name] = {
            "dense (trained encoder)": ir_ndcg10(ranked["dense"], QRELS[dataset.name]),
            "resrank (trained, single pass)": ir_ndcg10(ranked["resrank"], QRELS[dataset.name]),
        }
    assert out["DL19"]["resrank (trained, single pass)"] > 0  # graded judgments: a real check
    return out


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
    assert {ds: sorted(by) for ds, by in tiny.items()} == {
        ds: ["dense (trained encoder)", "resrank (trained, single pass)"] for ds in QRELS
    }
    for ds, reference in reference_ndcg(tmp_path / "tiny" / "train").items():
        for name, value in reference.items():
            assert tiny[ds][name]["queries"] == 2
            assert tiny[ds][name]["nDCG@10"] == pytest.approx(value, abs=1e-9), (ds, name)
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
