"""Local collections registered with ir_datasets read back exactly (offline)."""

from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
from resrank_jax.data.irds import load_irds, register_local
from resrank_jax.data.metrics import evaluate


def test_registered_local_scifact_matches_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    register_local(
        "resrank-test/scifact/test",
        corpus="data/scifact/corpus.jsonl",
        queries="data/scifact/queries.jsonl",
        qrels="data/scifact/qrels.test.txt",
        run="data/scifact/bm25.test.run",
    )
    queries, qrels = load_irds("resrank-test/scifact/test", depth=100)
    direct = read_candidates(
        "data/scifact/candidates.test.jsonl", read_corpus("data/scifact/corpus.jsonl")
    )
    assert qrels == read_qrels("data/scifact/qrels.test.txt")
    by_qid = {q.qid: q for q in queries}
    assert set(by_qid) == {q.qid for q in direct}
    for q in direct[:20]:
        got = by_qid[q.qid]
        assert got.query == q.query
        assert [c.docid for c in got.candidates] == [c.docid for c in q.candidates]
        assert [c.text for c in got.candidates] == [c.text for c in q.candidates]
    run = {q.qid: {c.docid: c.score for c in q.candidates} for q in queries}
    assert round(evaluate(run, qrels)["nDCG@10"], 4) == 0.6762


def test_eval_cli_reads_an_ir_datasets_id(tmp_path):
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, IR_DATASETS_HOME=str(tmp_path / "irds"))
    out = tmp_path / "m.json"
    cmd = [
        sys.executable,
        "eval.py",
        "--candidates",
        "irds:resrank/scifact/test",
        "--qrels",
        "irds:resrank/scifact/test",
        "--ranker",
        "bm25",
        "--metrics-json",
        str(out),
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads(out.read_text())
    assert round(metrics["nDCG@10"], 4) == 0.6762 and metrics["queries"] == 300


def test_local_collections_never_build_or_read_a_pickled_docstore(tmp_path, monkeypatch):
    """ir_datasets' JsonlDocs iterates from ``corpus.jsonl.pklz4`` (a pickle store it builds
    beside the corpus) once it exists: a planted one must be ignored and none written."""
    import shutil

    import pytest

    monkeypatch.setenv("IR_DATASETS_HOME", str(tmp_path / "irds"))
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.test.txt", "bm25.test.run"):
        shutil.copy(f"data/scifact/{name}", tmp_path / name)
    planted = tmp_path / "corpus.jsonl.pklz4"
    planted.mkdir()
    for part in ("bin", "bin.meta", "bin.pos", "idx.doc_id.key", "idx.doc_id.meta"):
        (planted / part).write_bytes(b"not a pickle")
    register_local(
        "resrank-test/scifact/planted",
        corpus=tmp_path / "corpus.jsonl",
        queries=tmp_path / "queries.jsonl",
        qrels=tmp_path / "qrels.test.txt",
        run=tmp_path / "bm25.test.run",
    )
    queries, _ = load_irds("resrank-test/scifact/planted", depth=3)
    texts = read_corpus("data/scifact/corpus.jsonl")
    assert all(c.text == texts[c.docid] for q in queries for c in q.candidates)
    shutil.rmtree(planted)
    load_irds("resrank-test/scifact/planted", depth=3)
    assert not planted.exists(), "a docstore was built beside the corpus"
    import ir_datasets

    with pytest.raises(NotImplementedError, match="no docstore"):
        ir_datasets.load("resrank-test/scifact/planted").docs_store()
