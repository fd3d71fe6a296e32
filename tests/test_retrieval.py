"""Dense retrieval over a real corpus equals a brute-force NumPy search (sharded JAX matmul,
and faiss when the extra is installed); the index doubles as the rerankers' embedding cache."""

import sys

import numpy as np
import pytest

from resrank_jax import load_backbone, make_mesh
from resrank_jax.data.formats import read_corpus, read_queries
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.retrieval import DenseIndex


@pytest.fixture(scope="module")
def scifact(minilm_tokenizer):
    """``(index, queries [6, D], corpus)``: 203 SciFact documents (not a multiple of 8)."""
    corpus = dict(list(read_corpus("data/scifact/corpus.jsonl").items())[:203])
    queries = list(read_queries("data/scifact/queries.jsonl").values())[:6]
    model, _ = load_backbone(packaged_weights("all-minilm-l6-v2"))  # real encoder: no near-ties
    encoder = Encoder(model)
    index = DenseIndex.build(encoder, minilm_tokenizer, corpus, max_length=64, progress=False)
    return index, encode_texts(encoder, minilm_tokenizer, queries, max_length=32), corpus


def assert_brute_force_top_k(index, q, scores, docids, k):
    brute = q @ index.vectors.T
    for row in range(len(q)):
        expected = np.argsort(-brute[row], kind="stable")[:k]
        np.testing.assert_allclose(scores[row], brute[row][expected], atol=1e-5)
        assert docids[row] == [index.docids[i] for i in expected]


def test_sharded_top_k_equals_numpy_on_scifact(scifact, tmp_path):
    index, q, corpus = scifact
    scores, docids = index.search(q, 10, mesh=make_mesh((2, 2, 2)))
    assert_brute_force_top_k(index, q, scores, docids, 10)
    index.save(tmp_path / "index.npz")
    again = DenseIndex.load(tmp_path / "index.npz")
    assert again.docids == index.docids and np.array_equal(again.vectors, index.vectors)
    assert again.encoder_key == index.encoder_key is not None
    cache = again.as_cache(corpus)
    vectors, encoded = cache.get_or_encode(
        index.encoder_key, [corpus[d] for d in index.docids[:5]], None
    )
    assert encoded == 0 and np.array_equal(vectors, index.vectors[:5])


def test_faiss_top_k_equals_jax_and_numpy(scifact):
    pytest.importorskip("faiss")
    index, q, _ = scifact
    jax_scores, jax_docids = index.search(q, 10)
    scores, docids = index.search(q, 10, backend="faiss")
    assert scores.shape == jax_scores.shape and docids == jax_docids
    np.testing.assert_allclose(scores, jax_scores, atol=1e-5)
    assert_brute_force_top_k(index, q, scores, docids, 10)
    assert index.search(q, 10, backend="auto")[1] == docids
    everything, ranked = index.search(q, 1000, backend="faiss")  # k above the corpus size
    assert everything.shape == (len(q), len(index.docids))
    assert all(sorted(row) == sorted(index.docids) for row in ranked)


def test_faiss_backend_without_faiss_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import fails
    vectors = np.eye(4, dtype=np.float32)
    index = DenseIndex(["a", "b", "c", "d"], vectors)
    with pytest.raises(ImportError, match=r"pip install 'resrank_jax\[faiss\]'"):
        index.search(vectors[:1], 2, backend="faiss")
    assert index.search(vectors[:1], 2, backend="auto")[1] == [["a", "b"]]  # falls back to jax
