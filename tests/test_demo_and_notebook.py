"""The demo (reduced mode) and the Colab notebook run end to end on CPU (slow)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train_runs import QRELS, ROOT, forward_scores, ir_ndcg10

pytestmark = pytest.mark.slow


def one_device_env(**extra: str) -> dict[str, str]:
    """The environment of a user's CPU machine: conftest's 8 fake devices removed. On 8 of
    them the demo trains data-parallel with every param and optimizer state replicated, and
    its peak RSS goes from 9.5 to 20.5 GB (measured on the reduced demo)."""
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
    return dict(os.environ, XLA_FLAGS=" ".join(kept), **extra)


def check_trained_rows(rows: dict, out) -> None:
    """Each trained model's rows (its encoder alone and ResRank) against references: the
    rankings are recomputed from the saved runs, each ranker's scores are checked against an
    independent computation (NumPy cosines of ``encode_texts`` vectors; the training forward
    pass) and its order against its scores, and the reported nDCG@10 must be ir_measures' on
    those rankings."""
    from resrank_jax.apps.demo import SIZES, TRAINED
    from resrank_jax.apps.experiment import eval_datasets
    from resrank_jax.rerank.encode import encode_texts
    from resrank_jax.rerank.factory import run_rankers

    size = SIZES["reduced"]
    for label, preset in TRAINED.items():
        rankers = run_rankers(str(out / preset), passage_max_length=size.passage_max_length)
        model, task = rankers["resrank"].model, rankers["resrank"].task
        tok, recipe = task.encoder_tokenizer, task.recipe
        for dataset, n in eval_datasets(size.dl19_queries, size.scifact_queries):
            ranked: dict[str, dict[str, list[str]]] = {"dense": {}, "resrank": {}}
            for qc in dataset.queries[:n]:
                texts = [c.text for c in qc.candidates]
                docs = encode_texts(model.encoder, tok, texts, max_length=recipe.passage_max_length)
                query = encode_texts(
                    model.encoder,
                    tok,
                    [task.query_input(qc.query)],
                    max_length=recipe.query_max_length,
                )[0]
                references = {
                    "dense": docs.astype(np.float64) @ query.astype(np.float64),
                    "resrank": forward_scores(model, task, qc.query, texts),
                }
                for name, reference in references.items():
                    ranking = rankers[name].rank(qc.query, qc.candidates)
                    np.testing.assert_allclose(ranking.scores, reference, rtol=0, atol=1e-4)
                    order = np.argsort(-ranking.scores, kind="stable")
                    assert ranking.order.tolist() == order.tolist(), (name, qc.qid)
                    ranked[name][qc.qid] = [qc.candidates[i].docid for i in ranking.order]
            for name, row in (
                ("dense", f"dense ({label} encoder)"),
                ("resrank", f"resrank ({label}, single pass)"),
            ):
                m = rows[f"{dataset.name} ({n} q) / {row}"]
                assert m["model_calls"] == n, (dataset.name, row)
                reference = ir_ndcg10(ranked[name], QRELS[dataset.name])
                assert m["nDCG@10"] == pytest.approx(reference, abs=1e-9), (dataset.name, row)
            if dataset.name == "SciFact-test":
                check_retrieval_rows(rows, label, rankers, dataset.queries[:n])


def check_retrieval_rows(rows: dict, label: str, rankers: dict, queries: list) -> None:
    """The dense retrieval rows of the reduced demo (its corpus: the ranked queries'
    candidates): the top 100 of a NumPy search over that corpus with the trained encoder, and
    ResRank's reranking of exactly those lists, both scored by ir_measures."""
    from resrank_jax.rerank import Candidate
    from resrank_jax.rerank.encode import encode_texts

    dense, task = rankers["dense"], rankers["dense"].task
    corpus = {c.docid: c.text for qc in queries for c in qc.candidates}
    docids = list(corpus)
    docs = encode_texts(dense.model.encoder, task.encoder_tokenizer, list(corpus.values()),
                        max_length=task.recipe.passage_max_length)  # fmt: skip
    retrieved, reranked = {}, {}
    for qc in queries:
        query = encode_texts(
            dense.model.encoder,
            task.encoder_tokenizer,
            [task.query_input(qc.query)],
            max_length=task.recipe.query_max_length,
        )
        cos = docs.astype(np.float64) @ query[0].astype(np.float64)
        top = [docids[i] for i in np.argsort(-cos, kind="stable")[:100]]
        retrieved[qc.qid] = top
        ranking = rankers["resrank"].rank(qc.query, [Candidate(d, corpus[d]) for d in top])
        reranked[qc.qid] = [top[i] for i in ranking.order]
    prefix = f"SciFact-test dense top-100 ({len(queries)} q of {len(corpus)} docs)"
    for ranker, run in (("dense retrieval", retrieved), ("dense retrieval + resrank", reranked)):
        name = (
            f"{ranker} ({label} encoder)" if ranker == "dense retrieval" else f"{ranker} ({label})"
        )
        m = rows[f"{prefix} / {name}"]
        assert m["nDCG@10"] == pytest.approx(ir_ndcg10(run, QRELS["SciFact-test"]), abs=1e-9)


def test_demo_reduced_mode_prints_a_real_table(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "resrank_jax.apps.demo", "--reduced", "--output-dir", str(tmp_path)],
        cwd=ROOT,
        env=one_device_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| DL19 (all 43 q) | bm25 | 0.5058 |" in proc.stdout
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    check_trained_rows(rows, tmp_path)
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
