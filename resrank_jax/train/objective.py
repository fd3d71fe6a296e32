"""The multi-task objective of one batch: RankNet on the task's scores (``rank``) and InfoNCE
on encoder vectors over the global batch (``ret``), weighted per stage. Scores come from
``Task.forward``, the definition ranking uses too."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resrank_jax import losses
from resrank_jax.config import LossConfig
from resrank_jax.tasks import Task


def compute_loss(
    task: Task, model, batch: dict[str, jax.Array], weights: dict[str, float], cfg: LossConfig
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(total, metrics)``; terms with no weight are not computed."""
    scores_bk, e_bke, q_be = task.forward(model, batch, with_query="ret" in weights)
    terms = {}
    if "rank" in weights:
        terms["rank"] = losses.ranknet(
            scores_bk,
            batch["labels"],
            batch["cand_mask"],
            kappa=cfg.kappa,
            weighting=None if cfg.ranknet_weighting == "none" else cfg.ranknet_weighting,
        )
    if "ret" in weights:
        terms["ret"] = retrieval_loss(e_bke, q_be, batch, cfg)
    return losses.combine(terms, weights)


def retrieval_loss(e_bke, q_be, batch: dict[str, jax.Array], cfg: LossConfig) -> jax.Array:
    """InfoNCE of each query against every candidate of the global batch; copies of its
    judged positives elsewhere in the batch are no negatives (``cfg.mask_false_negatives``)."""
    b, k, _ = e_bke.shape
    positive_b = jnp.arange(b) * k + batch["positive"]
    false_negatives = None
    if cfg.mask_false_negatives:
        false_negatives = losses.same_doc_positive_mask(
            batch["doc_key"].reshape(-1),
            (batch["qrels_labels"] > 0).reshape(-1),
            jnp.repeat(jnp.arange(b), k),
            b,
            target_b=positive_b,
        )
    return losses.infonce(
        q_be,
        e_bke.reshape(b * k, -1),
        positive_b,
        temperature=cfg.temperature,
        doc_mask_m=batch["cand_mask"].reshape(-1),
        false_negative_mask_bm=false_negatives,
    )
