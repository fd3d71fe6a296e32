"""The Ranker interface on real tokenizers with tiny random models: edge cases, caching,
single pass vs sliding window, E2Rank prompts and the generative baseline."""

import warnings

import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from resrank_jax import init_backbone
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.prompts import SLOT, chat, resrank_user_message, tokenize_with_slots
from resrank_jax.rerank import Candidate, EmptyCandidatesError
from resrank_jax.rerank.base import IdentityRanker, sliding_windows
from resrank_jax.rerank.embedding_rankers import DenseRanker, E2RankRanker, ResRankRanker
from resrank_jax.rerank.generative import GenerativeRanker, parse_permutation
from resrank_jax.train.models import TINY

SMOL = TINY["tiny-decoder"][0]  # the tiny backbones of the `tiny` preset: real vocabularies
MINI = TINY["tiny-bert"][0]
WORDS = ["protein", "cell", "gene", "drug", "cancer", "virus", "patient", "study", "brain", "blood"]


def candidates(n, seed=0, words=12):
    rng = np.random.default_rng(seed)
    return [
        Candidate(f"s{seed}-d{i}", " ".join(rng.choice(WORDS, words)), float(n - i))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def decoder():
    return init_backbone(SMOL, seed=3)


@pytest.fixture(scope="module")
def resrank(decoder):
    return ResRank(
        Encoder(init_backbone(MINI, seed=4)), decoder, ResRankConfig(phi="linear"), rngs=nnx.Rngs(0)
    )


def test_sliding_windows_cover_the_list_bottom_up():
    spans = sliding_windows(100, 20, 10)
    assert spans[0] == (80, 100) and spans[-1] == (0, 20) and len(spans) == 9
    assert sliding_windows(15, 20, 10) == [(0, 15)]
    with pytest.raises(ValueError):
        sliding_windows(10, 20, 30)


@given(st.text(max_size=200), st.integers(0, 30))
@settings(max_examples=200, deadline=None)
def test_parse_permutation_always_valid(text, n):
    assert sorted(parse_permutation(text, n)) == list(range(n))


def test_parse_permutation_cases():
    assert parse_permutation("[2] > [3] > [1]", 3) == [1, 2, 0]
    assert parse_permutation("[2] > [2] > [9] > [0]", 3) == [1, 0, 2]
    assert parse_permutation("I cannot rank these.", 3) == [0, 1, 2]


def test_empty_list_is_an_error_and_one_item_is_identity(minilm_tokenizer):
    ranker = DenseRanker(Encoder(init_backbone(MINI, seed=4)), minilm_tokenizer)
    with pytest.raises(EmptyCandidatesError, match="'q' has no candidates"):
        ranker.rank("q", [])
    one = ranker.rank("q", [Candidate("d0", "text", 7.0)])
    assert (
        one.order.tolist() == [0] and one.scores.tolist() == [7.0] and one.stats["model_calls"] == 0
    )
    assert IdentityRanker().rank("q", candidates(5)).order.tolist() == [0, 1, 2, 3, 4]


def test_dense_ranker_scores_are_cosines_and_cache_is_reused(minilm_tokenizer):
    encoder = Encoder(init_backbone(MINI, seed=4))
    ranker = DenseRanker(encoder, minilm_tokenizer)
    cands = candidates(10)
    first = ranker.rank("cancer drug", cands)
    assert first.stats["passages_encoded"] == 10
    again = ranker.rank("cancer drug", cands)
    assert again.stats["passages_encoded"] == 0
    np.testing.assert_array_equal(first.scores, again.scores)
    from resrank_jax.rerank.encode import encode_texts

    docs = encode_texts(encoder, minilm_tokenizer, [c.text for c in cands])
    query = encode_texts(encoder, minilm_tokenizer, ["cancer drug"])[0]
    np.testing.assert_allclose(first.scores, docs @ query, atol=1e-6)


def test_duplicates_are_kept_and_ranked_separately(minilm_tokenizer):
    ranker = DenseRanker(Encoder(init_backbone(MINI, seed=4)), minilm_tokenizer)
    cands = candidates(4)
    ranking = ranker.rank("gene", [*cands, cands[1]])
    assert sorted(ranking.order.tolist()) == [0, 1, 2, 3, 4]
    assert ranking.scores[1] == ranking.scores[4]


def test_one_docid_with_two_texts_is_an_error(minilm_tokenizer):
    ranker = DenseRanker(Encoder(init_backbone(MINI, seed=4)), minilm_tokenizer)
    with pytest.raises(ValueError, match="docid 'x' appears with two different texts"):
        ranker.rank("q", [Candidate("x", "one text"), Candidate("x", "another text")])


def test_long_passages_are_truncated_counted_and_warned_once(minilm_tokenizer):
    from resrank_jax.tokenizer import TextTokenizer

    tok = TextTokenizer(minilm_tokenizer.hf, pooling="mean")  # fresh warning state
    ranker = DenseRanker(Encoder(init_backbone(MINI, seed=4)), tok, passage_max_length=16)
    long = candidates(3, words=40) + candidates(2, seed=1, words=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ranking = ranker.rank("q", long)
        ranker.rank("q2", candidates(3, seed=5, words=40))
    assert ranking.stats["truncated"] == 3
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1


def test_slot_prompt_layout_with_the_real_chat_template(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = chat(tok, resrank_user_message("what is a gene", 3))
    prompt = tokenize_with_slots(tok, text, tok.pad_id)
    assert len(prompt.slot_positions) == 3
    assert all(prompt.ids[p] == tok.pad_id for p in prompt.slot_positions)
    pieces = text.split(SLOT)
    assert tok.hf.decode(prompt.ids[: prompt.slot_positions[0]]) == pieces[0]
    assert tok.hf.decode(prompt.ids[prompt.slot_positions[-1] + 1 :]) == pieces[-1]
    assert pieces[-1].rstrip().endswith("<|im_start|>assistant")


def test_resrank_single_pass_over_100_and_cached_embeddings(
    resrank, minilm_tokenizer, smollm2_tokenizer
):
    ranker = ResRankRanker(resrank, minilm_tokenizer, smollm2_tokenizer)
    cands = candidates(100)
    ranking = ranker.rank("what causes cancer", cands)
    assert ranking.stats["model_calls"] == 1 and ranking.stats["passages_encoded"] == 100
    cached = ranker.rank("what causes cancer", cands)
    assert cached.stats["passages_encoded"] == 0
    np.testing.assert_array_equal(ranking.order, cached.order)
    assert np.all(np.abs(ranking.scores) <= 1 + 1e-6)


def test_resrank_sliding_window(resrank, minilm_tokenizer, smollm2_tokenizer):
    ranker = ResRankRanker(resrank, minilm_tokenizer, smollm2_tokenizer, window=(20, 10))
    ranking = ranker.rank("what causes cancer", candidates(45))
    assert ranking.stats["model_calls"] == len(sliding_windows(45, 20, 10)) == 4
    assert sorted(ranking.order.tolist()) == list(range(45))


def test_e2rank_pseudo_query_and_ranking(decoder, smollm2_tokenizer):
    ranker = E2RankRanker(Encoder(decoder), smollm2_tokenizer, top_k=3, prompt_doc_words=4)
    cands = candidates(8)
    pq = ranker.pseudo_query("what causes cancer", cands)
    assert "[3] " in pq and "[4] " not in pq and pq.count("\n[") == 3
    assert "Search Query: what causes cancer" in pq
    ranking = ranker.rank("what causes cancer", cands)
    assert sorted(ranking.order.tolist()) == list(range(8))


def test_generative_baseline_returns_valid_permutations(decoder, smollm2_tokenizer):
    ranker = GenerativeRanker(decoder, smollm2_tokenizer, window=4, step=2, max_new_tokens=12)
    ranking = ranker.rank("what causes cancer", candidates(7, words=5))
    assert sorted(ranking.order.tolist()) == list(range(7))
    assert ranking.stats["model_calls"] == len(sliding_windows(7, 4, 2))
    assert 0 < ranking.stats["tokens_generated"] <= 12 * ranking.stats["model_calls"]
