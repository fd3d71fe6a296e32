"""The causal decoder body of the Qwen3 / Qwen2 / Llama (SmolLM2) / Mistral / Gemma 3 family.

Token ids **or** input embeddings in, final hidden states (after the final norm) out, logits
when asked. Parameter names follow HF (``q_proj``, ``input_layernorm``...) so the key map in
``resrank_jax.hf`` is a plain table. Layers are ``full`` or ``sliding`` (``DecoderConfig.kinds``);
each kind gets its own RoPE tables and mask (``LayerInputs``), built once per call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resrank_jax.models.config import DecoderConfig, LayerType
from resrank_jax.models.layers import (
    GatedMLP,
    RMSNorm,
    apply_rope,
    attend,
    attend_with_mask,
    causal_window,
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


class LayerInputs(NamedTuple):
    """What a layer of one kind needs besides its input: RoPE tables ``[B, T, 1, H]`` and
    either the key padding mask ``key_mask_bs`` (``mask_b1ts`` None: fused causal attention)
    or an explicit ``mask_b1ts`` (sliding windows, KV-cache steps)."""

    cos: jax.Array
    sin: jax.Array
    key_mask_bs: jax.Array
    mask_b1ts: jax.Array | None


def _norm(cfg: DecoderConfig, dim: int) -> RMSNorm:
    return RMSNorm(dim, cfg.rms_norm_eps, param_dtype=cfg.param_dtype, plus_one=cfg.norm_plus_one)


class DecoderAttention(nnx.Module):
    """GQA self-attention with RoPE; optional q/k RMSNorm (Qwen3, Gemma 3) and q/k/v bias
    (Qwen2)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        self.cfg = cfg
        kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
        d, n, k, h = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = dense(d, n * h, ("embed", "heads"), use_bias=cfg.qkv_bias, **kw)
        self.k_proj = dense(d, k * h, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
        self.v_proj = dense(d, k * h, ("embed", "kv_heads"), use_bias=cfg.qkv_bias, **kw)
        self.o_proj = dense(n * h, d, ("heads", "embed"), **kw)
        if cfg.qk_norm:
            self.q_norm = _norm(cfg, h)
            self.k_norm = _norm(cfg, h)

    def _qkv(self, x_bld: jax.Array, inputs: LayerInputs):
        cfg = self.cfg
        q_blnh = split_heads(self.q_proj(x_bld), cfg.num_heads)
        k_blkh = split_heads(self.k_proj(x_bld), cfg.num_kv_heads)
        v_blkh = split_heads(self.v_proj(x_bld), cfg.num_kv_heads)
        if cfg.qk_norm:
            q_blnh, k_blkh = self.q_norm(q_blnh), self.k_norm(k_blkh)
        cos, sin = inputs.cos, inputs.sin
        return apply_rope(q_blnh, cos, sin), apply_rope(k_blkh, cos, sin), v_blkh

    def _attend(self, q_btnh, k_bskh, v_bskh, inputs: LayerInputs) -> jax.Array:
        impl, scale = self.cfg.attention_impl, self.cfg.attention_scale
        if inputs.mask_b1ts is None:
            return attend(
                q_btnh, k_bskh, v_bskh, inputs.key_mask_bs, causal=True, impl=impl, scale=scale
            )
        return attend_with_mask(q_btnh, k_bskh, v_bskh, inputs.mask_b1ts, impl=impl, scale=scale)

    def __call__(self, x_bld: jax.Array, inputs: LayerInputs) -> jax.Array:
        q_blnh, k_blkh, v_blkh = self._qkv(x_bld, inputs)
        return self.o_proj(merge_heads(self._attend(q_blnh, k_blkh, v_blkh, inputs)))

    def cached(
        self, x_btd: jax.Array, inputs: LayerInputs, cache: KVCache, write_index: jax.Array
    ) -> tuple[jax.Array, KVCache]:
        """Attention of T new tokens written at ``write_index`` of a cache of S slots; they see
        the slots ``inputs.mask_b1ts`` keeps. Returns output and new cache."""
        q_btnh, k_btkh, v_btkh = self._qkv(x_btd, inputs)
        k_bskh = jax.lax.dynamic_update_slice(
            cache[0], k_btkh.astype(cache[0].dtype), (0, write_index, 0, 0)
        )
        v_bskh = jax.lax.dynamic_update_slice(
            cache[1], v_btkh.astype(cache[1].dtype), (0, write_index, 0, 0)
        )
        out_btnh = self._attend(q_btnh, k_bskh, v_bskh, inputs)
        return self.o_proj(merge_heads(out_btnh)), (k_bskh, v_bskh)


class DecoderLayer(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. With
    ``sandwich_norms`` (Gemma 3) the attention and MLP outputs are normed too, and the MLP's
    input norm is ``pre_feedforward_layernorm`` (HF names)."""

    def __init__(self, cfg: DecoderConfig, *, rngs: nnx.Rngs) -> None:
        self.sandwich = cfg.sandwich_norms
        self.input_layernorm = _norm(cfg, cfg.hidden_size)
        self.self_attn = DecoderAttention(cfg, rngs=rngs)
        self.post_attention_layernorm = _norm(cfg, cfg.hidden_size)
        if cfg.sandwich_norms:
            self.pre_feedforward_layernorm = _norm(cfg, cfg.hidden_size)
            self.post_feedforward_layernorm = _norm(cfg, cfg.hidden_size)
        self.mlp = GatedMLP(
            cfg.hidden_size,
            cfg.intermediate_size,
            activation=cfg.mlp_activation,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            rngs=rngs,
        )

    def _add_attention(self, x_bld: jax.Array, attn_bld: jax.Array) -> jax.Array:
        return x_bld + (self.post_attention_layernorm(attn_bld) if self.sandwich else attn_bld)

    def _add_mlp(self, x_bld: jax.Array) -> jax.Array:
        if not self.sandwich:
            return x_bld + self.mlp(self.post_attention_layernorm(x_bld))
        return x_bld + self.post_feedforward_layernorm(
            self.mlp(self.pre_feedforward_layernorm(x_bld))
        )

    def __call__(self, x_bld: jax.Array, inputs: LayerInputs) -> jax.Array:
        x_bld = self._add_attention(x_bld, self.self_attn(self.input_layernorm(x_bld), inputs))
        return self._add_mlp(x_bld)

    def cached(self, x_btd, inputs: LayerInputs, cache: KVCache, write_index):
        """``__call__`` for new tokens against a KV cache (see ``DecoderAttention.cached``)."""
        attn_btd, cache = self.self_attn.cached(
            self.input_layernorm(x_btd), inputs, cache, write_index
        )
        return self._add_mlp(self._add_attention(x_btd, attn_btd)), cache


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
        self.norm = _norm(cfg, cfg.hidden_size)
        if cfg.has_lm_head and not cfg.tie_word_embeddings:
            self.lm_head = dense(
                cfg.hidden_size,
                cfg.vocab_size,
                ("embed", "vocab"),
                dtype=cfg.dtype,
                param_dtype=cfg.param_dtype,
                rngs=rngs,
            )

    @property
    def embed_scale(self) -> float:
        """The factor on looked-up token embeddings: ``sqrt(hidden)`` (Gemma) or 1."""
        return self.cfg.hidden_size**0.5 if self.cfg.scale_embeddings else 1.0

    def embed(self, input_ids_bl: jax.Array) -> jax.Array:
        """Token embeddings ``[B, L, D]`` (the input the reranker splices slots into), scaled
        by ``embed_scale`` rounded to the param dtype as transformers does."""
        x_bld = self.embed_tokens(input_ids_bl)
        if not self.cfg.scale_embeddings:
            return x_bld
        scale = jnp.asarray(self.embed_scale, jnp.dtype(self.cfg.param_dtype))
        return x_bld * scale.astype(x_bld.dtype)

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
            inputs_embeds_bld: input embeddings ``[B, L, D]`` (already scaled, as ``embed``
                returns them).
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
        index_l = jnp.arange(x_bld.shape[1])
        inputs = self._layer_inputs(
            positions_from_mask(attention_mask_bl), attention_mask_bl, index_l, index_l
        )
        hidden_bld = self.norm(self._run_layers(x_bld, inputs))
        if not return_logits:
            return hidden_bld
        return hidden_bld, self.logits(hidden_bld)

    def _layer_inputs(
        self,
        positions_bt: jax.Array,
        key_mask_bs: jax.Array,
        query_index_t: jax.Array,
        key_index_s: jax.Array,
        *,
        cached: bool = False,
    ) -> dict[LayerType, LayerInputs]:
        """``LayerInputs`` of each layer kind present. Full layers keep the fused causal path
        (no explicit mask) unless some layer slides or a KV cache is used."""
        cfg = self.cfg
        explicit = cached or "sliding" in cfg.kinds
        inputs = {}
        for kind in sorted(set(cfg.kinds)):
            local = kind == "sliding" and cfg.local_rope_theta is not None
            theta = cfg.local_rope_theta if local else cfg.rope_theta
            scaling = None if local else cfg.rope_scaling
            cos, sin = rope_cos_sin(positions_bt, cfg.head_dim, theta, scaling)
            mask_b1ts = None
            if explicit:
                window = cfg.sliding_window if kind == "sliding" else None
                keep_ts = causal_window(query_index_t, key_index_s, window)
                mask_b1ts = key_mask_bs.astype(bool)[:, None, None, :] & keep_ts[None, None]
            inputs[kind] = LayerInputs(cos, sin, key_mask_bs, mask_b1ts)
        return inputs

    def _scanned_inputs(self, inputs: dict[LayerType, LayerInputs]):
        """``(per-layer selector xs, select(xs_i) -> LayerInputs)`` for scanned layers: one
        kind needs no selection; two kinds are chosen per layer by a scanned flag."""
        kinds = self.cfg.kinds
        if len(inputs) == 1:
            only = next(iter(inputs.values()))
            return None, lambda _: only
        sliding_l = jnp.asarray(np.array([k == "sliding" for k in kinds]))

        def select(is_sliding: jax.Array) -> LayerInputs:
            return jax.tree.map(
                lambda a, b: jnp.where(is_sliding, a, b), inputs["sliding"], inputs["full"]
            )

        return sliding_l, select

    def _run_layers(self, x_bld: jax.Array, inputs: dict[LayerType, LayerInputs]) -> jax.Array:
        """All layers over ``x [B, L, D]``: scanned or unrolled, rematerialised per layer as
        ``cfg.remat`` says."""
        cfg = self.cfg
        if cfg.scan_layers:
            xs, select = self._scanned_inputs(inputs)

            def step(layer: DecoderLayer, x: jax.Array, xs_i: Any) -> tuple[jax.Array, None]:
                return layer(x, select(xs_i)), None

            return scan_over_layers(self.layers, step, x_bld, xs, remat=cfg.remat)[0]

        def call(layer: DecoderLayer, x: jax.Array, layer_inputs: LayerInputs) -> jax.Array:
            return layer(x, layer_inputs)

        if cfg.remat != "none":
            call = nnx.remat(call, policy=remat_policy(cfg.remat))
        for layer, kind in zip(self.layers, cfg.kinds, strict=True):
            x_bld = call(layer, x_bld, inputs[kind])
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
        t, s = input_ids_bt.shape[1], key_mask_bs.shape[1]
        inputs = self._layer_inputs(
            positions_bt, key_mask_bs, write_index + jnp.arange(t), jnp.arange(s), cached=True
        )
        if cfg.scan_layers:
            xs, select = self._scanned_inputs(inputs)

            def step(
                layer: DecoderLayer, x: jax.Array, cache_and_xs: tuple[KVCache, Any]
            ) -> tuple[jax.Array, KVCache]:
                layer_cache, xs_i = cache_and_xs
                return layer.cached(x, select(xs_i), layer_cache, write_index)

            x_btd, cache = scan_over_layers(self.layers, step, x_btd, (cache, xs), remat="none")
            return self.norm(x_btd), cache
        new_cache = []
        for layer, kind, layer_cache in zip(self.layers, cfg.kinds, cache, strict=True):
            x_btd, layer_cache = layer.cached(x_btd, inputs[kind], layer_cache, write_index)
            new_cache.append(layer_cache)
        return self.norm(x_btd), new_cache

    def logits(self, hidden_bld: jax.Array) -> jax.Array:
        """LM logits ``[B, L, V]`` in fp32 from final hidden states."""
        if not self.cfg.has_lm_head:
            raise ValueError("this backbone was loaded without an LM head (embedding checkpoint)")
        if self.cfg.tie_word_embeddings:
            return self.embed_tokens.attend(hidden_bld).astype(jnp.float32)
        return self.lm_head(hidden_bld).astype(jnp.float32)
