"""Building blocks shared by the backbones: linear layers with logical axes, RMSNorm, RoPE
(with its scalings), gated MLPs and attention (causal, padded, sliding-window).

Shape letters: B batch, L length (T query / S key), D model width, N query heads, K kv heads,
H head dim, F feed-forward width.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from resrank_jax.models.config import Activation, AttentionImpl, RopeScaling


def partitioned(init: nnx.Initializer, axes: tuple[str, ...]) -> nnx.Initializer:
    """``init`` whose params carry logical ``axes``; placement happens in ``models.build``
    (jit with explicit ``out_shardings``), not eagerly at construction."""
    return nnx.with_partitioning(init, axes, eager_sharding=False)


class Dense(nnx.Linear):
    """``nnx.Linear`` applied to the input flattened to 2-D: ``[..., in] -> [..., out]`` as one
    ``[rows, in] @ [in, out]`` matmul. The kernel's gradient then contracts one dimension
    instead of all leading ones (batch and length); XLA:CPU runs that two-dimension
    contraction far slower (the SmolLM2 forward+backward took 5.94 s instead of 4.96 s;
    README, "CPU speed"). Same params and outputs as ``nnx.Linear``."""

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        rows = inputs.reshape(-1, inputs.shape[-1])
        out = super().__call__(rows, out_sharding=out_sharding)
        return out.reshape(*inputs.shape[:-1], out.shape[-1])


def dense(
    in_features: int,
    out_features: int,
    axes: tuple[str, str],
    *,
    use_bias: bool = False,
    kernel_init: Callable | None = None,
    dtype: str,
    param_dtype: str,
    rngs: nnx.Rngs,
) -> Dense:
    """A ``Dense`` (``nnx.Linear`` on 2-D rows) whose kernel ``[in, out]`` (``kernel_init``,
    default normal std 0.02) and bias ``[out]`` (zeros) carry logical axes."""
    return Dense(
        in_features,
        out_features,
        use_bias=use_bias,
        dtype=jnp.dtype(dtype),
        param_dtype=jnp.dtype(param_dtype),
        kernel_init=partitioned(kernel_init or nnx.initializers.normal(0.02), axes),
        bias_init=partitioned(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """RMSNorm over the last axis, normalised in fp32.

    Llama/Qwen semantics: ``w * x_hat`` in the input dtype, ``w`` initialised to ones.
    ``plus_one`` (Gemma): ``(1 + w) * x_hat`` in fp32, then cast, ``w`` initialised to zeros.
    """

    def __init__(self, dim: int, eps: float, *, param_dtype: str, plus_one: bool = False) -> None:
        self.eps, self.plus_one = eps, plus_one
        init = jnp.zeros if plus_one else jnp.ones
        self.weight = nnx.Param(
            init((dim,), jnp.dtype(param_dtype)), out_sharding=("norm",), eager_sharding=False
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:
            return (x32 * (1.0 + self.weight[...].astype(jnp.float32))).astype(x.dtype)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


def positions_from_mask(mask_bl: jax.Array) -> jax.Array:
    """Token positions ``[B, L]`` that count only real tokens (left or right padding)."""
    return jnp.maximum(jnp.cumsum(mask_bl.astype(jnp.int32), axis=-1) - 1, 0)


def rope_inv_freq(
    head_dim: int, theta: float, scaling: RopeScaling | None, positions_bl: jax.Array
) -> jax.Array:
    """RoPE inverse frequencies ``[H/2]`` in fp32, scaled as transformers' ``rope_type`` does.

    ``dynamic`` depends on the batch: its length is ``max(positions) + 1`` (transformers
    keeps the longest length seen so far in a buffer; this is the stateless form, equal to it
    on a fresh model).
    """
    exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
    if scaling is not None and scaling.rope_type == "dynamic":
        original = scaling.original_max_position_embeddings
        length = jnp.maximum(jnp.max(positions_bl) + 1, original).astype(jnp.float32)
        growth = scaling.factor * length / original - (scaling.factor - 1)
        theta = theta * growth ** (head_dim / (head_dim - 2))
    inv_freq = 1.0 / (theta**exponents)
    if scaling is None or scaling.rope_type == "dynamic":
        return inv_freq
    if scaling.rope_type == "linear":
        return inv_freq / scaling.factor
    return _llama3_inv_freq(inv_freq, scaling)


def _llama3_inv_freq(inv_freq: jax.Array, scaling: RopeScaling) -> jax.Array:
    """Llama 3.1's scaling: wavelengths above ``original / low_freq_factor`` divided by
    ``factor``, below ``original / high_freq_factor`` kept, smoothly blended between."""
    original, factor = scaling.original_max_position_embeddings, scaling.factor
    low, high = scaling.low_freq_factor, scaling.high_freq_factor
    wavelen = 2 * jnp.pi / inv_freq
    scaled = jnp.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return jnp.where(medium, blended, scaled)


def rope_cos_sin(
    positions_bl: jax.Array, head_dim: int, theta: float, scaling: RopeScaling | None = None
) -> tuple[jax.Array, jax.Array]:
    """RoPE tables ``[B, L, 1, H]`` in fp32 (HF's ``rotate_half`` layout)."""
    inv_freq = rope_inv_freq(head_dim, theta, scaling, positions_bl)
    angles = positions_bl.astype(jnp.float32)[..., None] * inv_freq  # [B, L, H/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_blnh: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates ``x [B, L, N, H]`` by the RoPE tables of ``rope_cos_sin``."""
    half = x_blnh.shape[-1] // 2
    x32 = x_blnh.astype(jnp.float32)
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x_blnh.dtype)


def attention_mask(key_mask_bs: jax.Array, causal: bool) -> jax.Array:
    """Boolean mask ``[B, 1, T, S]`` (T == S) that keeps real keys, and the past when causal."""
    length = key_mask_bs.shape[-1]
    mask = key_mask_bs.astype(bool)[:, None, None, :]
    if causal:
        mask = mask & jnp.tril(jnp.ones((length, length), bool))[None, None]
    return mask


def causal_window(
    query_index_t: jax.Array, key_index_s: jax.Array, window: int | None
) -> jax.Array:
    """``[T, S]``: key ``s`` is at or before query ``t`` and, with a ``window`` W, one of the
    W positions up to it (``t - W < s <= t``, transformers' sliding window). Indices are
    sequence (cache) positions, padding included, as in transformers."""
    keep = key_index_s[None, :] <= query_index_t[:, None]
    if window is not None:
        keep = keep & (key_index_s[None, :] > query_index_t[:, None] - window)
    return keep


def reference_attention(
    q_btnh: jax.Array,
    k_bskh: jax.Array,
    v_bskh: jax.Array,
    mask_b1ts: jax.Array,
    scale: float | None = None,
) -> jax.Array:
    """Plain softmax attention with GQA, fp32 softmax; the reference for the fused paths.
    ``scale`` multiplies q.k (default ``H**-0.5``)."""
    n, k = q_btnh.shape[2], k_bskh.shape[2]
    k_bsnh = jnp.repeat(k_bskh, n // k, axis=2)
    v_bsnh = jnp.repeat(v_bskh, n // k, axis=2)
    scale = q_btnh.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", q_btnh, k_bsnh).astype(jnp.float32) * scale
    logits = jnp.where(mask_b1ts, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v_bsnh.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs, v_bsnh)


def attend(
    q_btnh: jax.Array,
    k_bskh: jax.Array,
    v_bskh: jax.Array,
    key_mask_bs: jax.Array,
    *,
    causal: bool,
    impl: AttentionImpl,
    scale: float | None = None,
) -> jax.Array:
    """Multi-head attention with padding mask; GQA when K < N. Returns ``[B, T, N, H]``.

    ``xla`` and ``cudnn`` go through ``jax.nn.dot_product_attention`` (on a CPU backend,
    causal ``xla`` attention runs in query blocks, ``causal_attention_in_blocks``: measured
    there only); ``reference`` is the plain einsum path the tests compare against. Query
    rows of padding tokens that see no key come out as an average of values (finite, never
    NaN); callers ignore them. ``scale`` multiplies q.k (default ``H**-0.5``).
    """
    if impl == "reference":
        return attend_with_mask(
            q_btnh, k_bskh, v_bskh, attention_mask(key_mask_bs, causal), impl=impl, scale=scale
        )
    if causal and impl == "xla" and jax.default_backend() == "cpu":
        return causal_attention_in_blocks(q_btnh, k_bskh, v_bskh, key_mask_bs, scale=scale)
    # Key padding as a mask plus is_causal (cuDNN then skips the masked-out causal blocks).
    # XLA broadcasts a [B, 1, 1, S] mask; cuDNN turns the mask into a bias and requires its
    # last two dims to be exactly (T, S) ("Bias must have same seq length as QKV", H200).
    b, t, s = q_btnh.shape[0], q_btnh.shape[1], k_bskh.shape[1]
    mask_b1ts = key_mask_bs.astype(bool)[:, None, None, :]
    if impl == "cudnn":
        mask_b1ts = jnp.broadcast_to(mask_b1ts, (b, 1, t, s))
    return jax.nn.dot_product_attention(
        q_btnh,
        k_bskh,
        v_bskh,
        mask=mask_b1ts,
        is_causal=causal,
        scale=scale,
        implementation=impl,
    )


CAUSAL_BLOCK = 64  # queries per block of causal_attention_in_blocks


def causal_attention_in_blocks(
    q_btnh: jax.Array,
    k_bskh: jax.Array,
    v_bskh: jax.Array,
    key_mask_bs: jax.Array,
    *,
    block: int = CAUSAL_BLOCK,
    scale: float | None = None,
) -> jax.Array:
    """Causal self-attention (T == S) one block of ``block`` queries at a time, each block
    against only the keys up to its own end: the keys a causal mask hides from a whole block
    are never multiplied (the skipping of flash attention, with static slices, so autodiff
    gives the backward). At T = 256, block 64, 10 of 16 query-key tiles remain; on XLA:CPU
    SmolLM2's forward+backward at 4 x 256 tokens fell from 4.21 to 3.79 s (README, "CPU
    speed"). Same outputs as ``attend(..., causal=True)`` on real query rows;
    rows of left padding, which see no key, are averages of other values (callers ignore
    them). Returns ``[B, T, N, H]``."""
    length = q_btnh.shape[1]
    if k_bskh.shape[1] != length:
        raise ValueError(f"causal blocks need T == S, got {length} and {k_bskh.shape[1]}")
    key_mask_b11s = key_mask_bs.astype(bool)[:, None, None, :]
    outs = []
    for start in range(0, length, block):
        end = min(start + block, length)
        keep_ts = causal_window(jnp.arange(start, end), jnp.arange(end), None)
        out = jax.nn.dot_product_attention(
            q_btnh[:, start:end],
            k_bskh[:, :end],
            v_bskh[:, :end],
            mask=keep_ts[None, None] & key_mask_b11s[..., :end],
            scale=scale,
            implementation="xla",
        )
        outs.append(out)
    return jnp.concatenate(outs, axis=1)


def attend_with_mask(
    q_btnh: jax.Array,
    k_bskh: jax.Array,
    v_bskh: jax.Array,
    mask_b1ts: jax.Array,
    *,
    impl: AttentionImpl,
    scale: float | None = None,
) -> jax.Array:
    """Attention under an explicit boolean mask ``[B, 1, T, S]`` (KV-cache decoding, sliding
    windows)."""
    if impl == "reference":
        return reference_attention(q_btnh, k_bskh, v_bskh, mask_b1ts, scale)
    return jax.nn.dot_product_attention(
        q_btnh, k_bskh, v_bskh, mask=mask_b1ts, scale=scale, implementation=impl
    )


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
}


class GatedMLP(nnx.Module):
    """``down(act(gate(x)) * up(x))`` with HF names: SwiGLU (``silu``), GeGLU (``gelu_tanh``)."""

    def __init__(
        self,
        d: int,
        f: int,
        *,
        activation: Activation = "silu",
        dtype: str,
        param_dtype: str,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.activation = activation
        self.gate_proj = dense(d, f, ("embed", "mlp"), **kw)
        self.up_proj = dense(d, f, ("embed", "mlp"), **kw)
        self.down_proj = dense(f, d, ("mlp", "embed"), **kw)

    def __call__(self, x_bld: jax.Array) -> jax.Array:
        gate = ACTIVATIONS[self.activation](self.gate_proj(x_bld))
        return self.down_proj(gate * self.up_proj(x_bld))


def remat_policy(remat: str) -> Callable[..., bool] | None:
    """The ``jax.checkpoint`` policy of a ``remat`` choice (``models.config.REMAT_CHOICES``):
    ``None`` (save only the inputs) for ``full``, else ``jax.checkpoint_policies.<remat>``.
    Callers skip rematerialisation altogether for ``none``."""
    return None if remat == "full" else getattr(jax.checkpoint_policies, remat)


def split_heads(x_blf: jax.Array, heads: int) -> jax.Array:
    """``[B, L, heads*H] -> [B, L, heads, H]``."""
    b, length, f = x_blf.shape
    return x_blf.reshape(b, length, heads, f // heads)


def merge_heads(x_blnh: jax.Array) -> jax.Array:
    """``[B, L, N, H] -> [B, L, N*H]``."""
    b, length, n, h = x_blnh.shape
    return x_blnh.reshape(b, length, n * h)
