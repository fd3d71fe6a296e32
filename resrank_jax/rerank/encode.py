"""Batched, bucketed text encoding with an embedding cache (the unified dense index).

Batches have a fixed row count and lengths rounded up to a power of two, so a corpus of any
size compiles a handful of shapes. Embeddings are cached by encoder, length and text:
reranking reuses what retrieval computed, and a text is tokenised and encoded once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from resrank_jax.errors import UserError
from resrank_jax.models.encoder import Encoder
from resrank_jax.tokenizer import TextTokenizer

# ``[B, L]`` token ids -> L2-normalised vectors ``[B, D]``, one compile per shape.
encode_ids = jax.jit(lambda encoder, ids, mask: encoder(ids, mask))


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
        out[idx] = np.asarray(encode_ids(encoder, enc.input_ids, enc.attention_mask))[: len(idx)]
    if stats is not None:
        stats["tokens_processed"] = stats.get("tokens_processed", 0) + sum(len(r) for r in rows)
        stats["truncated"] = stats.get("truncated", 0) + truncated
    return out


def encoder_fingerprint(encoder: Encoder, tokenizer: TextTokenizer) -> str:
    """A key of what an encoder computes: parameter shapes and per-tensor sums and sums of
    squares (any trained change moves them), pooling, and the tokenizer's vocabulary size."""
    leaves = jax.tree.leaves(nnx.state(encoder, nnx.Param))
    sums = jax.device_get(
        [
            (jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32))))
            for x in leaves
        ]
    )
    parts = [
        encoder.pooling,
        str(len(tokenizer.hf)),
        *(f"{x.shape}:{a:.9e}:{b:.9e}" for x, (a, b) in zip(leaves, sums, strict=True)),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def text_key(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class CacheMismatchError(UserError, ValueError):
    """A saved embedding cache was made by another encoder or passage length (or before
    encoder keys were recorded): the user's ``--embedding-cache`` file cannot serve."""


class EmbeddingCache:
    """Passage vectors keyed by ``(encoder fingerprint, max length, text hash)``: vectors of
    two encoders, two lengths or two texts with one docid (DL19 and SciFact share docids) can
    never be mixed. ``.npz`` on disk (no pickle) records the key of each vector."""

    def __init__(self) -> None:
        self._vectors: dict[tuple[str, int, str], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._vectors)

    def encoders(self) -> set[tuple[str, int]]:
        """The ``(fingerprint, max_length)`` pairs that have vectors here."""
        return {(f, n) for f, n, _ in self._vectors}

    def get_or_encode(
        self, encoder_key: tuple[str, int], texts: Sequence[str], encode_fn
    ) -> tuple[np.ndarray, int]:
        """Embeddings ``[N, D]`` of ``texts`` under ``encoder_key`` ``(fingerprint,
        max_length)``; encodes only the missing ones with ``encode_fn(texts)``. Returns the
        array and how many were encoded."""
        keys = [(*encoder_key, text_key(t)) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}
        if missing:
            vectors = encode_fn(list(missing.values()))
            self._vectors.update(zip(missing, vectors, strict=True))
        return np.stack([self._vectors[k] for k in keys]), len(missing)

    def add(self, encoder_key: tuple[str, int], texts: Sequence[str], vectors: np.ndarray) -> None:
        """Stores ``vectors [N, D]`` of ``texts`` under ``encoder_key``."""
        keys = [(*encoder_key, text_key(t)) for t in texts]
        self._vectors.update(zip(keys, vectors, strict=True))

    def save(self, path: str | Path) -> None:
        keys = list(self._vectors)
        np.savez(
            path,
            encoders=np.array([k[0] for k in keys], dtype=str),
            max_lengths=np.array([k[1] for k in keys], np.int64),
            texts=np.array([k[2] for k in keys], dtype=str),
            vectors=np.stack([self._vectors[k] for k in keys]),
        )

    @classmethod
    def load(cls, path: str | Path, expect: tuple[str, int] | None = None) -> EmbeddingCache:
        """The cache saved at ``path``; with ``expect`` (an encoder key) a file holding
        vectors of any other encoder or length is refused (``CacheMismatchError``)."""
        cache = cls()
        with np.load(path, allow_pickle=False) as data:
            if "encoders" not in data:
                raise CacheMismatchError(
                    f"{path}: an embedding cache without encoder keys (made before they were "
                    "recorded); delete it"
                )
            keys = zip(
                data["encoders"].tolist(),
                data["max_lengths"].tolist(),
                data["texts"].tolist(),
                strict=True,
            )
            cache._vectors = dict(zip(keys, data["vectors"], strict=True))
        found = cache.encoders()
        if expect is not None and found - {expect}:
            raise CacheMismatchError(
                f"{path}: vectors of encoder/length {sorted(found - {expect})}, not of this "
                f"ranker's {expect}; use another --embedding-cache file"
            )
        return cache
