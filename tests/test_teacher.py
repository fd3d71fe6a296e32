"""The fused teacher (``resrank_jax.train.teacher``, ``python -m resrank_jax.apps.teacher``):
orders computed by hand, the file read back by training, and the command on packaged
SciFact train with the real MiniLM."""

import json

import numpy as np
import pytest

from resrank_jax.apps.teacher import main
from resrank_jax.data.bundled import data_dir
from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
from resrank_jax.rerank.base import Ranker, Ranking, order_by_scores
from resrank_jax.train.lists import TrainingList, lists_from_qrels, lists_from_teacher_file
from resrank_jax.train.teacher import fused_teacher_order, teacher_records, write_teacher


def test_positives_come_first_then_reciprocal_rank_fusion_of_both_orders():
    # first-stage ranks 1..4; the ranker's order is d3, d2, d0, d1; d2 is judged relevant.
    # RRF (k=60): d0 = 1/61 + 1/63, d3 = 1/64 + 1/61, d1 = 1/62 + 1/64: d0 > d3 > d1
    grades = np.array([0, 0, 1, 0], np.float32)
    scores = np.array([0.2, 0.1, 0.5, 0.9])
    assert fused_teacher_order(grades, scores) == [2, 0, 3, 1]
    # two positives by grade; the rest by fusion
    assert fused_teacher_order(np.array([0, 1, 2, 0], np.float32), scores) == [2, 1, 0, 3]


def test_fusion_constant_and_ties_keep_first_stage_order():
    # ranker order d4 d1 d2 d3 d0; first stage d0..d4.
    scores = np.array([0.0, 0.8, 0.6, 0.4, 1.0])
    grades = np.zeros(5, np.float32)
    # k=60: d1 = 2/62 (.03226) beats d0 = 1/61 + 1/65 (.03178), which ties d4 = 1/65 + 1/61
    # (kept in list order), then d2 = 2/63 (.03175) and d3 = 2/64
    assert fused_teacher_order(grades, scores, rrf_k=60) == [1, 0, 4, 2, 3]
    # k=0: d0 = d4 = 1 + 1/5 = 1.2 beat d1 = 1/2 + 1/2 = 1
    assert fused_teacher_order(grades, scores, rrf_k=0) == [0, 4, 1, 2, 3]


class WordOverlapRanker(Ranker):
    """Scores a candidate by the query words it contains (an independent stand-in)."""

    name = "overlap"

    def _rank(self, query, candidates):
        words = set(query.lower().split())
        scores = np.array([len(words & set(c.text.lower().split())) for c in candidates], float)
        return Ranking(order_by_scores(scores), scores, {})


def _lists() -> list[TrainingList]:
    texts = ["cats sleep", "dogs bark loudly", "cats and dogs", "fish swim", "dogs dogs run"]
    grades = np.array([0, 0, 1, 0, 0], np.float32)
    other = ["a b", "a", "c", "b c a"]
    return [
        TrainingList("q1", "do dogs bark", [f"d{i}" for i in range(5)], texts, grades, grades),
        TrainingList("q2", "a b c", [f"e{i}" for i in range(4)], other, np.zeros(4), np.zeros(4)),
    ]


def test_a_written_teacher_file_trains_with_the_fused_labels(tmp_path):
    lists = _lists()
    path = tmp_path / "out" / "teacher.jsonl"
    assert write_teacher(str(path), teacher_records(lists, WordOverlapRanker(), batch_size=1)) == 2
    records = [json.loads(line) for line in path.read_text().splitlines()]
    # q1 overlap: d0 0, d1 2 ("dogs", "bark"), d2 1, d3 0, d4 1 -> ranker order d1 d2 d4 d0 d3
    # RRF: d1 1/62+1/61, d0 1/61+1/64, d4 1/65+1/63, d3 1/64+1/65; d2 (judged) first
    assert records[0]["ranking"] == [2, 1, 0, 4, 3]
    assert records[0]["docids"] == lists[0].docids and records[0]["qid"] == "q1"
    assert not (tmp_path / "out" / "teacher.jsonl.partial").exists()
    read = lists_from_teacher_file(path, list_size=5)
    assert read[0].texts == lists[0].texts
    np.testing.assert_array_equal(read[0].teacher_labels, [3, 4, 5, 1, 2])  # K - rank
    # q2 overlap: e0 2, e1 1, e2 1, e3 3 -> ranker e3 e0 e1 e2; RRF: e0 1/61+1/62 best
    assert records[1]["ranking"] == [0, 3, 1, 2]
    # a shorter list_size keeps each list's first documents, ranked in the same order
    shorter = lists_from_teacher_file(path, list_size=3)[0]
    np.testing.assert_array_equal(shorter.teacher_labels, [1, 2, 3])


def test_the_command_ranks_packaged_scifact_train_lists_with_minilm(tmp_path, capsys):
    out = tmp_path / "teacher.jsonl"
    argv = ["--output", str(out), "--max-queries", "3", "--list-size", "4", "--quiet"]
    assert main(argv) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    scifact = data_dir() / "scifact"
    corpus = read_corpus(scifact / "corpus.jsonl")
    queries = read_candidates(scifact / "candidates.train.jsonl", corpus)[:3]
    qrels = read_qrels(scifact / "qrels.train.txt")
    lists, _ = lists_from_qrels(queries, qrels, corpus, list_size=4)
    assert [r["docids"] for r in records] == [tl.docids for tl in lists]
    for rec in records:  # the judged positive leads, the others are a permutation
        positives = {d for d, g in qrels[rec["qid"]].items() if g > 0}
        assert rec["docids"][rec["ranking"][0]] in positives
        assert sorted(rec["ranking"]) == list(range(len(rec["docids"])))
    assert "wrote 3 teacher lists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--ranker", "resrank"], "--ranker resrank needs --checkpoint"),
        (["--ranker", "bm25"], "--ranker must be dense, resrank or e2rank"),
        (["--list-size", "1"], "--list-size must be >= 2"),
        (["--candidates", "missing.jsonl"], "missing.jsonl"),
    ],
)
def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, argv, message):
    assert main(["--output", str(tmp_path / "t.jsonl"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_dev_queries_are_dropped_from_a_teacher_file_by_qid(tmp_path):
    """``data.dev_queries`` holds out the candidates file's last queries; a teacher file
    covering every query must not train on them (eval_every would score trained queries)."""
    import dataclasses

    from resrank_jax.config import resolve_config
    from resrank_jax.train.data import load_lists

    cfg = resolve_config("tiny")
    data = cfg.data
    qids = [
        q.qid for q in read_candidates(data.file("candidates"), read_corpus(data.file("corpus")))
    ]
    path = tmp_path / "teacher.jsonl"
    path.write_text(
        "".join(
            json.dumps({"qid": q, "query": q, "documents": ["a", "b"], "ranking": [1, 0]}) + "\n"
            for q in qids
        )
    )
    data = dataclasses.replace(data, teacher=str(path), dev_queries=3)
    lists, counts = load_lists(dataclasses.replace(cfg, data=data))
    assert [tl.qid for tl in lists] == qids[:-3] and counts["dev_held_out"] == 3
