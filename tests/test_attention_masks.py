"""The mask each fused attention implementation receives (cuDNN cannot run on CPU, so the
call is intercepted and forwarded to XLA with the same mask)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax.models import layers


def _inputs(b=2, t=6, n=4, k=2, h=8):
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, t, n, h))
    kv = [jax.random.normal(key, (b, t, k, h)) for key in keys[1:]]
    key_mask = jnp.array([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]])  # right and left padding
    return q, *kv, key_mask


@pytest.mark.parametrize("causal", [False, True])
def test_cudnn_gets_a_mask_whose_last_dims_are_query_and_key_length(monkeypatch, causal):
    # jax's cuDNN path turns the mask into a bias and refuses one whose last two dims are not
    # exactly (T, S): "Bias must have same seq length as QKV, got 1 and 256" on an H200.
    seen, real = [], jax.nn.dot_product_attention

    def spy(q, k, v, *, mask, is_causal, scale, implementation):
        seen.append(mask.shape)
        return real(q, k, v, mask=mask, is_causal=is_causal, scale=scale, implementation="xla")

    monkeypatch.setattr(layers.jax.nn, "dot_product_attention", spy)
    q, k, v, key_mask = _inputs()
    out = layers.attend(q, k, v, key_mask, causal=causal, impl="cudnn")
    assert seen == [(2, 1, 6, 6)]
    expected = layers.reference_attention(q, k, v, layers.attention_mask(key_mask, causal))
    valid = np.asarray(key_mask, bool)
    np.testing.assert_allclose(np.asarray(out)[valid], np.asarray(expected)[valid], atol=1e-5)
