"""A bidirectional BERT encoder (post-LayerNorm), e.g. all-MiniLM-L6-v2.

Used as an Encoder-LLM or as the zero-shot dense baseline. Output: final hidden states
``[B, L, D]``; pooling lives in the encoder head, not here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from resrank_jax.models.config import BertConfig
from resrank_jax.models.layers import (
    attend,
    dense,
    merge_heads,
    partitioned,
    remat_policy,
    split_heads,
)


def _layer_norm(d: int, eps: float, param_dtype: str, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        d,
        epsilon=eps,
        param_dtype=jnp.dtype(param_dtype),
        scale_init=partitioned(nnx.initializers.ones_init(), ("norm",)),
        bias_init=partitioned(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


def _embed(n: int, d: int, axes: tuple[str, str], cfg: BertConfig, rngs: nnx.Rngs) -> nnx.Embed:
    return nnx.Embed(
        n,
        d,
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.dtype(cfg.param_dtype),
        embedding_init=partitioned(nnx.initializers.normal(0.02), axes),
        rngs=rngs,
    )


class BertLayer(nnx.Module):
    """Self-attention + feed-forward, each followed by residual and LayerNorm."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        d, f = cfg.hidden_size, cfg.intermediate_size
        kw = dict(use_bias=True, dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        self.query = dense(d, d, ("embed", "heads"), **kw)
        self.key = dense(d, d, ("embed", "heads"), **kw)
        self.value = dense(d, d, ("embed", "heads"), **kw)
        self.attention_output = dense(d, d, ("heads", "embed"), **kw)
        self.attention_norm = _layer_norm(d, cfg.layer_norm_eps, cfg.param_dtype, rngs)
        self.intermediate = dense(d, f, ("embed", "mlp"), **kw)
        self.output = dense(f, d, ("mlp", "embed"), **kw)
        self.output_norm = _layer_norm(d, cfg.layer_norm_eps, cfg.param_dtype, rngs)

    def __call__(self, x_bld: jax.Array, mask_bl: jax.Array) -> jax.Array:
        n = self.cfg.num_heads
        q_blnh = split_heads(self.query(x_bld), n)
        k_blnh = split_heads(self.key(x_bld), n)
        v_blnh = split_heads(self.value(x_bld), n)
        attn_bld = merge_heads(
            attend(q_blnh, k_blnh, v_blnh, mask_bl, causal=False, impl=self.cfg.attention_impl)
        )
        x_bld = self.attention_norm(x_bld + self.attention_output(attn_bld))
        ff_bld = self.output(jax.nn.gelu(self.intermediate(x_bld), approximate=False))
        return self.output_norm(x_bld + ff_bld)


class Bert(nnx.Module):
    """BERT body: embeddings (word + position + token type) -> LayerNorm -> layers."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        d = cfg.hidden_size
        self.word_embeddings = _embed(cfg.vocab_size, d, ("vocab", "embed"), cfg, rngs)
        self.position_embeddings = _embed(
            cfg.max_position_embeddings, d, ("position", "embed"), cfg, rngs
        )
        self.token_type_embeddings = _embed(
            cfg.type_vocab_size, d, ("position", "embed"), cfg, rngs
        )
        self.embeddings_norm = _layer_norm(d, cfg.layer_norm_eps, cfg.param_dtype, rngs)
        self.layers = nnx.List([BertLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        if cfg.add_pooler:
            self.pooler = dense(
                d,
                d,
                ("embed", "heads"),
                use_bias=True,
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                rngs=rngs,
            )

    def __call__(
        self,
        input_ids_bl: jax.Array,
        *,
        attention_mask_bl: jax.Array | None = None,
        token_type_ids_bl: jax.Array | None = None,
    ) -> jax.Array:
        """Final hidden states ``[B, L, D]`` for right-padded ``input_ids_bl [B, L]``."""
        b, length = input_ids_bl.shape
        if length > self.cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings "
                f"{self.cfg.max_position_embeddings}"
            )
        if attention_mask_bl is None:
            attention_mask_bl = jnp.ones((b, length), jnp.int32)
        if token_type_ids_bl is None:
            token_type_ids_bl = jnp.zeros((b, length), jnp.int32)
        x_bld = (
            self.word_embeddings(input_ids_bl)
            + self.position_embeddings(jnp.arange(length)[None, :])
            + self.token_type_embeddings(token_type_ids_bl)
        )
        x_bld = self.embeddings_norm(x_bld)

        def call(layer: BertLayer, *args: jax.Array) -> jax.Array:
            return layer(*args)

        if self.cfg.remat != "none":
            call = nnx.remat(call, policy=remat_policy(self.cfg.remat))
        for layer in self.layers:
            x_bld = call(layer, x_bld, attention_mask_bl)
        return x_bld

    def pooled(self, hidden_bld: jax.Array) -> jax.Array:
        """HF's pooler output ``tanh(dense(h[:, 0]))`` ``[B, D]``."""
        return jnp.tanh(self.pooler(hidden_bld[:, 0]))
