"""The multi-task objective of one batch: RankNet on the ranker's scores (``rank``) and
InfoNCE on encoder vectors over the global batch (``ret``), weighted per stage."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resrank_jax import losses
from resrank_jax.config import LossConfig
from resrank_jax.models.pooling import l2_normalize


def compute_loss(
    model, batch: dict[str, jax.Array], weights: dict[str, float], cfg: LossConfig, mode: str
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(total, metrics)``; terms with no weight are not computed."""
    b, k, lp = batch["passage_ids"].shape
    need_query = "ret" in weights or (mode == "resrank" and model.cfg.needs_query_vector)
    if mode == "resrank":
        out = model(
            batch["passage_ids"],
            batch["passage_mask"],
            batch["prompt_ids"],
            batch["prompt_mask"],
            batch["slot_pos"],
            batch["cand_mask"],
            batch["query_ids"] if need_query else None,
            batch["query_mask"] if need_query else None,
        )
        scores, e_bke, q_be = out["scores"], out["passage_emb"], out.get("query_emb")
    else:  # e2rank: one encoder embeds documents, queries and the listwise pseudo-query
        encoder = model
        e_bke = encoder(
            batch["passage_ids"].reshape(b * k, lp), batch["passage_mask"].reshape(b * k, lp)
        )
        e_bke = e_bke.reshape(b, k, -1)
        pseudo_be = encoder(batch["pseudo_ids"], batch["pseudo_mask"])
        scores = jnp.einsum("be,bke->bk", pseudo_be, l2_normalize(e_bke))
        q_be = encoder(batch["query_ids"], batch["query_mask"]) if need_query else None
    terms = {}
    if "rank" in weights:
        terms["rank"] = losses.ranknet(
            scores,
            batch["labels"],
            batch["cand_mask"],
            kappa=cfg.kappa,
            weighting=None if cfg.ranknet_weighting == "none" else cfg.ranknet_weighting,
        )
    if "ret" in weights:
        positive = jnp.arange(b) * k + batch["positive"]
        terms["ret"] = losses.infonce(
            q_be,
            e_bke.reshape(b * k, -1),
            positive,
            temperature=cfg.temperature,
            doc_mask_m=batch["cand_mask"].reshape(-1),
        )
    return losses.combine(terms, weights)
