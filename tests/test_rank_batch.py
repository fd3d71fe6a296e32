"""``rank_batch`` / ``rerank_batch``: several queries in one jitted call give the rankings of
the one-query path (ResRank single pass and windows, E2Rank, dense), with the number of model
calls the buckets promise. Tiny random models on the real tokenizers."""

import numpy as np
import pytest
from flax import nnx

from resrank_jax import init_backbone
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.embedding_model import EmbeddingModel
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.rerank import Candidate, EmptyCandidatesError
from resrank_jax.rerank.base import IdentityRanker, sliding_windows
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks import Recipe
from resrank_jax.tasks.dense import DenseTask
from resrank_jax.tasks.e2rank import E2RankTask
from resrank_jax.tasks.resrank import ResRankTask
from resrank_jax.train.models import TINY

SMOL = TINY["tiny-decoder"][0]
MINI = TINY["tiny-bert"][0]
WORDS = ["protein", "cell", "gene", "drug", "cancer", "virus", "patient", "study", "brain", "blood"]
QUERIES = ["what causes cancer", "gene therapy for the brain", "virus", "blood cell study drug"]
SIZES = [5, 13, 3, 9]  # different N: one bucket of 16 slots, 4 lists in one call


def candidates(n, seed):
    rng = np.random.default_rng(seed)
    words = lambda: " ".join(rng.choice(WORDS, int(rng.integers(3, 20))))  # noqa: E731
    return [Candidate(f"q{seed}-d{i}", words(), float(n - i)) for i in range(n)]


LISTS = [candidates(n, seed) for seed, n in enumerate(SIZES)]


def counting(ranker: ModelRanker) -> list[int]:
    """Wraps the ranker's compiled score; returns the list that receives each call's number
    of lists (the padded batch size)."""
    calls, score = [], ranker._score
    ranker._score = lambda m, e, b, q: (calls.append(e.shape[0]), score(m, e, b, q))[1]
    return calls


@pytest.fixture(scope="module")
def decoder():
    return init_backbone(SMOL, seed=3)


@pytest.fixture(scope="module")
def rankers(decoder, minilm_tokenizer, smollm2_tokenizer):
    recipe = Recipe(passage_max_length=64, list_size=4, prompt_doc_words=6, prompt_max_length=256)
    resrank = ResRank(
        Encoder(init_backbone(MINI, seed=4)), decoder, ResRankConfig(phi="linear"), rngs=nnx.Rngs(0)
    )
    return {
        "resrank": lambda **kw: ModelRanker(
            ResRankTask(recipe, minilm_tokenizer, smollm2_tokenizer), resrank, **kw
        ),
        "e2rank": lambda **kw: ModelRanker(
            E2RankTask(recipe, smollm2_tokenizer), EmbeddingModel(Encoder(decoder)), **kw
        ),
        "dense": lambda **kw: ModelRanker(
            DenseTask(recipe, minilm_tokenizer),
            EmbeddingModel(Encoder(init_backbone(MINI, seed=4))),
            **kw,
        ),
    }


def assert_same_rankings(batched, single):
    for b, s in zip(batched, single, strict=True):
        assert b.order.tolist() == s.order.tolist()
        np.testing.assert_allclose(b.scores, s.scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["resrank", "e2rank", "dense"])
def test_rank_batch_gives_the_one_query_rankings_in_one_call(rankers, name):
    one_by_one, ranker = rankers[name](), rankers[name]()  # two caches: both encode all
    single = [one_by_one.rank(q, c) for q, c in zip(QUERIES, LISTS, strict=True)]
    calls = counting(ranker)
    batched = ranker.rank_batch(QUERIES, LISTS)
    assert calls == [4], "4 lists of N = 3..13 go through one call of 4 lists"
    assert_same_rankings(batched, single)
    assert [r.stats["model_calls"] for r in batched] == [1, 1, 1, 1]
    assert [r.stats["tokens_processed"] for r in batched] == [
        s.stats["tokens_processed"] for s in single
    ]


def test_rank_batch_pads_the_number_of_lists_and_splits_at_max_batch(rankers):
    ranker = rankers["resrank"](max_batch=2)
    single = [ranker.rank(q, c) for q, c in zip(QUERIES[:3], LISTS[:3], strict=True)]
    calls = counting(ranker)
    assert_same_rankings(ranker.rank_batch(QUERIES[:3], LISTS[:3]), single)
    assert calls == [2, 1]
    ranker = rankers["resrank"]()
    calls = counting(ranker)
    assert_same_rankings(ranker.rank_batch(QUERIES[:3], LISTS[:3]), single)
    assert calls == [4], "3 lists are padded to a bucket of 4"


def test_windowed_rank_batch_batches_window_t_of_every_list(rankers):
    ranker = rankers["resrank"](window=(4, 2))
    single = [ranker.rank(q, c) for q, c in zip(QUERIES, LISTS, strict=True)]
    calls = counting(ranker)
    batched = ranker.rank_batch(QUERIES, LISTS)
    assert_same_rankings(batched, single)
    windows = [len(sliding_windows(n, 4, 2)) for n in SIZES]  # [2, 6, 1, 4]
    assert len(calls) == max(windows)
    assert sum(calls) >= sum(windows)
    assert [r.stats["model_calls"] for r in batched] == windows


def test_rerank_batch_takes_strings_and_keeps_the_edge_cases(rankers):
    ranker = rankers["dense"]()
    texts = [[c.text for c in cands] for cands in LISTS]
    results = ranker.rerank_batch(QUERIES, texts)
    for query, docs, result in zip(QUERIES, texts, results, strict=True):
        one = ranker.rerank(query, docs)
        assert result.order.tolist() == one.order.tolist()
        assert result.docids == [str(i) for i in one.order.tolist()]
    edge = ranker.rerank_batch(["a", QUERIES[0]], [["only one"], texts[0]])
    assert edge[0].order.tolist() == [0] and edge[0].stats["model_calls"] == 0
    assert edge[1].order.tolist() == results[0].order.tolist()
    with pytest.raises(EmptyCandidatesError):
        ranker.rerank_batch(["a", "b"], [texts[0], []])
    with pytest.raises(ValueError, match="2 queries for 1 lists"):
        ranker.rank_batch(["a", "b"], [LISTS[0]])
    with pytest.raises(TypeError, match="not one string"):
        ranker.rerank_batch("a", texts[:1])


def test_rankers_without_a_batched_call_loop_over_queries():
    ranked = IdentityRanker().rank_batch(QUERIES, LISTS)
    assert [r.order.tolist() for r in ranked] == [list(range(n)) for n in SIZES]
