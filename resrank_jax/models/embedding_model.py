"""A model that is only an Encoder-LLM (dense retrieval, E2Rank): ``.encoder`` like ResRank,
so parameter paths (``encoder/backbone/...``) and stage regexes are the same for all models."""

from __future__ import annotations

from flax import nnx

from resrank_jax.models.encoder import Encoder


class EmbeddingModel(nnx.Module):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
