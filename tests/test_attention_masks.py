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


def _padded_inputs(t=21, n=6, k=2, h=8):
    """Right padding, left padding and none, at a length that is not a multiple of a block."""
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (3, t, n, h))
    kv = [jax.random.normal(key, (3, t, k, h)) for key in keys[1:3]]
    positions = np.arange(t)
    key_mask = jnp.asarray(np.stack([positions < 15, positions >= 4, positions >= 0]))
    probe = jax.random.normal(keys[3], q.shape)
    return q, *kv, key_mask, probe


@pytest.mark.parametrize("block", [1, 8, 21, 64])
def test_causal_blocks_give_the_outputs_and_gradients_of_one_masked_call(block):
    q, k, v, key_mask, probe = _padded_inputs()
    real_bt1 = np.asarray(key_mask, np.float32)[:, :, None, None]

    def loss(attention, q, k, v):  # only real query rows count, as in the models
        return jnp.sum(attention(q, k, v) * probe * real_bt1)

    def blocked(q, k, v):
        return layers.causal_attention_in_blocks(q, k, v, key_mask, block=block, scale=0.3)

    def reference(q, k, v):
        return layers.reference_attention(q, k, v, layers.attention_mask(key_mask, True), 0.3)

    real = np.asarray(key_mask, bool)
    np.testing.assert_allclose(
        np.asarray(blocked(q, k, v))[real], np.asarray(reference(q, k, v))[real], atol=1e-5
    )
    grads = jax.grad(lambda *a: loss(blocked, *a), argnums=(0, 1, 2))(q, k, v)
    expected = jax.grad(lambda *a: loss(reference, *a), argnums=(0, 1, 2))(q, k, v)
    for got, want in zip(grads, expected, strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _dot_output_shapes(jaxpr) -> list[tuple[int, ...]]:
    """Output shapes of every ``dot_general`` in ``jaxpr`` and its sub-jaxprs."""
    shapes = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            shapes.append(tuple(eqn.outvars[0].aval.shape))
        for param in eqn.params.values():
            inner = getattr(param, "jaxpr", param)
            if hasattr(inner, "eqns"):
                shapes += _dot_output_shapes(inner)
    return shapes


def test_causal_xla_attention_on_cpu_multiplies_only_the_key_prefix_of_each_block():
    q, k, v, key_mask, _ = _padded_inputs(t=130)

    def dots(causal):
        fn = lambda q, k, v: layers.attend(q, k, v, key_mask, causal=causal, impl="xla")  # noqa: E731
        return _dot_output_shapes(jax.make_jaxpr(fn)(q, k, v).jaxpr)

    # the q.k logits hold B=3, K=2, G=3, queries and keys (in an order jax picks): blocks of
    # 64, 64 and 2 queries see 64, 128 and 130 keys; one call sees all 130 for each query
    def logits(queries, keys):
        return tuple(sorted((3, 2, 3, queries, keys)))

    causal = {tuple(sorted(shape)) for shape in dots(True)}
    assert {logits(64, 64), logits(64, 128), logits(2, 130)} <= causal
    assert logits(130, 130) not in causal
    assert logits(130, 130) in {tuple(sorted(shape)) for shape in dots(False)}
