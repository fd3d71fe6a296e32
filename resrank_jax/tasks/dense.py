"""The dense task: the encoder alone, ``cos(query, passage)`` (a trained run's encoder, or a
zero-shot embedding model). No prompt."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from resrank_jax.models.embedding_model import EmbeddingModel
from resrank_jax.prompts import SlotPrompt
from resrank_jax.tasks.base import Task, masked


class DenseTask(Task):
    name = "dense"
    has_prompt = False

    def prompt(self, query: str, texts: Sequence[str]) -> SlotPrompt:
        return SlotPrompt([], [])

    def needs_query(self, model) -> bool:
        return True

    def score(self, model, e_bke, batch, q_be) -> jax.Array:
        return masked(jnp.einsum("be,bke->bk", q_be, e_bke), batch["cand_mask"])

    @staticmethod
    def make_model(encoder, reranker, cfg, seed: int) -> EmbeddingModel:
        return EmbeddingModel(encoder)
