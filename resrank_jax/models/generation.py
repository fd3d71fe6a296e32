"""Greedy decoding with a KV cache, as one jitted ``lax.while_loop`` (the generative baseline's
decoder). Prompts are left-padded, so every row writes its new tokens at the same slot."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp

from resrank_jax.models.decoder import Decoder
from resrank_jax.models.layers import positions_from_mask


@partial(jax.jit, static_argnames=("max_new_tokens", "stop_ids", "pad_id"))
def greedy_generate(
    model: Decoder,
    ids_bl: jax.Array,
    mask_bl: jax.Array,
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int] | tuple[int, ...],
    pad_id: int,
) -> tuple[jax.Array, jax.Array]:
    """Greedy continuation of left-padded prompts ``[B, L]``.

    Returns ``tokens [B, max_new_tokens]`` (``pad_id`` after a row stops; the stop token itself
    is kept) and ``num_generated [B]`` (tokens up to and including the stop token). The loop
    ends early once every row has stopped.
    """
    b, length = ids_bl.shape
    stop = jnp.asarray(tuple(stop_ids), jnp.int32)
    cache = model.init_cache(b, length + max_new_tokens)
    key_mask = jnp.concatenate([mask_bl, jnp.zeros((b, max_new_tokens), mask_bl.dtype)], axis=1)
    hidden, cache = model.forward_cached(ids_bl, positions_from_mask(mask_bl), cache, key_mask, 0)
    first = jnp.argmax(model.logits(hidden[:, -1:])[:, 0], axis=-1).astype(jnp.int32)
    state = dict(
        t=jnp.zeros((), jnp.int32),
        cache=cache,
        key_mask=key_mask,
        tokens=jnp.full((b, max_new_tokens), pad_id, jnp.int32),
        done=jnp.zeros((b,), bool),
        next_token=first,
        position=jnp.sum(mask_bl, axis=1).astype(jnp.int32),
        num_generated=jnp.zeros((b,), jnp.int32),
    )

    def cond(s):
        return (s["t"] < max_new_tokens) & ~jnp.all(s["done"])

    def body(s):
        t, token = s["t"], s["next_token"]
        tokens = s["tokens"].at[:, t].set(jnp.where(s["done"], pad_id, token))
        num_generated = s["num_generated"] + (~s["done"]).astype(jnp.int32)
        done = s["done"] | jnp.isin(token, stop)
        key_mask = s["key_mask"].at[:, length + t].set(1)
        hidden, cache = model.forward_cached(
            token[:, None], s["position"][:, None], s["cache"], key_mask, length + t
        )
        next_token = jnp.argmax(model.logits(hidden)[:, 0], axis=-1).astype(jnp.int32)
        return dict(
            t=t + 1,
            cache=cache,
            key_mask=key_mask,
            tokens=tokens,
            done=done,
            next_token=next_token,
            position=s["position"] + 1,
            num_generated=num_generated,
        )

    final = jax.lax.while_loop(cond, body, state)
    return final["tokens"], final["num_generated"]
