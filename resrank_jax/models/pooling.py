"""Pooling of hidden states into one vector per text, and L2 normalisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from resrank_jax.tokenizer import Pooling


def pool(hidden_bld: jax.Array, mask_bl: jax.Array, kind: Pooling) -> jax.Array:
    """One fp32 vector per row ``[B, D]``.

    ``last``: state of the last real token (works for left and right padding); ``mean``: mean
    over real tokens; ``cls``: first token.
    """
    h32 = hidden_bld.astype(jnp.float32)
    mask = mask_bl.astype(jnp.float32)
    if kind == "mean":
        return (h32 * mask[..., None]).sum(1) / jnp.maximum(mask.sum(1, keepdims=True), 1.0)
    if kind == "cls":
        return h32[:, 0]
    if kind == "last":
        length = mask_bl.shape[1]
        last_bl = jnp.arange(length)[None, :] * mask_bl.astype(jnp.int32)
        idx_b = jnp.max(last_bl, axis=1)
        return jnp.take_along_axis(h32, idx_b[:, None, None], axis=1)[:, 0]
    raise ValueError(f"unknown pooling {kind!r}")


def l2_normalize(x_bd: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``x / max(||x||, eps)`` along the last axis (fp32). The norm is taken as
    ``sqrt(max(sum x^2, eps^2))`` so that an all-zero row (a padded candidate's mean-pooled
    vector) has a zero gradient instead of ``NaN`` (``d||x||/dx`` is undefined at 0)."""
    x32 = x_bd.astype(jnp.float32)
    squared = jnp.sum(jnp.square(x32), axis=-1, keepdims=True)
    return x32 / jnp.sqrt(jnp.maximum(squared, eps * eps))
