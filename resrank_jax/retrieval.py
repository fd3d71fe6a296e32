"""Dense retrieval with an Encoder: encode a corpus once (batched, progress bar), keep the
vectors as a reusable index (the same vectors serve the rerankers' ``EmbeddingCache``), and
search by an exact top-k of a matmul sharded over the corpus rows, or (the ``faiss`` extra)
by an exact ``faiss.IndexFlatIP`` on the host CPU."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from resrank_jax.losses import NEG
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.encode import EmbeddingCache, encode_texts, encoder_fingerprint
from resrank_jax.sharding import make_mesh
from resrank_jax.tokenizer import TextTokenizer


@partial(jax.jit, static_argnames=("k",))
def _top_k(queries_qd, corpus_md, valid_m, k):
    scores_qm = queries_qd @ corpus_md.T
    scores_qm = jnp.where(valid_m[None, :], scores_qm, NEG)
    return jax.lax.top_k(scores_qm, k)


def _faiss():
    """The ``faiss`` module, or an error naming the extra that installs it."""
    try:
        import faiss
    except ImportError as err:
        raise ImportError(
            "backend='faiss' needs faiss: pip install 'resrank_jax[faiss]' (faiss-cpu)"
        ) from err
    return faiss


class DenseIndex:
    """``docids`` and L2-normalised ``vectors [M, D]`` of a corpus; ``encoder_key``
    ``(fingerprint, max_length)`` of the encoder that made them (``build`` records it)."""

    def __init__(
        self,
        docids: Sequence[str],
        vectors: np.ndarray,
        encoder_key: tuple[str, int] | None = None,
    ) -> None:
        if len(docids) != len(vectors):
            raise ValueError(f"{len(docids)} docids for {len(vectors)} vectors")
        self.docids = list(docids)
        self.vectors = np.asarray(vectors, np.float32)
        self.encoder_key = encoder_key
        self._faiss_index = None  # built on the first faiss search
        self._row_of: dict[str, int] | None = None  # built on the first ``rows`` call

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
        return cls(docids, vectors, (encoder_fingerprint(encoder, tokenizer), max_length))

    def rows(self, docids: Sequence[str]) -> np.ndarray:
        """Row numbers of ``docids`` in ``vectors`` (a docid the index lacks: ``KeyError``)."""
        if self._row_of is None:
            self._row_of = {d: i for i, d in enumerate(self.docids)}
        return np.asarray([self._row_of[d] for d in docids], np.int64)

    def as_cache(self, corpus: dict[str, str]) -> EmbeddingCache:
        """The index as a reranker embedding cache (no passage is encoded twice); ``corpus``
        gives the texts the vectors were made from."""
        if self.encoder_key is None:
            raise ValueError("this index does not record its encoder; rebuild it with build()")
        cache = EmbeddingCache()
        cache.add(self.encoder_key, [corpus[d] for d in self.docids], self.vectors)
        return cache

    def search(
        self,
        queries_qd: np.ndarray,
        k: int,
        *,
        mesh: Mesh | None = None,
        backend: Literal["jax", "faiss", "auto"] = "jax",
    ) -> tuple[np.ndarray, list[list[str]]]:
        """Exact top-``k`` by inner product: scores ``[Q, k]`` and docids, best first.

        ``backend="jax"`` shards the corpus rows over every device of ``mesh`` (default: all
        devices); ``"faiss"`` searches a ``faiss.IndexFlatIP`` (built once, host CPU, ``mesh``
        unused); ``"auto"`` is faiss when it is installed, else jax.
        """
        k = min(k, len(self.docids))
        if backend == "auto":
            backend = "faiss" if importlib.util.find_spec("faiss") else "jax"
        if backend == "faiss":
            return self._search_faiss(queries_qd, k)
        if backend != "jax":
            raise ValueError(f"backend={backend!r}: choose from 'jax', 'faiss', 'auto'")
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

    def _search_faiss(self, queries_qd: np.ndarray, k: int) -> tuple[np.ndarray, list[list[str]]]:
        if self._faiss_index is None:
            index = _faiss().IndexFlatIP(self.vectors.shape[1])
            index.add(np.ascontiguousarray(self.vectors))
            self._faiss_index = index
        scores, idx = self._faiss_index.search(np.ascontiguousarray(queries_qd, np.float32), k)
        return scores, [[self.docids[i] for i in row] for row in idx]

    def save(self, path: str | Path) -> None:
        key = self.encoder_key or ("", 0)
        np.savez(
            path,
            docids=np.array(self.docids, dtype=str),
            vectors=self.vectors,
            encoder=np.array(key[0]),
            max_length=np.array(key[1]),
        )

    @classmethod
    def load(cls, path: str | Path) -> DenseIndex:
        with np.load(path, allow_pickle=False) as data:
            key = (str(data["encoder"]), int(data["max_length"])) if "encoder" in data else None
            return cls(data["docids"].tolist(), data["vectors"], key if key and key[0] else None)
