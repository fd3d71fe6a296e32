"""L2 normalisation: the cosine's value, and finite gradients for an all-zero row (the
mean-pooled vector of a padded candidate)."""

import jax
import jax.numpy as jnp
import numpy as np

from resrank_jax.models.pooling import l2_normalize, pool


def test_l2_normalize_values():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-14, 0.0]], np.float32)
    np.testing.assert_allclose(
        np.asarray(l2_normalize(x)), [[0.6, 0.8], [0.0, 0.0], [1e-2, 0.0]], rtol=1e-6
    )


def test_padded_candidate_gives_finite_gradients():
    hidden = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 4)), jnp.float32)
    mask = jnp.array([[1, 1, 0], [0, 0, 0]])  # the second row is a padded candidate

    def loss(h):
        e = l2_normalize(pool(h, mask, "mean"))
        return jnp.sum(e[0] * jnp.arange(4.0)) + 0.0 * jnp.sum(e[1])

    grad = jax.grad(loss)(hidden)
    assert np.isfinite(np.asarray(grad)).all()
    np.testing.assert_array_equal(np.asarray(grad)[1], 0.0)
