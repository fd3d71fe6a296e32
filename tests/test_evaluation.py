"""Metrics (trec_eval -c semantics, independent nDCG reference) and eval.py end to end."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from resrank_jax.data.formats import read_candidates, read_qrels, read_run
from resrank_jax.data.metrics import evaluate

DL19 = ("data/trec-dl19/candidates.jsonl", "data/trec-dl19/qrels.txt")


def ndcg10_reference(ranked, judged):
    """trec_eval's nDCG@10: gain = grade, discount log2(rank + 1), ideal over all judgments."""
    dcg = sum(judged.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(judged.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def test_bm25_dl19_matches_published_and_reference():
    queries = read_candidates(DL19[0])
    qrels = read_qrels(DL19[1])
    run = {q.qid: {c.docid: c.score for c in q.candidates} for q in queries}
    metrics = evaluate(run, qrels, rel_level=2)
    assert round(metrics["nDCG@10"], 4) == 0.5058 and metrics["queries"] == 43
    reference = np.mean(
        [ndcg10_reference([c.docid for c in q.candidates], qrels[q.qid]) for q in queries]
    )
    assert metrics["nDCG@10"] == pytest.approx(reference, abs=1e-9)


def test_missing_queries_score_zero_and_are_counted():
    qrels = {"a": {"d1": 1}, "b": {"d2": 1}, "c": {"d3": 0}}
    run = {"a": {"d1": 1.0}, "z": {"d9": 1.0}}
    with pytest.warns(UserWarning, match="2 judged queries have no results"):
        metrics = evaluate(run, qrels)
    # b and c are judged but absent from the run: both count as 0 (trec_eval -c); z is unjudged
    assert metrics["queries"] == 3 and metrics["queries_missing"] == 2
    assert metrics["nDCG@10"] == pytest.approx(1 / 3)


def test_eval_cli_bm25_end_to_end(tmp_path):
    metrics_path, run_path = tmp_path / "m.json", tmp_path / "bm25.run"
    cmd = [
        sys.executable,
        "eval.py",
        "--candidates",
        DL19[0],
        "--qrels",
        DL19[1],
        "--ranker",
        "bm25",
        "--metrics-json",
        str(metrics_path),
        "--run-out",
        str(run_path),
        "--quiet",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "| trec-dl19 | bm25 | 0.5058 |" in out
    metrics = json.loads(metrics_path.read_text())
    assert round(metrics["nDCG@10"], 4) == 0.5058 and metrics["queries"] == 43
    run = read_run(run_path)
    assert len(run) == 43 and all(len(docs) == 100 for docs in run.values())


def test_eval_cli_several_datasets_give_one_table(tmp_path):
    metrics_path = tmp_path / "m.json"
    cmd = [
        sys.executable,
        "eval.py",
        "--candidates",
        DL19[0],
        "--qrels",
        DL19[1],
        "--candidates",
        "data/scifact/candidates.test.jsonl",
        "--qrels",
        "data/scifact/qrels.test.txt",
        "--corpus",
        "data/scifact/corpus.jsonl",
        "--ranker",
        "identity",
        "--metrics-json",
        str(metrics_path),
        "--quiet",
    ]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) == {"trec-dl19", "scifact/test"}
    # TREC DL counts rel >= 2; SciFact's binary TREC-format qrels rel >= 1
    assert metrics["trec-dl19"]["rel_level"] == 2 and metrics["scifact/test"]["rel_level"] == 1
    assert (
        round(metrics["scifact/test"]["nDCG@10"], 4) == 0.6762
        and metrics["scifact/test"]["queries"] == 300
    )


def test_eval_cli_reports_bad_input_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": "1", "query": "q", "candidates": []}\n')
    cmd = [
        sys.executable,
        "eval.py",
        "--candidates",
        str(bad),
        "--qrels",
        DL19[1],
        "--ranker",
        "bm25",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        proc.returncode != 0 and "bad.jsonl:1: query '1' has an empty candidate list" in proc.stderr
    )
