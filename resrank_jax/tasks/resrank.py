"""ResRank's task: one slot token per passage in the reranker prompt, scores from
``ResRank.score`` (slot splicing, residual fusion, cosine)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from resrank_jax.models.resrank import ResRank
from resrank_jax.prompts import SlotPrompt, chat, resrank_user_message, tokenize_with_slots
from resrank_jax.tasks.base import Task


class ResRankTask(Task):
    """Prompt: SPEC.md section 1 (query before and after the slots, chat template); the
    reranker tokenizer reads it and every slot holds the pad id until ``phi(e)`` replaces it."""

    name = "resrank"
    needs_reranker = True
    uses_slots = True

    @property
    def prompt_tokenizer(self):
        return self.reranker_tokenizer

    def prompt(self, query: str, texts: Sequence[str]) -> SlotPrompt:
        tok = self.reranker_tokenizer
        return tokenize_with_slots(
            tok, chat(tok, resrank_user_message(query, len(texts))), tok.pad_id
        )

    def needs_query(self, model: ResRank) -> bool:
        return model.cfg.needs_query_vector

    def score(self, model: ResRank, e_bke, batch, q_be) -> jax.Array:
        return model.score(
            e_bke,
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["slot_pos"],
            batch["cand_mask"],
            q_be,
        )

    @staticmethod
    def make_model(encoder, reranker, cfg, seed: int) -> ResRank:
        return ResRank(encoder, reranker, cfg, rngs=nnx.Rngs(seed))
