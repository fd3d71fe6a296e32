"""Dense retrieval over a real corpus equals a brute-force NumPy search; the index doubles as
the rerankers' embedding cache."""

import numpy as np

from resrank_jax import load_backbone, make_mesh
from resrank_jax.data.formats import read_corpus, read_queries
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.retrieval import DenseIndex


def test_sharded_top_k_equals_numpy_on_scifact(minilm_tokenizer, tmp_path):
    corpus = dict(
        list(read_corpus("data/scifact/corpus.jsonl").items())[:203]
    )  # 203: not a multiple of 8
    queries = list(read_queries("data/scifact/queries.jsonl").values())[:6]
    model, _ = load_backbone(packaged_weights("all-minilm-l6-v2"))  # real encoder: no near-ties
    encoder = Encoder(model)
    index = DenseIndex.build(encoder, minilm_tokenizer, corpus, max_length=64, progress=False)
    q = encode_texts(encoder, minilm_tokenizer, queries, max_length=32)
    scores, docids = index.search(q, 10, mesh=make_mesh((2, 2, 2)))
    brute = q @ index.vectors.T
    for row in range(len(queries)):
        expected = np.argsort(-brute[row], kind="stable")[:10]
        np.testing.assert_allclose(scores[row], brute[row][expected], atol=1e-5)
        assert docids[row] == [index.docids[i] for i in expected]
    index.save(tmp_path / "index.npz")
    again = DenseIndex.load(tmp_path / "index.npz")
    assert again.docids == index.docids and np.array_equal(again.vectors, index.vectors)
    cache = index.as_cache()
    vectors, encoded = cache.get_or_encode(
        index.docids[:5], [corpus[d] for d in index.docids[:5]], None
    )
    assert encoded == 0 and np.array_equal(vectors, index.vectors[:5])
