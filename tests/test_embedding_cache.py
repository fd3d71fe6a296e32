"""Passage vectors are keyed by (encoder fingerprint, max length, text): two datasets that
share a docid, two encoders or two lengths never share a vector, and a saved cache is refused
by another encoder."""

import numpy as np
import pytest

from resrank_jax import init_backbone
from resrank_jax.models.embedding_model import EmbeddingModel
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank import Candidate
from resrank_jax.rerank.encode import (
    CacheMismatchError,
    EmbeddingCache,
    encode_texts,
    encoder_fingerprint,
)
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks import Recipe, get_task
from resrank_jax.train.models import TINY

MINI = TINY["tiny-bert"][0]
QUERY = "what do genes encode"
MSMARCO = "The 5519177th passage of MS MARCO is about tax forms."  # DL19 and SciFact share
SCIFACT = "Genes encode proteins that fold in the cell."  # docid 5519177


def dense(tok, seed=4, length=32, cache=None):
    encoder = Encoder(init_backbone(MINI, seed=seed))
    task = get_task("dense")(Recipe(passage_max_length=length), tok)
    return ModelRanker(task, EmbeddingModel(encoder), cache=cache), encoder


def numpy_scores(encoder, tok, texts, length=32):
    docs = encode_texts(encoder, tok, texts, max_length=length)
    return docs @ encode_texts(encoder, tok, [QUERY], max_length=64)[0]


def test_one_docid_in_two_datasets_gets_each_text_vector(minilm_tokenizer):
    ranker, encoder = dense(minilm_tokenizer)
    other = Candidate("d2", "Paris is in France.")
    first = ranker.rank(QUERY, [Candidate("5519177", MSMARCO), other])
    second = ranker.rank(QUERY, [Candidate("5519177", SCIFACT), other])
    assert first.stats["passages_encoded"] == 2 and second.stats["passages_encoded"] == 1
    np.testing.assert_allclose(
        second.scores, numpy_scores(encoder, minilm_tokenizer, [SCIFACT, other.text]), atol=1e-6
    )
    assert abs(first.scores[0] - second.scores[0]) > 1e-3


def test_encoders_and_lengths_do_not_share_vectors(minilm_tokenizer):
    cache = EmbeddingCache()
    a, _ = dense(minilm_tokenizer, seed=4, cache=cache)
    b, enc_b = dense(minilm_tokenizer, seed=5, cache=cache)
    short, _ = dense(minilm_tokenizer, seed=4, length=16, cache=cache)
    short.model = a.model  # the same encoder object, another passage length
    cands = [Candidate("x", MSMARCO), Candidate("y", SCIFACT)]
    a.rank(QUERY, cands)
    ranked_b = b.rank(QUERY, cands)
    assert ranked_b.stats["passages_encoded"] == 2  # nothing reused across encoders
    np.testing.assert_allclose(
        ranked_b.scores, numpy_scores(enc_b, minilm_tokenizer, [MSMARCO, SCIFACT]), atol=1e-6
    )
    assert short.rank(QUERY, cands).stats["passages_encoded"] == 2
    assert len(cache.encoders()) == 3 and a.rank(QUERY, cands).stats["passages_encoded"] == 0


def test_with_cache_reuses_vectors_only_of_an_equal_encoder(minilm_tokenizer):
    """Two rankers built apart from equal weights (a frozen encoder in two runs) share the
    vectors of one cache after ``with_cache``; a third with other weights encodes again."""
    shared = EmbeddingCache()
    cands = [Candidate("x", MSMARCO), Candidate("y", SCIFACT)]
    first, second, other = (
        dense(minilm_tokenizer, seed=s)[0].with_cache(shared) for s in (4, 4, 5)
    )
    assert first.rank(QUERY, cands).stats["passages_encoded"] == 2
    again = second.rank(QUERY, cands)
    assert again.stats["passages_encoded"] == 0
    np.testing.assert_allclose(again.scores, first.rank(QUERY, cands).scores, atol=0)
    assert other.rank(QUERY, cands).stats["passages_encoded"] == 2
    assert first.cache is shared and len(shared.encoders()) == 2


def test_fingerprint_follows_the_weights(minilm_tokenizer):
    encoder = Encoder(init_backbone(MINI, seed=4))
    before = encoder_fingerprint(encoder, minilm_tokenizer)
    assert before == encoder_fingerprint(Encoder(init_backbone(MINI, seed=4)), minilm_tokenizer)
    layer = encoder.backbone.layers[0].query.kernel
    layer[...] = layer[...].at[0, 0].add(1e-3)  # one trained weight moved
    assert encoder_fingerprint(encoder, minilm_tokenizer) != before


def test_saved_cache_is_refused_by_another_encoder(minilm_tokenizer, tmp_path):
    a, _ = dense(minilm_tokenizer, seed=4)
    a.rank(QUERY, [Candidate("x", MSMARCO), Candidate("y", SCIFACT)])
    a.cache.save(tmp_path / "cache.npz")
    again = EmbeddingCache.load(tmp_path / "cache.npz", expect=a.encoder_key)
    assert again.encoders() == {a.encoder_key} and len(again) == 2
    b, _ = dense(minilm_tokenizer, seed=5)
    with pytest.raises(CacheMismatchError, match="not of this ranker's"):
        EmbeddingCache.load(tmp_path / "cache.npz", expect=b.encoder_key)
    np.savez(tmp_path / "old.npz", docids=np.array(["x"]), vectors=np.zeros((1, 4)))
    with pytest.raises(CacheMismatchError, match="without encoder keys"):
        EmbeddingCache.load(tmp_path / "old.npz", expect=a.encoder_key)


def test_eval_cli_refuses_a_cache_of_another_length(tmp_path, capsys):
    import eval as eval_cli

    args = [
        "--candidates",
        "data/trec-dl19/candidates.jsonl",
        "--qrels",
        "data/trec-dl19/qrels.txt",
        "--ranker",
        "dense",
        "--model",
        "all-minilm-l6-v2",
        "--max-queries",
        "1",
        "--quiet",
        "--embedding-cache",
        str(tmp_path / "c.npz"),
    ]
    assert eval_cli.main([*args, "--passage-max-length", "16"]) == 0
    assert eval_cli.main([*args, "--passage-max-length", "32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not of this ranker's" in err[0]


def test_dl19_and_scifact_share_the_docids_the_readme_names():
    from resrank_jax.data.formats import read_candidates, read_corpus

    dl19 = {
        c.docid for q in read_candidates("data/trec-dl19/candidates.jsonl") for c in q.candidates
    }
    corpus = read_corpus("data/scifact/corpus.jsonl")
    scifact = read_candidates("data/scifact/candidates.test.jsonl", corpus)
    hits = [(q.qid, c.docid) for q in scifact for c in q.candidates if c.docid in dl19]
    assert {d for _, d in hits} == {"5519177", "7869794"}
    assert (len(hits), len({q for q, _ in hits}), len(scifact)) == (10, 9, 300)
