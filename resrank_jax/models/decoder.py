"""The causal decoder body of the Qwen3 / Qwen2 / Llama (SmolLM2) family.

Token ids **or** input embeddings in, final hidden states (after the final norm) out, logits
when asked. Parameter names follow HF (``q_proj``, ``input_layernorm``...) so the key map in
``resrank_jax.hf`` is a plain table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from resrank_jax.models.config import DecoderConfig
from resrank_jax.models.layers import (
    RMSNorm,
    SwiGLU,
    apply_rope,
    attend,
    attend_with_mask,
    dense,
    merge_heads,
    partitioned,
    positions_from_mask,
    remat_policy,
    rope_cos_sin,
    split_heads,
)

KVCache = tuple[jax.Array, jax.Array]  # keys and values [B, S, K, H]
# The cache of all layers: ``[(k, v)] * L`` when unrolled; when the layers are scanned, one
# ``(k, v)`` pair stacked over the layers, each ``[L, B, S, K, H]``.
LayerCaches = list[KVCache] | KVCache


class DecoderAttention(nnx.Module):
    """GQA self-attention with RoPE; optional q/k RMSNorm (Qwen3) and q/k/v bias (Qwen2)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = dense(d, n * h, ("embed", "heads"), use_bias=cfg.qkv_bias, **kw)
        self.k_proj = dense(d, k * h, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
        self.v_proj = dense(d, k * h, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
        self.o_proj = dense(n * h, d, ("heads", "embed"), **kw)
        if cfg.qk_norm:
            self.q_norm = RMSNorm(h, cfg.rms_norm_eps, param_dtype=cfg.param_dtype)
            self.k_norm = RMSNorm(h, cfg.rms_norm_eps, param_dtype=cfg.param_dtype)

    def _qkv(self, x_bld: jax.Array, cos: jax.Array, sin: jax.Array):
        cfg = self.cfg
        q_blnh = split_heads(self.q_proj(x_bld), cfg.num_heads)
        k_blkh = split_heads(self.k_proj(x_bld), cfg.num_kv_heads)
        v_blkh = split_heads(self.v_proj(x_bld), cfg.num_kv_heads)
        if cfg.qk_norm:
            q_blnh, k_blkh = self.q_norm(q_blnh), self.k_norm(k_blkh)
        return apply_rope(q_blnh, cos, sin), apply_rope(k_blkh, cos, sin), v_blkh

    def __call__(
        self, x_bld: jax.Array, cos: jax.Array, sin: jax.Array, mask_bl: jax.Array
    ) -> jax.Array:
        q_blnh, k_blkh, v_blkh = self._qkv(x_bld, cos, sin)
        out_blnh = attend(
            q_blnh, k_blkh, v_blkh, mask_bl, causal=True, impl=self.cfg.attention_impl
        )
        return self.o_proj(merge_heads(out_blnh))

    def cached(
        self,
        x_btd: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        cache: KVCache,
        key_mask_bs: jax.Array,
        write_index: jax.Array,
    ) -> tuple[jax.Array, KVCache]:
        """Attention of T new tokens written at ``write_index`` of a cache of S slots; they see
        the cached keys that ``key_mask_bs`` keeps, causally. Returns output and new cache."""
        q_btnh, k_btkh, v_btkh = self._qkv(x_btd, cos, sin)
        k_bskh = jax.lax.dynamic_update_slice(
            cache[0], k_btkh.astype(cache[0].dtype), (0, write_index, 0, 0)
        )
        v_bskh = jax.lax.dynamic_update_slice(
            cache[1], v_btkh.astype(cache[1].dtype), (0, write_index, 0, 0)
        )
        t, s = x_btd.shape[1], k_bskh.shape[1]
        causal_ts = jnp.arange(s)[None, :] <= write_index + jnp.arange(t)[:, None]
        mask_b1ts = key_mask_bs.astype(bool)[:, None, None, :] & causal_ts[None, None]
        out_btnh = attend_with_mask(q_btnh, k_bskh, v_bskh, mask_b1ts, impl=self.cfg.attention_impl)
        return self.o_proj(merge_heads(out_btnh)), (k_bskh, v_bskh)


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        self.input_layernorm = RMSNorm(
            cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.param_dtype
        )
        self.self_attn = DecoderAttention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(
            cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.param_dtype
        )
        self.mlp = SwiGLU(
            cfg.hidden_size,
            cfg.intermediate_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            rngs=rngs,
        )

    def __call__(
        self, x_bld: jax.Array, cos: jax.Array, sin: jax.Array, mask_bl: jax.Array
    ) -> jax.Array:
        x_bld = x_bld + self.self_attn(self.input_layernorm(x_bld), cos, sin, mask_bl)
        return x_bld + self.mlp(self.post_attention_layernorm(x_bld))

    def cached(self, x_btd, cos, sin, cache, key_mask_bs, write_index):
        """``__call__`` for new tokens against a KV cache (see ``DecoderAttention.cached``)."""
        attn_btd, cache = self.self_attn.cached(
            self.input_layernorm(x_btd), cos, sin, cache, key_mask_bs, write_index
        )
        x_btd = x_btd + attn_btd
        return x_btd + self.mlp(self.post_attention_layernorm(x_btd)), cache


def stacked_layers(cfg: DecoderConfig, rngs: nnx.Rngs) -> DecoderLayer:
    """``cfg.num_layers`` layers as one ``DecoderLayer`` whose params carry a leading layer
    axis ``[L, ...]`` (logical axis ``layers`` prepended to their names), each layer
    initialised from its own split of ``rngs`` (Flax NNX's scan-over-layers idiom)."""

    @nnx.split_rngs(splits=cfg.num_layers)
    @nnx.vmap(in_axes=0, out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
    def create(layer_rngs: nnx.Rngs) -> DecoderLayer:
        return DecoderLayer(cfg, rngs=layer_rngs)

    return create(rngs)


def scan_over_layers(
    layers: DecoderLayer,
    step: Callable[[DecoderLayer, Any, Any], tuple[Any, Any]],
    carry: Any,
    xs: Any,
    *,
    remat: str,
) -> tuple[Any, Any]:
    """``jax.lax.scan`` of ``step(layer_i, carry, xs_i) -> (carry, ys_i)`` over the leading
    axis of stacked ``layers`` (and of ``xs``), each step rematerialised as ``remat`` says.

    Returns the final carry and the ``ys`` stacked over the layers.
    """
    graphdef, state = nnx.split(layers)

    def body(carry: Any, state_and_xs: tuple[nnx.State, Any]) -> tuple[Any, Any]:
        layer_state, xs_i = state_and_xs
        return step(nnx.merge(graphdef, layer_state), carry, xs_i)

    if remat != "none":  # scan already keeps XLA from merging the recomputation away
        body = jax.checkpoint(body, policy=remat_policy(remat), prevent_cse=False)
    return jax.lax.scan(body, carry, (state, xs))


class Decoder(nnx.Module):
    """Causal LM body with optional LM head (tied to ``embed_tokens`` or separate)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=jnp.dtype(cfg.dtype),
            param_dtype=jnp.dtype(cfg.param_dtype),
            embedding_init=partitioned(nnx.initializers.normal(0.02), ("vocab", "embed")),
            rngs=rngs,
        )
        if cfg.scan_layers:
            self.layers = stacked_layers(cfg, rngs)
        else:
            self.layers = nnx.List([DecoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=cfg.param_dtype)
        if cfg.has_lm_head and not cfg.tie_word_embeddings:
            self.lm_head = dense(
                cfg.hidden_size,
                cfg.vocab_size,
                ("embed", "vocab"),
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                rngs=rngs,
            )

    def embed(self, input_ids_bl: jax.Array) -> jax.Array:
        """Token embeddings ``[B, L, D]`` (the input the reranker splices slots into)."""
        return self.embed_tokens(input_ids_bl)

    def __call__(
        self,
        input_ids_bl: jax.Array | None = None,
        *,
        inputs_embeds_bld: jax.Array | None = None,
        attention_mask_bl: jax.Array | None = None,
        return_logits: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Runs the decoder.

        Args:
            input_ids_bl: token ids ``[B, L]`` (exactly one of ids / embeddings).
            inputs_embeds_bld: input embeddings ``[B, L, D]``.
            attention_mask_bl: 1 for real tokens, 0 for padding (left or right), ``[B, L]``.
            return_logits: also return logits ``[B, L, V]`` in fp32.

        Returns:
            final hidden states ``[B, L, D]`` (after the final norm), and logits if asked.
        """
        cfg = self.cfg
        if (input_ids_bl is None) == (inputs_embeds_bld is None):
            raise ValueError("pass exactly one of input_ids_bl and inputs_embeds_bld")
        x_bld = self.embed(input_ids_bl) if inputs_embeds_bld is None else inputs_embeds_bld
        x_bld = x_bld.astype(jnp.dtype(cfg.dtype))
        if attention_mask_bl is None:
            attention_mask_bl = jnp.ones(x_bld.shape[:2], jnp.int32)
        cos, sin = rope_cos_sin(
            positions_from_mask(attention_mask_bl), cfg.head_dim, cfg.rope_theta
        )
        hidden_bld = self.norm(self._run_layers(x_bld, cos, sin, attention_mask_bl))
        if not return_logits:
            return hidden_bld
        return hidden_bld, self.logits(hidden_bld)

    def _run_layers(
        self, x_bld: jax.Array, cos: jax.Array, sin: jax.Array, mask_bl: jax.Array
    ) -> jax.Array:
        """All layers over ``x [B, L, D]``: scanned or unrolled, rematerialised per layer as
        ``cfg.remat`` says."""
        cfg = self.cfg
        if cfg.scan_layers:

            def step(layer: DecoderLayer, x: jax.Array, _: None) -> tuple[jax.Array, None]:
                return layer(x, cos, sin, mask_bl), None

            return scan_over_layers(self.layers, step, x_bld, None, remat=cfg.remat)[0]

        def call(layer: DecoderLayer, *args: jax.Array) -> jax.Array:
            return layer(*args)

        if cfg.remat != "none":
            call = nnx.remat(call, policy=remat_policy(cfg.remat))
        for layer in self.layers:
            x_bld = call(layer, x_bld, cos, sin, mask_bl)
        return x_bld

    def init_cache(self, batch: int, slots: int) -> LayerCaches:
        """An empty KV cache (``LayerCaches``: per layer, or stacked when the layers are
        scanned) of ``[B, S, K, H]`` per layer, in the compute dtype."""
        cfg = self.cfg
        shape = (batch, slots, cfg.num_kv_heads, cfg.head_dim)
        if cfg.scan_layers:
            zeros = jnp.zeros((cfg.num_layers, *shape), jnp.dtype(cfg.dtype))
            return zeros, zeros
        zeros = jnp.zeros(shape, jnp.dtype(cfg.dtype))
        return [(zeros, zeros) for _ in range(cfg.num_layers)]

    def forward_cached(
        self,
        input_ids_bt: jax.Array,
        positions_bt: jax.Array,
        cache: LayerCaches,
        key_mask_bs: jax.Array,
        write_index: jax.Array,
    ) -> tuple[jax.Array, LayerCaches]:
        """Runs T new tokens (prefill: the whole prompt at index 0; decode: one token) against
        the cache. ``positions_bt`` are RoPE positions (real tokens before each one);
        ``key_mask_bs`` marks the cache slots holding real tokens, the new ones included.

        Returns final hidden states ``[B, T, D]`` and the updated cache.
        """
        cfg = self.cfg
        x_btd = self.embed(input_ids_bt).astype(jnp.dtype(cfg.dtype))
        cos, sin = rope_cos_sin(positions_bt, cfg.head_dim, cfg.rope_theta)
        if cfg.scan_layers:

            def step(
                layer: DecoderLayer, x: jax.Array, layer_cache: KVCache
            ) -> tuple[jax.Array, KVCache]:
                return layer.cached(x, cos, sin, layer_cache, key_mask_bs, write_index)

            x_btd, cache = scan_over_layers(self.layers, step, x_btd, cache, remat="none")
            return self.norm(x_btd), cache
        new_cache = []
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x_btd, layer_cache = layer.cached(
                x_btd, cos, sin, layer_cache, key_mask_bs, write_index
            )
            new_cache.append(layer_cache)
        return self.norm(x_btd), new_cache

    def logits(self, hidden_bld: jax.Array) -> jax.Array:
        """LM logits ``[B, L, V]`` in fp32 from final hidden states."""
        if not self.cfg.has_lm_head:
            raise ValueError("this backbone was loaded without an LM head (embedding checkpoint)")
        if self.cfg.tie_word_embeddings:
            return self.embed_tokens.attend(hidden_bld).astype(jnp.float32)
        return self.lm_head(hidden_bld).astype(jnp.float32)
