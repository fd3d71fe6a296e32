"""The Ranker interface on real tokenizers with tiny random models: edge cases, caching,
scores against independent references, padding, sliding windows against a hand-computed
order, E2Rank prompts and the generative baseline."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

from resrank_jax import init_backbone
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.embedding_model import EmbeddingModel
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.prompts import SLOT, SlotPrompt, chat, resrank_user_message, tokenize_with_slots
from resrank_jax.rerank import Candidate, EmptyCandidatesError
from resrank_jax.rerank.base import IdentityRanker, order_by_scores, sliding_windows
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.rerank.generative import GenerativeRanker, parse_permutation
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks import Recipe, Task
from resrank_jax.tasks.base import masked
from resrank_jax.tasks.dense import DenseTask
from resrank_jax.tasks.e2rank import E2RankTask
from resrank_jax.tasks.resrank import ResRankTask
from resrank_jax.train.models import TINY

SMOL = TINY["tiny-decoder"][0]  # the tiny backbones of the `tiny` preset: real vocabularies
MINI = TINY["tiny-bert"][0]
WORDS = ["protein", "cell", "gene", "drug", "cancer", "virus", "patient", "study", "brain", "blood"]
RECIPE = Recipe(passage_max_length=256, query_max_length=64)


def candidates(n, seed=0, words=12):
    rng = np.random.default_rng(seed)
    return [
        Candidate(f"s{seed}-d{i}", " ".join(rng.choice(WORDS, words)), float(n - i))
        for i in range(n)
    ]


def dense_ranker(tokenizer, **recipe) -> ModelRanker:
    task = DenseTask(Recipe(**{"passage_max_length": 256, **recipe}), tokenizer)
    return ModelRanker(task, EmbeddingModel(Encoder(init_backbone(MINI, seed=4))))


@pytest.fixture(scope="module")
def decoder():
    return init_backbone(SMOL, seed=3)


@pytest.fixture(scope="module")
def resrank(decoder):
    return ResRank(
        Encoder(init_backbone(MINI, seed=4)), decoder, ResRankConfig(phi="linear"), rngs=nnx.Rngs(0)
    )


@pytest.fixture(scope="module")
def resrank_task(minilm_tokenizer, smollm2_tokenizer):
    return ResRankTask(RECIPE, minilm_tokenizer, smollm2_tokenizer)


def unpadded_resrank_scores(model, task, query, texts) -> np.ndarray:
    """Reference: passages encoded on their own, and one eager ``task.score`` call on the
    exact prompt (no left padding) with exactly ``len(texts)`` slots."""
    e = encode_texts(
        model.encoder, task.encoder_tokenizer, texts, max_length=task.recipe.passage_max_length
    )
    prompt = task.prompt(query, texts)
    fields = task.prompt_fields([prompt], n_slots=len(texts), prompt_length=len(prompt.ids))
    assert fields["prompt_mask"].all() and fields["slot_pos"].shape == (1, len(texts))
    fields["cand_mask"] = np.ones((1, len(texts)), np.int32)
    return np.asarray(task.score(model, jnp.asarray(e[None]), fields, None))[0]


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
    ranker = dense_ranker(minilm_tokenizer)
    with pytest.raises(EmptyCandidatesError, match="'q' has no candidates"):
        ranker.rank("q", [])
    one = ranker.rank("q", [Candidate("d0", "text", 7.0)])
    assert (
        one.order.tolist() == [0] and one.scores.tolist() == [7.0] and one.stats["model_calls"] == 0
    )
    assert IdentityRanker().rank("q", candidates(5)).order.tolist() == [0, 1, 2, 3, 4]


def test_with_model_reuses_vectors_of_an_unchanged_encoder_only(minilm_tokenizer):
    """Dev evaluation swaps in each new model: a frozen encoder's vectors are reused, a
    trained encoder's (another fingerprint) are encoded afresh and score differently."""
    ranker, cands = dense_ranker(minilm_tokenizer), candidates(6)
    first = ranker.rank("cancer drug", cands)
    same = ranker.with_model(EmbeddingModel(Encoder(init_backbone(MINI, seed=4))))
    assert same.rank("cancer drug", cands).stats["passages_encoded"] == 0
    other = ranker.with_model(EmbeddingModel(Encoder(init_backbone(MINI, seed=5))))
    moved = other.rank("cancer drug", cands)
    assert moved.stats["passages_encoded"] == 6
    assert len(other.cache) == 6 and len(ranker.cache) == 6  # old encoder's vectors not kept
    assert not np.allclose(moved.scores, first.scores)


def test_dense_ranker_scores_are_cosines_and_cache_is_reused(minilm_tokenizer):
    ranker = dense_ranker(minilm_tokenizer)
    cands = candidates(10)
    first = ranker.rank("cancer drug", cands)
    assert first.stats["passages_encoded"] == 10
    again = ranker.rank("cancer drug", cands)
    assert again.stats["passages_encoded"] == 0
    np.testing.assert_array_equal(first.scores, again.scores)
    encoder = ranker.model.encoder
    docs = encode_texts(encoder, minilm_tokenizer, [c.text for c in cands], max_length=256)
    query = encode_texts(encoder, minilm_tokenizer, ["cancer drug"], max_length=64)[0]
    reference = docs.astype(np.float64) @ query.astype(np.float64)  # NumPy cosines
    np.testing.assert_allclose(first.scores, reference, atol=1e-6)
    assert first.order.tolist() == np.argsort(-reference, kind="stable").tolist()


def test_duplicates_are_kept_and_ranked_separately(minilm_tokenizer):
    ranker = dense_ranker(minilm_tokenizer)
    cands = candidates(4)
    ranking = ranker.rank("gene", [*cands, cands[1]])
    assert sorted(ranking.order.tolist()) == [0, 1, 2, 3, 4]
    assert ranking.scores[1] == ranking.scores[4]


def test_one_docid_with_two_texts_gets_a_vector_per_text(minilm_tokenizer):
    ranker = dense_ranker(minilm_tokenizer)  # the cache keys vectors by text, not docid
    ranking = ranker.rank("q", [Candidate("x", "one gene text"), Candidate("x", "another drug")])
    assert ranking.stats["passages_encoded"] == 2 and ranking.scores[0] != ranking.scores[1]


def test_long_passages_are_truncated_counted_and_warned_once(minilm_tokenizer):
    from resrank_jax.tokenizer import TextTokenizer

    tok = TextTokenizer(minilm_tokenizer.hf, pooling="mean")  # fresh warning state
    ranker = dense_ranker(tok, passage_max_length=16)
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


def test_resrank_single_pass_over_100_and_cached_embeddings(resrank, resrank_task):
    ranker = ModelRanker(resrank_task, resrank)
    cands = candidates(100)
    ranking = ranker.rank("what causes cancer", cands)
    assert ranking.stats["model_calls"] == 1 and ranking.stats["passages_encoded"] == 100
    cached = ranker.rank("what causes cancer", cands)
    assert cached.stats["passages_encoded"] == 0
    np.testing.assert_array_equal(ranking.order, cached.order)
    # 100 candidates are padded to 128 slots and the prompt to its bucket: the scores are
    # those of one unpadded call, and the order is theirs
    reference = unpadded_resrank_scores(
        resrank, resrank_task, "what causes cancer", [c.text for c in cands]
    )
    np.testing.assert_allclose(ranking.scores, reference, rtol=0, atol=1e-5)
    assert ranking.order.tolist() == np.argsort(-ranking.scores, kind="stable").tolist()
    assert np.unique(ranking.scores).size == 100  # no ties: the order is fixed by the scores


def test_score_list_padding_leaves_scores_unchanged(resrank, resrank_task):
    """N = 5 candidates are scored with 8 slots (3 padded, masked) and a bucketed prompt; the
    5 scores equal a direct unpadded ``task.score`` call to fp32 rounding."""
    ranker = ModelRanker(resrank_task, resrank)
    cands = candidates(5, seed=2)
    seen = []
    score = ranker._score
    ranker._score = lambda m, e, b, q: (seen.append((e, b)), score(m, e, b, q))[1]
    (scores,) = ranker.score_lists([ranker.embedded("what causes cancer", cands)])
    ((e_pad, batch),) = seen
    assert e_pad.shape[1] == 8 and batch["slot_pos"].shape == (1, 8)
    assert batch["cand_mask"][0].tolist() == [1] * 5 + [0] * 3
    assert not batch["prompt_mask"].all(), "the prompt is left-padded to its bucket"
    reference = unpadded_resrank_scores(
        resrank, resrank_task, "what causes cancer", [c.text for c in cands]
    )
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-6)


def test_resrank_sliding_window(resrank, resrank_task):
    ranker = ModelRanker(resrank_task, resrank, window=(20, 10))
    ranking = ranker.rank("what causes cancer", candidates(45))
    assert ranking.stats["model_calls"] == len(sliding_windows(45, 20, 10)) == 4
    assert sorted(ranking.order.tolist()) == list(range(45))


class ScoreInTextTask(Task):
    """A stub model: each candidate's score is the number in its text (``"score=3"``), so a
    ranking can be worked out by hand. Its "embedding" is that number."""

    name = "score-in-text"
    has_prompt = False

    def prompt(self, query, texts):
        return SlotPrompt([], [])

    def score(self, model, e_bke, batch, q_be):
        return masked(e_bke[..., 0], batch["cand_mask"])

    def check(self, model):
        pass

    @staticmethod
    def make_model(encoder, reranker, cfg, seed):
        return None


class ScoreInTextRanker(ModelRanker):
    def passage_embeddings(self, candidates, stats):
        return np.asarray([[float(c.text.split("=")[1]), 0.0] for c in candidates], np.float32)


def test_sliding_window_order_matches_the_hand_computed_one():
    scores = [3, 5, 1, 4, 0, 2, 6]  # candidate i (first-stage position i) scores scores[i]
    cands = [Candidate(f"d{i}", f"score={s}") for i, s in enumerate(scores)]
    ranker = ScoreInTextRanker(ScoreInTextTask(Recipe(), None), None, window=(4, 2))
    # n=7, window 4, step 2: windows [3,7), [1,5), [0,3), bottom-up; each sorts its slice
    #   start             order = [0, 1, 2, 3, 4, 5, 6]
    #   [3,7): 3,4,5,6 (scores 4,0,2,6) -> 6,3,5,4:  order = [0, 1, 2, 6, 3, 5, 4]
    #   [1,5): 1,2,6,3 (scores 5,1,6,4) -> 6,1,3,2:  order = [0, 6, 1, 3, 2, 5, 4]
    #   [0,3): 0,6,1   (scores 3,6,5)   -> 6,1,0:    order = [6, 1, 0, 3, 2, 5, 4]
    # (a global sort would give [6, 1, 3, 0, 5, 2, 4]: 0 stays above 3, 2 above 5)
    ranking = ranker.rank("q", cands)
    assert ranking.order.tolist() == [6, 1, 0, 3, 2, 5, 4]
    assert ranking.stats["model_calls"] == 3
    assert order_by_scores(ranking.scores).tolist() == [6, 1, 0, 3, 2, 5, 4]
    assert ScoreInTextRanker(ScoreInTextTask(Recipe(), None), None).rank(
        "q", cands
    ).order.tolist() == [6, 1, 3, 0, 5, 2, 4]  # single pass: the global sort


def test_e2rank_pseudo_query_and_ranking(decoder, smollm2_tokenizer):
    recipe = Recipe(list_size=3, prompt_doc_words=4, prompt_max_length=512)
    task = E2RankTask(recipe, smollm2_tokenizer)
    ranker = ModelRanker(task, EmbeddingModel(Encoder(decoder)))
    cands = candidates(8)
    pq = smollm2_tokenizer.hf.decode(task.prompt("what causes cancer", [c.text for c in cands]).ids)
    assert "[3] " in pq and "[4] " not in pq and pq.count("\n[") == 3
    assert "Search Query: what causes cancer" in pq
    ranking = ranker.rank("what causes cancer", cands)
    assert sorted(ranking.order.tolist()) == list(range(8))
    assert ranking.order.tolist() == np.argsort(-ranking.scores, kind="stable").tolist()


def test_generative_baseline_returns_valid_permutations(decoder, smollm2_tokenizer):
    ranker = GenerativeRanker(decoder, smollm2_tokenizer, window=4, step=2, max_new_tokens=12)
    ranking = ranker.rank("what causes cancer", candidates(7, words=5))
    assert sorted(ranking.order.tolist()) == list(range(7))
    assert ranking.stats["model_calls"] == len(sliding_windows(7, 4, 2))
    assert 0 < ranking.stats["tokens_generated"] <= 12 * ranking.stats["model_calls"]
