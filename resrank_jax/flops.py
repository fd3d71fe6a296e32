"""Model FLOPs of one training step (forward + backward), counted as MaxText counts them.

MaxText's ``calculate_tflops_training_per_device`` (AI-Hypercomputer/maxtext,
``src/maxtext/utils/maxtext_utils.py`` at 65dda9aeac1811345a0372709cc28a6f3c56cc91) counts
``3 x`` the forward FLOPs: ``2 x`` every weight matmul per token, plus attention scores and
values at ``4 x seq_len^2 x num_query_heads x head_dim`` per sequence and layer, halved for a
causal mask (after Megatron-LM and NeMo). For training per sequence of padded length ``S``:

    6 x non-embedding params x S + (12 | 6) x layers x heads x head_dim x S^2

with 12 for bidirectional (BERT) and 6 for causal (decoder) attention. Embedding lookups do
no matmul and are not counted; MaxText's logits term is left out because the towers score by
cosine and never compute an LM head. Rematerialised recomputation is not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx

from resrank_jax.models.build import Backbone
from resrank_jax.models.decoder import Decoder

# Backbone attributes whose params do no matmul over a tower's tokens: lookup tables (token,
# BERT position and token type), an untied LM head and BERT's pooler (neither is called).
NO_MATMUL = (
    "embed_tokens",
    "lm_head",
    "word_embeddings",
    "position_embeddings",
    "token_type_embeddings",
    "pooler",
)


def param_count(module: nnx.Module) -> int:
    """Number of ``nnx.Param`` entries of ``module`` (concrete or from ``nnx.eval_shape``)."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(module, nnx.Param)))


def non_embedding_params(backbone: Backbone) -> int:
    """Params of ``backbone`` minus those of its ``NO_MATMUL`` attributes."""
    skipped = sum(param_count(getattr(backbone, n)) for n in NO_MATMUL if hasattr(backbone, n))
    return param_count(backbone) - skipped


@dataclasses.dataclass(frozen=True)
class Tower:
    """What the FLOPs of one backbone depend on.

    Attributes:
        params: non-embedding params (each does one multiply-add per token and pass).
        num_layers, num_heads, head_dim: the attention shape (query heads).
        causal: causal (decoder) or bidirectional (BERT) attention.
    """

    params: int
    num_layers: int
    num_heads: int
    head_dim: int
    causal: bool

    @classmethod
    def of(cls, backbone: Backbone) -> Tower:
        """The tower of a backbone (concrete, or abstract from ``abstract_backbone``)."""
        cfg = backbone.cfg
        return cls(
            params=non_embedding_params(backbone),
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            head_dim=cfg.head_dim,
            causal=isinstance(backbone, Decoder),
        )

    def flops(self, ids: np.ndarray) -> float:
        """Training FLOPs of this tower over token ids ``[..., S]`` (every leading index one
        sequence padded to ``S``): ``6 x params x tokens + attention``."""
        length = ids.shape[-1]
        sequences = ids.size // length
        attention = (6 if self.causal else 12) * self.num_layers * self.num_heads * self.head_dim
        return 6.0 * self.params * ids.size + float(attention) * length**2 * sequences


def step_flops(batch: Mapping[str, np.ndarray], encoder: Tower, prompt: Tower) -> float:
    """Model FLOPs of one training step on ``batch``: ``encoder`` over ``passage_ids [B, K, Lp]``
    and ``query_ids [B, Lq]`` (none on cached vectors), ``prompt`` over ``prompt_ids [B, L]``
    (ResRank: the reranker; E2Rank: the encoder again, on the pseudo-query)."""
    encoded = sum(encoder.flops(batch[k]) for k in ("passage_ids", "query_ids") if k in batch)
    return encoded + prompt.flops(batch["prompt_ids"])
