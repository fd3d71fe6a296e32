"""Training lists from SciFact train: where positives sit, and the seeded shuffle."""

import json

import numpy as np
import pytest

from resrank_jax.config import config_to_json, resolve_config
from resrank_jax.train.data import load_lists
from resrank_jax.train.lists import TrainingList, shuffle_candidates
from resrank_jax.train.resume import check_same_config


@pytest.fixture(scope="module")
def first_stage_lists():
    return load_lists(resolve_config("smollm2-135m"))[0]


def candidates(tl: TrainingList) -> list[tuple]:
    """(docid, text, grade, teacher label) per slot."""
    labels = zip(tl.qrels_labels.tolist(), tl.teacher_labels.tolist(), strict=True)
    return [(d, t, *lab) for d, t, lab in zip(tl.docids, tl.texts, labels, strict=True)]


def positive_share_per_slot(lists: list[TrainingList]) -> np.ndarray:
    counts = np.zeros(8)
    for tl in lists:
        counts[: len(tl.docids)] += tl.qrels_labels > 0
    return counts / counts.sum()


def test_first_stage_order_puts_positives_first_or_last(first_stage_lists):
    share = positive_share_per_slot(first_stage_lists)
    assert share[0] + share[-1] > 0.7  # 73% of positives: the artifact the shuffle removes


def test_shuffle_permutes_each_list_together_and_deterministically(first_stage_lists):
    shuffled = shuffle_candidates(first_stage_lists, seed=0)
    again = shuffle_candidates(first_stage_lists, seed=0)
    other_seed = shuffle_candidates(first_stage_lists, seed=1)
    moved = 0
    for before, after, same in zip(first_stage_lists, shuffled, again, strict=True):
        assert sorted(candidates(after)) == sorted(candidates(before))  # whole candidates move
        assert candidates(after) == candidates(same) and after.qid == before.qid
        moved += after.docids != before.docids
    assert moved > 0.8 * len(first_stage_lists)
    assert any(a.docids != b.docids for a, b in zip(shuffled, other_seed, strict=True))
    assert positive_share_per_slot(shuffled).max() < 0.2  # ~1/8 per slot


def test_load_lists_applies_the_configured_order(first_stage_lists):
    cfg = resolve_config("smollm2-135m", ["data.candidate_order=shuffled", "seed=3"])
    expected = shuffle_candidates(first_stage_lists, seed=3)
    assert [candidates(tl) for tl in load_lists(cfg)[0]] == [candidates(tl) for tl in expected]


def test_resume_accepts_fields_added_at_their_default_and_rejects_changes(tmp_path):
    cfg = resolve_config("tiny")
    saved = json.loads(config_to_json(cfg))
    del saved["data"]["candidate_order"]  # a run saved before the field existed
    check_same_config(json.dumps(saved), config_to_json(cfg), tmp_path)
    shuffled = resolve_config("tiny", ["data.candidate_order=shuffled"])
    with pytest.raises(ValueError, match=r"differs in \['data'\]"):
        check_same_config(json.dumps(saved), config_to_json(shuffled), tmp_path)


@pytest.fixture(scope="module")
def sampled_lists():
    over = ["data.negatives=sampled", "data.list_size=8"]
    return {
        seed: load_lists(resolve_config("smollm2-135m", [*over, f"seed={seed}"]))[0]
        for seed in (0, 1)
    }


def first_stage_ranks() -> dict[str, dict[str, int]]:
    """qid -> docid -> rank in SciFact train's BM25 top-100."""
    from resrank_jax.data.bundled import data_dir
    from resrank_jax.data.formats import read_candidates, read_corpus

    corpus = read_corpus(data_dir() / "scifact/corpus.jsonl")
    return {
        qc.qid: {c.docid: i for i, c in enumerate(qc.candidates)}
        for qc in read_candidates(data_dir() / "scifact/candidates.train.jsonl", corpus)
    }


def split_ranks(tl: TrainingList, rank: dict[str, int]) -> tuple[set, list[int]]:
    """The list's positives, and its negatives' first-stage ranks in slot order."""
    labelled = list(zip(tl.docids, tl.qrels_labels.tolist(), strict=True))
    return {d for d, g in labelled if g > 0}, [rank[d] for d, g in labelled if g == 0]


def test_sampled_negatives_come_from_the_whole_first_stage_list(first_stage_lists, sampled_lists):
    """``head`` negatives are the first non-relevant candidates of the BM25 top-100; sampled
    ones reach deep into it, keep the positives, and depend on the seed alone."""
    ranks = first_stage_ranks()
    deepest_head = deepest_sampled = 0
    for head, sampled in zip(first_stage_lists, sampled_lists[0], strict=True):
        assert head.qid == sampled.qid
        head_pos, head_neg = split_ranks(head, ranks[head.qid])
        sampled_pos, sampled_neg = split_ranks(sampled, ranks[head.qid])
        assert head_pos == sampled_pos
        assert sampled_neg == sorted(sampled_neg)  # shown in first-stage order
        deepest_head = max(deepest_head, *head_neg)
        deepest_sampled = max(deepest_sampled, *sampled_neg)
    assert deepest_head < 20 and deepest_sampled > 80
    over = ["data.negatives=sampled", "data.list_size=8"]
    again = load_lists(resolve_config("smollm2-135m", over))[0]
    assert [tl.docids for tl in again] == [tl.docids for tl in sampled_lists[0]]
    assert [tl.docids for tl in sampled_lists[1]] != [tl.docids for tl in sampled_lists[0]]


def ranknet_pairs(labels: np.ndarray, grades: np.ndarray) -> dict[str, int]:
    """Pairs ``label_i > label_j`` of one list, by kind."""
    kinds = {"pos_neg": 0, "neg_neg": 0, "pos_pos": 0}
    for i in range(len(labels)):
        for j in range(len(labels)):
            if labels[i] > labels[j]:
                kind = (
                    ("pos" if grades[i] > 0 else "neg") + "_" + ("pos" if grades[j] > 0 else "neg")
                )
                kinds[kind if kind != "neg_pos" else "pos_neg"] += 1
    return kinds


def test_judged_only_teacher_drops_negative_pairs_and_keeps_positive_ones(first_stage_lists):
    cfg = resolve_config("smollm2-135m", ["data.default_teacher=judged_only"])
    judged = load_lists(cfg)[0]
    totals = {"first_stage": np.zeros(3), "judged_only": np.zeros(3)}
    for default, only in zip(first_stage_lists, judged, strict=True):
        assert default.docids == only.docids
        for name, tl in (("first_stage", default), ("judged_only", only)):
            pairs = ranknet_pairs(tl.teacher_labels, tl.qrels_labels)
            totals[name] += [pairs["pos_neg"], pairs["neg_neg"], pairs["pos_pos"]]
            assert pairs["pos_neg"] == (tl.qrels_labels > 0).sum() * (tl.qrels_labels == 0).sum()
    assert totals["judged_only"][1] == 0 and totals["first_stage"][1] > 0
    assert totals["judged_only"][0] == totals["first_stage"][0] > 0
