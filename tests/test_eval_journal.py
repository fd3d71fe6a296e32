"""The demo's evaluation journal: finished (set, ranker) entries survive a kill and are not
ranked again; anything else about the run changes the fingerprint and starts over."""

import json

from resrank_jax.apps import demo
from resrank_jax.apps.eval_journal import EvalJournal
from resrank_jax.rerank.base import IdentityRanker

ROWS = {"DL19 (2 q) / dense": {"ndcg@10": 0.5, "queries": 2}}
POINTS = [{"ndcg@10": 0.5, "dataset": "DL19"}]


def test_entries_survive_reopening_with_the_same_fingerprint(tmp_path):
    path = tmp_path / "journal.jsonl"
    EvalJournal(path, {"steps": 200}).put("DL19 / dense", ROWS, POINTS)
    again = EvalJournal(path, {"steps": 200})
    assert again.get("DL19 / dense") == {"key": "DL19 / dense", "rows": ROWS, "points": POINTS}
    assert again.get("DL19 / resrank") is None


def test_another_fingerprint_starts_over(tmp_path):
    path = tmp_path / "journal.jsonl"
    EvalJournal(path, {"steps": 100}).put("DL19 / dense", ROWS, POINTS)
    assert EvalJournal(path, {"steps": 200}).entries == {}
    assert EvalJournal(path, {"steps": 100}).entries == {}  # the old entries are gone
    assert json.loads(path.read_text().splitlines()[0]) == {"fingerprint": {"steps": 100}}


def test_a_line_cut_short_by_a_kill_is_dropped_and_later_entries_read_back(tmp_path):
    path = tmp_path / "journal.jsonl"
    EvalJournal(path, {"steps": 1}).put("a", ROWS, POINTS)
    with path.open("a") as f:
        f.write('{"key": "b", "rows": {"DL1')  # killed mid-write
    resumed = EvalJournal(path, {"steps": 1})
    assert set(resumed.entries) == {"a"}
    resumed.put("c", ROWS, POINTS)
    assert set(EvalJournal(path, {"steps": 1}).entries) == {"a", "c"}


def test_demo_evaluation_resumes_without_ranking_finished_entries(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(ranker, dataset, *, max_queries=None, progress=True):
        calls.append((dataset.name, ranker.name))
        return {"ndcg@10": 0.25, "queries": max_queries or len(dataset.queries), "ranker": ""}

    monkeypatch.setattr(demo, "evaluate_ranker", fake_evaluate)
    named = [("bm25", IdentityRanker("bm25")), ("identity", IdentityRanker("identity"))]
    size = demo.SIZES["reduced"]
    path = tmp_path / "journal.jsonl"
    rows, points = demo.evaluate_all(named, {}, [], size, EvalJournal(path, {"x": 1}))
    first = list(calls)
    assert len(first) == 2 * 3  # per set: BM25 over all queries, then the two rankers
    calls.clear()
    resumed_rows, resumed_points = demo.evaluate_all(
        named, {}, [], size, EvalJournal(path, {"x": 1})
    )
    assert calls == [("DL19", "bm25"), ("SciFact-test", "bm25")]  # only the all-query BM25 rows
    assert resumed_rows == rows and resumed_points == points
