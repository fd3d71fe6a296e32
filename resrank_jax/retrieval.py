"""Dense retrieval with an Encoder: encode a corpus once (batched, progress bar), keep the
vectors as a reusable index (the same vectors serve the rerankers' ``EmbeddingCache``), and
search by an exact top-k of a matmul sharded over the corpus rows."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from resrank_jax.losses import NEG
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.encode import EmbeddingCache, encode_texts
from resrank_jax.sharding import make_mesh
from resrank_jax.tokenizer import TextTokenizer


@partial(jax.jit, static_argnames=("k",))
def _top_k(queries_qd, corpus_md, valid_m, k):
    scores_qm = queries_qd @ corpus_md.T
    scores_qm = jnp.where(valid_m[None, :], scores_qm, NEG)
    return jax.lax.top_k(scores_qm, k)


class DenseIndex:
    """``docids`` and L2-normalised ``vectors [M, D]`` of a corpus."""

    def __init__(self, docids: Sequence[str], vectors: np.ndarray) -> None:
        if len(docids) != len(vectors):
            raise ValueError(f"{len(docids)} docids for {len(vectors)} vectors")
        self.docids = list(docids)
        self.vectors = np.asarray(vectors, np.float32)

    @classmethod
    def build(
        cls,
        encoder: Encoder,
        tokenizer: TextTokenizer,
        corpus: dict[str, str],
        *,
        max_length: int = 256,
        batch_size: int = 32,
        progress: bool = True,
    ) -> DenseIndex:
        docids = list(corpus)
        vectors = encode_texts(
            encoder,
            tokenizer,
            [corpus[d] for d in docids],
            max_length=max_length,
            batch_size=batch_size,
            progress="index" if progress else False,
        )
        return cls(docids, vectors)

    def as_cache(self) -> EmbeddingCache:
        """The index as a reranker embedding cache (no passage is encoded twice)."""
        cache = EmbeddingCache()
        cache._vectors = dict(zip(self.docids, self.vectors, strict=True))
        return cache

    def search(
        self, queries_qd: np.ndarray, k: int, *, mesh: Mesh | None = None
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Exact top-``k`` by inner product: scores ``[Q, k]`` and docids, best first. The
        corpus rows are sharded over every device of ``mesh`` (default: all devices)."""
        k = min(k, len(self.docids))
        mesh = mesh or make_mesh((-1, 1, 1))
        ways = mesh.devices.size
        m = len(self.docids)
        padded = -(-m // ways) * ways
        corpus = np.zeros((padded, self.vectors.shape[1]), np.float32)
        corpus[:m] = self.vectors
        valid = np.arange(padded) < m
        rows = NamedSharding(mesh, P(("data", "fsdp", "tensor")))
        scores, idx = _top_k(
            jnp.asarray(queries_qd, jnp.float32),
            jax.device_put(corpus, rows),
            jax.device_put(valid, rows),
            k,
        )
        idx = np.asarray(idx)
        return np.asarray(scores), [[self.docids[i] for i in row] for row in idx]

    def save(self, path: str | Path) -> None:
        np.savez(path, docids=np.array(self.docids, dtype=str), vectors=self.vectors)

    @classmethod
    def load(cls, path: str | Path) -> DenseIndex:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["docids"].tolist(), data["vectors"])
