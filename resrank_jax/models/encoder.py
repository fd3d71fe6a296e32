"""Encoder-LLM: a backbone + pooling + L2 norm -> one fp32 vector per text ``[B, D]``."""

from __future__ import annotations

import jax
from flax import nnx

from resrank_jax.models.bert import Bert
from resrank_jax.models.build import Backbone
from resrank_jax.models.pooling import l2_normalize, pool
from resrank_jax.pooling_conventions import Pooling, PoolingConvention


class Encoder(nnx.Module):
    """Embeds tokenised texts. Decoders pool the last token (the pooling token that
    ``TextTokenizer`` puts last, left padding); BERT pools the mean or CLS over real tokens.

    ``pooling``: a pooling kind or a ``PoolingConvention`` (``tokenizer.convention``); by
    default the convention ``load_backbone`` attached to the backbone
    (``backbone.pooling_convention``: e.g. CLS for a sentence-transformers CLS model), else
    mean for BERT and last for decoders.
    """

    def __init__(
        self, backbone: Backbone, pooling: Pooling | PoolingConvention | None = None
    ) -> None:
        self.backbone = backbone
        if isinstance(pooling, PoolingConvention):
            pooling = pooling.pooling
        attached = getattr(backbone, "pooling_convention", None)
        if pooling is None and isinstance(attached, PoolingConvention):
            pooling = attached.pooling
        self.pooling: Pooling = pooling or ("mean" if isinstance(backbone, Bert) else "last")

    @property
    def width(self) -> int:
        return self.backbone.cfg.hidden_size

    def __call__(self, ids_bl: jax.Array, mask_bl: jax.Array) -> jax.Array:
        """L2-normalised embeddings ``[B, D]`` (fp32) of token ids ``[B, L]``."""
        hidden_bld = self.backbone(ids_bl, attention_mask_bl=mask_bl)
        return l2_normalize(pool(hidden_bld, mask_bl, self.pooling))
