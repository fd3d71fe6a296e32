"""KV-cache greedy decoding equals greedy decoding by full recomputation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax import init_backbone
from resrank_jax.models.generation import greedy_generate
from tests.hf_reference import padded_batch
from tests.tiny_models import TINY_DECODER, TINY_GEMMA3


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


# Windows shorter than the prompts: the cache must drop the keys that slid out; unrolled and
# scanned (Gemma 3's scan picks each layer's mask and RoPE tables).
SLIDING = {
    "mistral": TINY_DECODER.replace(family="mistral", qk_norm=False, sliding_window=3),
    "gemma3": TINY_GEMMA3,
}


@pytest.mark.parametrize("scan", [False, True])
@pytest.mark.parametrize("name", list(SLIDING))
def test_cached_greedy_with_sliding_windows_equals_recomputation(name, scan):
    model = init_backbone(SLIDING[name].replace(scan_layers=scan), seed=5)
    ids, mask = padded_batch(64, [6, 3, 9], "left", seed=4)
    ref = greedy_without_cache(model, ids, mask, 6, stop_ids=(), pad_id=0)
    tokens, _ = greedy_generate(
        model, jnp.asarray(ids), jnp.asarray(mask), max_new_tokens=6, stop_ids=(), pad_id=0
    )
    np.testing.assert_array_equal(np.asarray(tokens), ref)
    # Hidden states of a prefill and one cached step equal the full forward's, and a wide
    # window changes them (random tiny models repeat tokens, so tokens alone prove little).
    step_h = _prefill_then_step(model, ids, mask)
    full = np.asarray(model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask)))[:, -1]
    np.testing.assert_allclose(step_h, full, atol=1e-5, rtol=0)
    wide = init_backbone(SLIDING[name].replace(scan_layers=scan, sliding_window=64), seed=5)
    assert np.abs(_prefill_then_step(wide, ids, mask) - step_h).max() > 1e-3


def _prefill_then_step(model, ids, mask) -> np.ndarray:
    """Final hidden state ``[B, D]`` of the last prompt token, computed by a cached prefill of
    all but that token and one cached step for it."""
    from resrank_jax.models.layers import positions_from_mask

    b, length = ids.shape
    cache = model.init_cache(b, length)
    key_mask = jnp.asarray(mask)
    positions = positions_from_mask(key_mask)
    prefix_mask = key_mask.at[:, -1].set(0)
    _, cache = model.forward_cached(
        jnp.asarray(ids[:, :-1]), positions[:, :-1], cache, prefix_mask, 0
    )
    hidden, _ = model.forward_cached(
        jnp.asarray(ids[:, -1:]), positions[:, -1:], cache, key_mask, length - 1
    )
    return np.asarray(hidden[:, 0])


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
