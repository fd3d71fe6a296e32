"""``apps/slot_states.py``: the statistics by hand, and the states it reads from a ranker."""

import numpy as np
from flax import nnx

from resrank_jax.apps.slot_states import list_stats, slot_states
from resrank_jax.models.build import init_backbone
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.rerank.base import Candidate
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks.resrank import ResRankTask
from resrank_jax.train.models import TINY
from tests.test_rankers import RECIPE


def test_list_stats_by_hand():
    same = list_stats(np.ones((3, 4)), np.ones((3, 4)))
    assert same["slot_state_cosine"] == 1.0 and same["centred_norm_ratio"] == 0.0
    basis = np.eye(4)  # orthonormal rows: cosines 0, |e_i - mean| = sqrt(1 - 1/4)
    spread = list_stats(basis, basis * 2.0)
    assert spread["slot_state_cosine"] == 0.0 and spread["slot_input_cosine"] == 0.0
    np.testing.assert_allclose(spread["centred_norm_ratio"], np.sqrt(0.75), rtol=1e-12)
    # two of three rows equal: pairs (0,1) cos 1, (0,2) and (1,2) cos 0 -> mean 1/3
    rows = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(list_stats(rows, rows)["slot_state_cosine"], 1 / 3, rtol=1e-12)


def test_identical_passages_get_one_slot_input_and_positional_states(
    minilm_tokenizer, smollm2_tokenizer
):
    """Five copies of one passage: the reranker is given five equal slot inputs, and its
    causal states at the five slots still differ (each sees what precedes it)."""
    encoder = Encoder(init_backbone(TINY["tiny-bert"][0], seed=4))
    model = ResRank(
        encoder,
        init_backbone(TINY["tiny-decoder"][0], seed=3),
        ResRankConfig(phi="linear"),
        rngs=nnx.Rngs(0),
    )
    ranker = ModelRanker(ResRankTask(RECIPE, minilm_tokenizer, smollm2_tokenizer), model)
    h_nd, x_nd = slot_states(
        ranker, "what causes cancer", [Candidate(f"d{i}", "gene") for i in range(5)]
    )
    assert h_nd.shape[0] == x_nd.shape[0] == 5
    stats = list_stats(h_nd, x_nd)
    np.testing.assert_allclose(stats["slot_input_cosine"], 1.0, atol=1e-6)
    assert stats["slot_state_cosine"] < 0.999 and stats["centred_norm_ratio"] > 1e-3
