"""bf16 compute / param dtypes and the rematerialisation switch."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from resrank_jax import init_backbone
from resrank_jax.models.config import DecoderConfig

CFG = DecoderConfig(
    family="qwen3",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qk_norm=True,
)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 6)), jnp.int32)
PROBE = jnp.asarray(np.random.default_rng(1).normal(size=(2, 6, 32)), jnp.float32)


def test_bf16_compute_and_params():
    ref = init_backbone(CFG)(IDS)
    mixed = init_backbone(CFG.replace(dtype="bfloat16"))
    assert mixed.layers[0].mlp.up_proj.kernel[...].dtype == jnp.float32
    out = mixed(IDS)
    assert out.dtype == jnp.bfloat16
    rel = float(jnp.linalg.norm(out.astype(jnp.float32) - ref) / jnp.linalg.norm(ref))
    assert rel < 2e-2, rel  # bf16 has 8 mantissa bits
    pure_bf16 = init_backbone(CFG.replace(dtype="bfloat16", param_dtype="bfloat16"))
    assert pure_bf16.layers[0].mlp.up_proj.kernel[...].dtype == jnp.bfloat16
    assert pure_bf16.norm.weight[...].dtype == jnp.bfloat16


def _grads(model):
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        return jnp.sum(nnx.merge(graphdef, p)(IDS) * PROBE)

    return jax.jit(jax.grad(loss))(params)


def test_remat_gives_the_same_gradients():
    plain = _grads(init_backbone(CFG, seed=1))
    remat = _grads(init_backbone(CFG.replace(remat="full"), seed=1))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat), strict=True):
        rel = float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(a), 1e-30))
        assert rel < 1e-5, rel  # fp32 rounding only (measured ~1e-7)
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(plain))
