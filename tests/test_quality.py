"""``apps/quality.py``: shuffled evaluation lists, paired tests against independent
references, and a journaled multi-seed run that resumes without ranking again."""

import itertools
import json

import numpy as np
import pytest
from scipy import stats

from resrank_jax.apps import quality
from resrank_jax.apps.experiment import eval_datasets
from resrank_jax.evaluation import shuffled


def test_shuffled_permutes_each_query_by_seed_alone():
    dataset = eval_datasets()[0][0]
    order = [[x.docid for x in qc.candidates] for qc in dataset.queries]
    once, again, other = (shuffled(dataset, s) for s in (0, 0, 1))
    for ids, a, b, c in zip(order, once.queries, again.queries, other.queries, strict=True):
        shown = [x.docid for x in a.candidates]
        assert sorted(shown) == sorted(ids) and shown != ids
        assert shown == [x.docid for x in b.candidates]
        assert shown != [x.docid for x in c.candidates]
    assert [[x.docid for x in qc.candidates] for qc in dataset.queries] == order  # not in place


def wilcoxon_exact_p(diff: np.ndarray) -> float:
    """Two-sided exact signed-rank p by enumerating every sign assignment of the ranks."""
    ranks = stats.rankdata(np.abs(diff))
    w = ranks[diff > 0].sum()
    sums = np.array([np.dot(signs, ranks) for signs in itertools.product((0, 1), repeat=len(diff))])
    return min(1.0, 2 * min(np.mean(sums <= w), np.mean(sums >= w)))


def test_paired_tests_match_references_by_hand():
    rng = np.random.default_rng(3)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.uniform(0, 1, 10))}
    b = {q: v - 0.1 + float(rng.normal(0, 0.1)) for q, v in a.items()}
    b["only_b"] = 0.5  # not shared: ignored
    out = quality.paired_tests(a, b)
    x = np.array([a[f"q{i}"] for i in range(10)])
    y = np.array([b[f"q{i}"] for i in range(10)])
    d = x - y
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    assert out["queries"] == 10
    np.testing.assert_allclose(out["delta"], d.mean(), rtol=1e-12)
    np.testing.assert_allclose(out["t_p"], 2 * stats.t.sf(abs(t), len(d) - 1), rtol=1e-9)
    np.testing.assert_allclose(out["wilcoxon_p"], wilcoxon_exact_p(d), rtol=1e-9)
    assert quality.paired_tests(a, dict(a)) == {
        "delta": 0.0,
        "t_p": 1.0,
        "wilcoxon_p": 1.0,
        "queries": 10,
    }


def test_paired_tests_see_a_mean_over_equal_seeds_as_no_difference():
    a = {"q0": 0.1, "q1": 0.7, "q2": 0.3, "q3": 0.9}
    means = quality._mean_per_query([a, a, a])
    assert any(means[q] != a[q] for q in a)  # np.mean of three equal floats: last bit off
    assert quality.paired_tests(means, a) == {
        "delta": 0.0,
        "t_p": 1.0,
        "wilcoxon_p": 1.0,
        "queries": 4,
    }


@pytest.mark.slow
def test_two_seeds_train_rank_and_resume_from_the_journal(tmp_path, monkeypatch, capsys):
    argv = ["--preset", "tiny", "--seeds", "0", "1", "--output-dir", str(tmp_path)]
    argv += ["--dl19-queries", "2", "--scifact-queries", "2", "--passage-max-length", "32"]
    argv += ["steps=2", "checkpoint_every=2", "data.max_queries=16"]
    assert quality.main(argv) == 0
    first = json.loads((tmp_path / "quality.json").read_text())["summary"]
    for set_name in ("DL19", "SciFact-test"):
        rankers = first[set_name]["rankers"]
        assert set(rankers) == {quality.ZERO_SHOT, quality.ENCODER, quality.RESRANK}
        assert set(rankers[quality.RESRANK]["per_seed"]) == {"0", "1"}
        for r in rankers.values():
            np.testing.assert_allclose(r["mean"], np.mean(list(r["per_seed"].values())))
        assert len(first[set_name]["tests"]) == 3
    for seed in (0, 1):
        cfg = json.loads((tmp_path / f"seed{seed}/config.json").read_text())
        assert cfg["seed"] == seed and cfg["data"]["candidate_order"] == "shuffled"

    def no_ranking(*args, **kwargs):
        raise AssertionError("a journaled entry was ranked again")

    monkeypatch.setattr(quality, "per_query_ndcg", no_ranking)
    assert quality.main(argv) == 0
    assert json.loads((tmp_path / "quality.json").read_text())["summary"] == first
