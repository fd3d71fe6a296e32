"""Batched, bucketed text encoding with an embedding cache (the unified dense index).

Batches have a fixed row count and lengths rounded up to a power of two, so a corpus of any
size compiles a handful of shapes. Embeddings are cached by docid: reranking reuses what
retrieval computed, and a text is tokenised and encoded once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np
from tqdm.auto import tqdm

from resrank_jax.models.encoder import Encoder
from resrank_jax.tokenizer import TextTokenizer

_ENCODE = jax.jit(lambda encoder, ids, mask: encoder(ids, mask))


def encode_texts(
    encoder: Encoder,
    tokenizer: TextTokenizer,
    texts: Sequence[str],
    *,
    max_length: int = 256,
    batch_size: int = 32,
    progress: bool | str = False,
    stats: dict[str, int] | None = None,
) -> np.ndarray:
    """L2-normalised embeddings ``[len(texts), D]`` (fp32 numpy).

    ``stats`` (if given) accumulates ``tokens_processed`` and ``truncated``.
    """
    if not texts:
        return np.zeros((0, encoder.width), np.float32)
    rows, truncated = tokenizer.token_rows(texts, max_length=max_length)
    order = np.argsort([len(r) for r in rows], kind="stable")  # similar lengths share a batch
    filler = tokenizer.token_rows([""], max_length=max_length)[0][0]
    out = np.zeros((len(texts), encoder.width), np.float32)
    steps = range(0, len(texts), batch_size)
    if progress:
        steps = tqdm(steps, desc=progress if isinstance(progress, str) else "encode", unit="batch")
    for start in steps:
        idx = order[start : start + batch_size]
        chunk = [rows[i] for i in idx] + [filler] * (batch_size - len(idx))  # fixed row count
        enc = tokenizer.pad_rows(chunk, max_length=max_length, bucket=True)
        out[idx] = np.asarray(_ENCODE(encoder, enc.input_ids, enc.attention_mask))[: len(idx)]
    if stats is not None:
        stats["tokens_processed"] = stats.get("tokens_processed", 0) + sum(len(r) for r in rows)
        stats["truncated"] = stats.get("truncated", 0) + truncated
    return out


class EmbeddingCache:
    """``docid -> embedding`` for one encoder; ``.npz`` on disk (no pickle)."""

    def __init__(self) -> None:
        self._vectors: dict[str, np.ndarray] = {}

    def __contains__(self, docid: str) -> bool:
        return docid in self._vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def get_or_encode(
        self,
        docids: Sequence[str],
        texts: Sequence[str],
        encode_fn,
    ) -> tuple[np.ndarray, int]:
        """Embeddings ``[N, D]`` for ``docids``; encodes only the missing ones with
        ``encode_fn(texts)``. Returns the array and how many were encoded."""
        missing: dict[str, str] = {}
        for d, t in zip(docids, texts, strict=True):
            if missing.setdefault(d, t) != t:
                raise ValueError(f"docid {d!r} appears with two different texts")
        missing = {d: t for d, t in missing.items() if d not in self._vectors}
        if missing:
            vectors = encode_fn(list(missing.values()))
            self._vectors.update(zip(missing, vectors, strict=True))
        return np.stack([self._vectors[d] for d in docids]), len(missing)

    def save(self, path: str | Path) -> None:
        ids = list(self._vectors)
        np.savez(
            path, docids=np.array(ids, dtype=str), vectors=np.stack([self._vectors[i] for i in ids])
        )

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingCache:
        cache = cls()
        with np.load(path, allow_pickle=False) as data:
            cache._vectors = dict(zip(data["docids"].tolist(), data["vectors"], strict=True))
        return cache
