"""AdamW weight decay on the real param names of tiny models: norms, biases and ResRank's
scalars are excluded unless ``optim.decay_norms_and_biases`` (HF Trainer's rule, which
E2Rank's recipe trains under); decayed params shrink by exactly ``lr * wd * param``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from tiny_models import tiny_resrank

from resrank_jax.config import OptimConfig, StageConfig
from resrank_jax.models.config import ResRankConfig
from resrank_jax.train.state import (
    SCALAR_PARAMS,
    make_optimizer,
    param_path,
    weight_decay_mask,
)

LR, WD = 1e-2, 0.1

MODELS = {
    # Qwen3-style decoder encoder (RMSNorm weights, q/k norms), mlp projector with biases, gate
    "decoder": dict(cfg=ResRankConfig(phi="mlp", residual="gated", query_vector="gated")),
    # BERT encoder (LayerNorm scale + bias, dense biases), linear projector, alpha
    "bert": dict(cfg=ResRankConfig(phi="linear", residual="alpha"), bert_encoder=True),
    # learnable slot scale
    "scale": dict(cfg=ResRankConfig(phi="scale")),
}


def flat_params(params):
    return {param_path(p): v[...] for p, v in nnx.to_flat_state(params)}


def expected_no_decay(path: str) -> bool:
    last = path.split("/")[-1]
    return last == "bias" or "norm" in path or path in SCALAR_PARAMS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_mask_excludes_norms_biases_and_scalars_only(name):
    params = nnx.state(tiny_resrank(**MODELS[name]), nnx.Param)
    flat = flat_params(params)
    mask = {param_path(p): v for p, v in nnx.to_flat_state(weight_decay_mask(params))}
    assert set(mask) == set(flat)
    for path, decays in mask.items():
        assert decays == (not expected_no_decay(path)), path
        if flat[path].ndim <= 1:  # every vector/scalar param of these models is a norm/bias
            assert not decays, path
    assert any("embed" in p and mask[p] for p in mask), "embeddings decay, as in HF"
    assert sum(not v for v in mask.values()) > 0 and any(mask.values())
    everything = weight_decay_mask(params, decay_norms_and_biases=True)
    assert all(v for _, v in nnx.to_flat_state(everything))


def one_zero_grad_step(params, stage, cfg):
    tx, schedule = make_optimizer(params, stage, 10, cfg)
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
    return flat_params(optax.apply_updates(params, updates)), float(schedule(0))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("decay_all", [False, True])
def test_zero_gradient_step_decays_exactly_the_masked_params(name, decay_all):
    params = nnx.state(tiny_resrank(**MODELS[name]), nnx.Param)
    before = flat_params(params)
    scalar = next(p for p in before if p in SCALAR_PARAMS)
    # everything but the reranker trains; the model's scalar at 3x the lr (and decay)
    trainable = ("encoder/.*", scalar, *(("projector.*",) if "projector/kernel" in before else ()))
    stage = StageConfig("s", 1.0, trainable=trainable, lr=LR, lr_scale=((scalar, 3.0),))
    cfg = OptimConfig(weight_decay=WD, warmup_ratio=0.0, decay_norms_and_biases=decay_all)
    after, lr = one_zero_grad_step(params, stage, cfg)
    assert lr == pytest.approx(LR)
    decayed = kept = 0
    for path, p in before.items():
        p, new = np.asarray(p), np.asarray(after[path])
        trains = not path.startswith("reranker/")
        if trains and (decay_all or not expected_no_decay(path)):
            scale = 3.0 if path == scalar else 1.0
            # AdamW with zero moments: update = -lr * wd * p (optax's order of operations)
            want = p + np.float32(-scale * lr) * (np.float32(WD) * p)
            np.testing.assert_allclose(new, want, rtol=1e-6, atol=0, err_msg=path)
            np.testing.assert_allclose(new, p * (1 - scale * lr * WD), rtol=1e-5, err_msg=path)
            decayed += 1
        else:
            assert np.array_equal(new, p), path  # bit-identical: no decay, or frozen
            kept += 1
    assert decayed and kept
    if decay_all:
        assert not np.array_equal(after[scalar], before[scalar]) or float(before[scalar]) == 0
    else:
        assert np.array_equal(after[scalar], before[scalar])


def test_default_follows_the_hf_trainer_rule():
    assert OptimConfig().decay_norms_and_biases is False
