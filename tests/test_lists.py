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
