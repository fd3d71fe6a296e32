"""``data.cached_vectors``: with the encoder frozen, training on vectors encoded once gives
the step (loss and gradients) and the run (params) that encoding every step gives."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from resrank_jax import make_mesh
from resrank_jax.config import resolve_config
from resrank_jax.errors import ConfigError
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.data import load_lists
from resrank_jax.train.loop import run_training
from resrank_jax.train.models import build_model, build_task, load_trained
from resrank_jax.train.objective import compute_loss
from resrank_jax.train.vectors import with_vectors

RERANKER_ONLY = "('(?!encoder/).*',)"
FROZEN = [
    "data.max_queries=8",
    "steps=2",
    "checkpoint_every=2",
    *(
        f"stages.{s}.{k}"
        for s in (0, 1)
        for k in (f"trainable={RERANKER_ONLY}", "weights=(('rank', 2.0),)")
    ),
]


def frozen_cfg(*extra: str):
    return resolve_config("tiny", [*FROZEN, *extra])


@pytest.mark.parametrize("query_vector", ["last", "gated"])
def test_step_on_cached_vectors_equals_step_encoding_passages(query_vector):
    """The cached vectors are the ones the step's encoder computes, and the jitted step on them
    gives the same loss, scores and reranker/projector gradients; ``gated`` also reads the query
    vector. Gradients are compared per tensor in L2 (relative error <= 1e-4): the gate's and the
    projector bias's gradients are sums whose terms cancel, and two compilations of the same
    ``Task.score`` on bit-identical vectors already differ there by ~1e-5 of the tensor's norm
    (1e-6 absolute, measured), while a wrong vector, order or query makes every tensor differ
    by O(1)."""
    cfg = frozen_cfg("mesh=(2,2,2)", f"model.resrank.query_vector={query_vector}")
    model, enc_tok, rr_tok = build_model(cfg.model, make_mesh(cfg.mesh), cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    builder = BatchBuilder(load_lists(cfg)[0], task)
    cached = with_vectors(builder, model.encoder, progress=False)
    by_ids = builder.batch(np.arange(8), "teacher")
    by_vectors = cached.batch(np.arange(8), "teacher")
    assert {"passage_ids", "query_ids"} <= set(by_ids) and "passage_ids" not in by_vectors
    for key in set(by_ids) & set(by_vectors):
        np.testing.assert_array_equal(by_ids[key], by_vectors[key], err_msg=key)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, batch):
        def loss(params):
            model = nnx.merge(graphdef, params, rest)
            loss, _ = compute_loss(task, model, batch, {"rank": 2.0}, cfg.loss)
            return loss, task.forward(model, batch, with_query=True)

        return jax.value_and_grad(loss, has_aux=True)(params)

    (loss_ids, (s_ids, e_ids, q_ids)), grads_ids = step(params, by_ids)
    (loss_vec, (s_vec, e_vec, q_vec)), grads_vec = step(params, by_vectors)
    for got, want in ((e_vec, e_ids), (q_vec, q_ids), (s_vec, s_ids)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(loss_vec), float(loss_ids), rtol=1e-5)
    flat_ids, flat_vec = (dict(nnx.to_flat_state(g)) for g in (grads_ids, grads_vec))
    compared = 0
    for path, g in flat_ids.items():
        want = np.asarray(g[...], np.float64)
        if path[0] == "encoder" or not np.any(want):
            continue
        error = np.linalg.norm(np.asarray(flat_vec[path][...], np.float64) - want)
        assert error <= 1e-4 * np.linalg.norm(want), (path, error / np.linalg.norm(want))
        compared += 1
    assert compared > 10  # real, non-zero gradients were compared


@pytest.mark.slow
def test_run_on_cached_vectors_logs_the_same_steps_and_keeps_the_encoder(tmp_path):
    """Both stages' steps log the same loss, gradient norm and update norm (the second step
    runs on params the first updated); the encoder ends where it started.
    Params are not compared elementwise: Adam's first update is ``lr * sign(g)`` where
    ``|g|`` is at rounding level, so such elements may legitimately differ by ``2 lr``."""
    logged = {}
    for cached in (False, True):
        run_training(frozen_cfg(f"data.cached_vectors={cached}"), tmp_path / str(cached))
        lines = (tmp_path / str(cached) / "metrics.jsonl").read_text().splitlines()
        logged[cached] = [json.loads(line) for line in lines]
    assert [r["step"] for r in logged[True]] == [1, 2]
    for ids, vec in zip(logged[False], logged[True], strict=True):
        for key in ("loss", "grad_norm", "update_norm"):
            np.testing.assert_allclose(vec[key], ids[key], rtol=1e-5, err_msg=key)
    trained, _, _ = load_trained(str(tmp_path / "True"))
    start = build_model(frozen_cfg().model, make_mesh((-1, 1, 1)), 0)[0]
    after, before = (
        dict(nnx.to_flat_state(nnx.state(m.encoder, nnx.Param))) for m in (trained, start)
    )
    for path, value in before.items():
        np.testing.assert_array_equal(np.asarray(after[path][...]), np.asarray(value[...]))


def test_cached_vectors_refuse_what_would_train_the_encoder(tmp_path):
    with pytest.raises(ConfigError, match="'ret' loss"):
        resolve_config("tiny", ["data.cached_vectors=true"]).validate()
    with pytest.raises(ConfigError, match="array_record_dir"):
        frozen_cfg("data.cached_vectors=true", "data.array_record_dir=/tmp/rows").validate()
    with pytest.raises(ConfigError, match="no reranker"):
        resolve_config("minilm-e2rank", [*FROZEN[1:], "data.cached_vectors=true"]).validate()
    cfg = frozen_cfg("stages.1.trainable=('.*',)", "data.cached_vectors=true")
    with pytest.raises(ConfigError, match="stage 'stage2' trains encoder/"):
        run_training(cfg, tmp_path / "run", progress=False)
