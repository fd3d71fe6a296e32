"""KV-cache greedy decoding equals greedy decoding by full recomputation."""

import jax
import jax.numpy as jnp
import numpy as np

from resrank_jax import init_backbone
from resrank_jax.models.generation import greedy_generate
from tests.hf_reference import padded_batch
from tests.tiny_models import TINY_DECODER


def greedy_without_cache(model, ids, mask, steps, stop_ids, pad_id):
    forward = jax.jit(lambda m, i, k: m.logits(m(i, attention_mask_bl=k))[:, -1])
    tokens = np.full((ids.shape[0], steps), pad_id, np.int32)
    done = np.zeros(ids.shape[0], bool)
    for t in range(steps):
        nxt = np.asarray(jnp.argmax(forward(model, jnp.asarray(ids), jnp.asarray(mask)), -1))
        tokens[:, t] = np.where(done, pad_id, nxt)
        done |= np.isin(nxt, stop_ids)
        ids = np.concatenate([ids, nxt[:, None].astype(np.int32)], axis=1)
        mask = np.concatenate([mask, np.ones((ids.shape[0], 1), np.int32)], axis=1)
    return tokens


def test_cached_greedy_equals_recomputation():
    model = init_backbone(TINY_DECODER, seed=7)
    ids, mask = padded_batch(64, [6, 3, 9], "left", seed=3)
    ref = greedy_without_cache(model, ids, mask, 8, stop_ids=(), pad_id=0)
    tokens, n = greedy_generate(
        model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=8, stop_ids=(), pad_id=0
    )
    np.testing.assert_array_equal(np.asarray(tokens), ref)
    np.testing.assert_array_equal(np.asarray(n), [8, 8, 8])


def test_stop_tokens_end_rows_and_pad_after():
    model = init_backbone(TINY_DECODER, seed=7)
    ids, mask = padded_batch(64, [6, 3, 9], "left", seed=3)
    free = greedy_without_cache(model, ids, mask, 8, stop_ids=(), pad_id=0)
    stop = int(free[1, 2])  # make row 1 stop at its third token
    ref = greedy_without_cache(model, ids, mask, 8, stop_ids=(stop,), pad_id=0)
    tokens, n = greedy_generate(
        model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=8, stop_ids=(stop,), pad_id=0
    )
    np.testing.assert_array_equal(np.asarray(tokens), ref)
    first_stop = [int(np.argmax(row == stop)) + 1 if stop in row else 8 for row in ref]
    np.testing.assert_array_equal(np.asarray(n), first_stop)
    assert np.asarray(n)[1] <= 3
