"""The train step on a 2x2x2 mesh of fake CPU devices: shardings follow the rules, one
compile, loss falls when overfitting a real batch; bad configs fail before any step."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from resrank_jax import make_mesh
from resrank_jax.config import OptimConfig, StageConfig, _load_presets, resolve_config
from resrank_jax.models.build import state_shardings
from resrank_jax.train.batches import BatchBuilder, ListIterator
from resrank_jax.train.data import load_lists
from resrank_jax.train.loop import run_training
from resrank_jax.train.models import build_model, build_task
from resrank_jax.train.objective import compute_loss
from resrank_jax.train.state import (
    batch_shardings,
    build_stage_step,
    make_optimizer,
    make_train_step,
    trainable_labels,
)


@pytest.fixture(scope="module")
def setup():
    cfg = resolve_config("tiny", ["data.max_queries=8", "mesh=(2,2,2)", "stages.0.lr=1e-2"])
    mesh = make_mesh(cfg.mesh)
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    lists, _ = load_lists(cfg)
    return cfg, mesh, model, task, BatchBuilder(lists, task)


def test_state_shardings_follow_rules_and_loss_falls_with_one_compile(setup):
    cfg, mesh, model, task, builder = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)  # the step donates its state
    stage = cfg.stages[0]
    batch_np = builder.batch(np.arange(8), "qrels")
    built = build_stage_step(
        graphdef, rest, params, stage, 12, cfg, task, mesh, batch_np, grad_accum=1
    )
    state = built.init_state(params)
    kernel = state["params"]["reranker"]["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert kernel.sharding.spec == P("fsdp", "tensor")
    mu = [leaf for leaf in jax.tree.leaves(state["opt_state"]) if leaf.shape == kernel.shape]
    assert mu and all(m.sharding.spec == P("fsdp", "tensor") for m in mu), (
        "moments shard like params"
    )
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    assert batch["passage_ids"].sharding.spec == P(("data", "fsdp"))
    step_fn = built.step_fn
    losses = []
    for _ in range(12):
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    assert built.compiles == 1
    assert losses[-1] < 0.7 * losses[0], losses
    assert np.isfinite(losses).all()
    new_kernel = state["params"]["reranker"]["layers"][0]["mlp"]["up_proj"]["kernel"][...]
    assert new_kernel.sharding.spec == P("fsdp", "tensor")


def test_a_stage_compiles_before_its_state_exists_and_once_per_batch_shape(setup):
    """``StageStep.compile`` lowers against the abstract state (no params or moments needed),
    a step on that shape reuses the executable, and a longer prompt bucket gets its own."""
    cfg, mesh, model, task, builder = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)
    batch_np = builder.batch(np.arange(8), "qrels")
    built = build_stage_step(graphdef, rest, params, cfg.stages[0], 4, cfg, task, mesh, batch_np)
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch_np.items()}
    built.compile(shapes)
    assert built.compiles == 1
    state = built.init_state(params)
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    state, metrics = built.step_fn(state, batch)
    assert built.compiles == 1 and np.isfinite(float(metrics["loss"]))
    longer = builder.batch(np.arange(8), "qrels")
    pad = batch_np["prompt_ids"].shape[
        1
    ]  # left padding: the same prompts in a bucket twice as long
    longer["prompt_ids"] = np.pad(longer["prompt_ids"], ((0, 0), (pad, 0)))
    longer["prompt_mask"] = np.pad(longer["prompt_mask"], ((0, 0), (pad, 0)))
    longer["slot_pos"] = longer["slot_pos"] + pad
    state, _ = built.step_fn(
        state, {k: jax.device_put(v, built.batch_shardings[k]) for k, v in longer.items()}
    )
    assert built.compiles == 2


def test_partly_frozen_stage_with_an_lr_group_shards_and_steps(setup):
    cfg, mesh, model, task, builder = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params = jax.tree.map(jnp.copy, params)
    stage = StageConfig(
        "s",
        1.0,
        trainable=("reranker/.*", "projector/.*"),
        lr=1e-3,
        lr_scale=(("projector/.*", 10.0),),
    )
    batch_np = builder.batch(np.arange(8), "qrels")
    built = build_stage_step(
        graphdef, rest, params, stage, 4, cfg, task, mesh, batch_np, grad_accum=1
    )
    state = built.init_state(params)
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    before = jax.tree.map(np.asarray, state["params"])
    state, _ = built.step_fn(state, batch)
    after = state["params"]
    enc_before = np.asarray(before["encoder"]["backbone"]["word_embeddings"]["embedding"][...])
    enc_after = np.asarray(after["encoder"]["backbone"]["word_embeddings"]["embedding"][...])
    np.testing.assert_array_equal(enc_before, enc_after)  # frozen
    up = "reranker", "layers", 0, "mlp", "up_proj", "kernel"

    def moved(t, path):
        return np.abs(np.asarray(_at(after, path)) - np.asarray(_at(t, path))).max()

    assert moved(before, up) > 0
    assert moved(before, ("projector", "kernel")) > 5 * moved(before, up)


def _at(tree, path):
    for key in path:
        tree = tree[key]
    return tree[...]


def _recording_tx() -> optax.GradientTransformation:
    """An "optimizer" that changes nothing and keeps the gradients it was given as its state,
    so the step's (accumulated) gradients can be read back exactly."""
    return optax.GradientTransformation(
        lambda params: jax.tree.map(jnp.zeros_like, params),
        lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
    )


@pytest.mark.parametrize(
    "weights", [(("rank", 2.0), ("ret", 1.0)), (("rank", 2.0),)], ids=["rank+ret", "rank"]
)
def test_grad_accumulation_averages_microbatch_gradients(setup, weights):
    """``make_train_step`` with ``grad_accum=2`` on 8 lists hands the optimizer the mean of
    the gradients of lists 0-3 and 4-7, each taken alone with ``jax.grad`` (the reference).
    Both terms are batch means (RankNet over the batch's pairs, InfoNCE over its in-batch
    negatives), so the full-batch gradient is not the reference: the microbatch mean is."""
    cfg, mesh, model, task, builder = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    indices = np.arange(8)
    full = builder.batch(indices, "qrels")
    halves = [builder.batch(i, "qrels", batch_indices=indices) for i in (indices[:4], indices[4:])]

    def loss(p, batch):
        return compute_loss(task, nnx.merge(graphdef, p, rest), batch, dict(weights), cfg.loss)

    grad_fn = jax.jit(jax.grad(loss, has_aux=True))
    (g0, m0), (g1, m1) = (grad_fn(params, h) for h in halves)
    expected = nnx.to_flat_state(jax.tree.map(lambda a, b: (a + b) / 2, g0, g1))

    tx = _recording_tx()
    param_sh = state_shardings(params, mesh)
    shardings = {"params": param_sh, "opt_state": param_sh, "step": NamedSharding(mesh, P())}
    batch_sh = batch_shardings(full, mesh)
    labels = trainable_labels(params, cfg.stages[0])
    step_fn = make_train_step(
        graphdef,
        rest,
        labels,
        tx,
        lambda _: 0.0,
        dict(weights),
        cfg.loss,
        task,
        2,
        shardings,
        batch_sh,
    )
    state = jax.device_put(
        {"params": jax.tree.map(jnp.copy, params), "opt_state": tx.init(params), "step": 0},
        shardings,
    )
    batch = {k: jax.device_put(v, batch_sh[k]) for k, v in full.items()}
    state, metrics = step_fn(state, batch)
    accumulated = nnx.to_flat_state(state["opt_state"])

    assert [p for p, _ in accumulated] == [p for p, _ in expected]
    # per-leaf tolerance, floored at 1e-6 of the largest gradient: some gradients are zero up
    # to rounding (attention is invariant to the key bias)
    floor = 1e-6 * max(float(np.abs(np.asarray(v[...])).max()) for _, v in expected)
    moved = set()
    for (path, got), (_, want) in zip(accumulated, expected, strict=True):
        got, want = np.asarray(got[...]), np.asarray(want[...])
        scale = float(np.abs(want).max())
        if scale > 1e3 * floor:
            moved.add(path[0])
        np.testing.assert_allclose(
            got, want, rtol=1e-4, atol=max(1e-5 * scale, floor), err_msg="/".join(map(str, path))
        )
    assert moved == {"encoder", "reranker", "projector"}, moved
    for key in ("loss", *(f"loss/{name}" for name, _ in weights)):
        expected_loss = (float(m0[key]) + float(m1[key])) / 2
        assert float(metrics[key]) == pytest.approx(expected_loss, rel=1e-5), key


def test_frozen_params_get_no_gradient_and_trainable_ones_are_unchanged(setup):
    """A stage that freezes the encoder: the step hands the optimizer exact zeros for every
    encoder param (their backward is cut, not zeroed afterwards) and, for every other param,
    the gradient ``jax.grad`` gives with nothing frozen; ``grad_norm`` is their norm."""
    cfg, mesh, model, task, builder = setup
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch_np = builder.batch(np.arange(8), "qrels")
    weights = {"rank": 2.0, "ret": 1.0}

    def loss(p, batch):
        return compute_loss(task, nnx.merge(graphdef, p, rest), batch, weights, cfg.loss)

    expected = dict(nnx.to_flat_state(jax.jit(jax.grad(loss, has_aux=True))(params, batch_np)[0]))
    stage = StageConfig("s", 1.0, trainable=("(?!encoder/).*",))
    tx = _recording_tx()
    param_sh = state_shardings(params, mesh)
    shardings = {"params": param_sh, "opt_state": param_sh, "step": NamedSharding(mesh, P())}
    batch_sh = batch_shardings(batch_np, mesh)
    step_fn = make_train_step(
        graphdef,
        rest,
        trainable_labels(params, stage),
        tx,
        lambda _: 0.0,
        weights,
        cfg.loss,
        task,
        1,
        shardings,
        batch_sh,
    )
    state = jax.device_put(
        {"params": jax.tree.map(jnp.copy, params), "opt_state": tx.init(params), "step": 0},
        shardings,
    )
    batch = {k: jax.device_put(v, batch_sh[k]) for k, v in batch_np.items()}
    state, metrics = step_fn(state, batch)
    norm_sq, cut = 0.0, 0
    for path, got in nnx.to_flat_state(state["opt_state"]):
        got, want = np.asarray(got[...]), np.asarray(expected[path][...])
        if path[0] == "encoder":
            assert not got.any(), path
            cut += bool(want.any())  # a gradient the frozen stage did not compute
            continue
        # the tolerance of the accumulation test above: sharded step vs unsharded reference
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * scale, err_msg=str(path))
        norm_sq += float(np.sum(want.astype(np.float64) ** 2))
    assert cut > 10
    assert float(metrics["grad_norm"]) == pytest.approx(np.sqrt(norm_sq), rel=1e-4)


def test_iterator_is_deterministic_and_resumable():
    a = ListIterator(10, 4, seed=3)
    seq = [a.next_indices().tolist() for _ in range(5)]
    b = ListIterator(10, 4, seed=3)
    b.next_indices()
    b.next_indices()
    from resrank_jax.train.batches import IteratorState

    c = ListIterator(10, 4, seed=3, state=IteratorState(**vars(b.state)))
    assert [c.next_indices().tolist() for _ in range(3)] == seq[2:]
    assert all(len(set(s)) == 4 for s in seq)


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["stepz=3"], KeyError, "unknown config key 'stepz'"),
        (["model.resrank.residual=gate"], ValueError, "choose from"),
        (["steps=0"], ValueError, "steps=0"),
        (["stages.0.weights=(('rank', 1.0), ('listmle', 1.0))"], ValueError, "unknown loss terms"),
        (["optim.clip_norm=big"], ValueError, "not a float"),
    ],
)
def test_bad_configs_fail_with_the_reason(overrides, error, message):
    with pytest.raises(error, match=message):
        resolve_config("tiny", overrides)


def test_bad_runtime_configs_fail_before_any_step(tmp_path):
    with pytest.raises(ValueError, match=r"needs 3 devices|does not divide"):
        run_training(resolve_config("tiny", ["mesh=(3,1,1)"]), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="cannot be split"):
        run_training(
            resolve_config("tiny", ["data.queries_per_step=6"]), tmp_path / "b", progress=False
        )
    with pytest.raises(ValueError, match=r"'decoder/\.\*' matches no parameter"):
        run_training(
            resolve_config("tiny", ["stages.0.trainable=('decoder/.*',)"]),
            tmp_path / "c",
            progress=False,
        )
    with pytest.raises(ValueError, match=r"passage_max_length=4096 exceeds the encoder's"):
        run_training(
            resolve_config("tiny", ["data.passage_max_length=4096"]),
            tmp_path / "d",
            progress=False,
        )
    for d in ("a", "b", "c", "d"):
        assert (
            not (tmp_path / d / "metrics.jsonl").exists()
            or not (tmp_path / d / "metrics.jsonl").read_text()
        )


class _Three(nnx.Module):
    def __init__(self):
        self.body = nnx.Param(jnp.ones((4,)))
        self.gate = nnx.Param(jnp.zeros(()))
        self.frozen = nnx.Param(jnp.ones((2,)))


def test_lr_scale_groups_train_at_a_multiple_and_frozen_params_stay():
    params = nnx.state(_Three(), nnx.Param)
    stage = StageConfig("s", 1.0, trainable=("body", "gate"), lr=1e-3, lr_scale=(("gate", 50.0),))
    cfg = OptimConfig(weight_decay=0.0, warmup_ratio=0.0)
    tx, schedule = make_optimizer(params, stage, 10, cfg)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), params)
    updates, _ = tx.update(grads, tx.init(params), params)
    lr = float(schedule(0))
    # Adam's first step moves every trainable element by lr (the sign of its gradient)
    np.testing.assert_allclose(np.asarray(updates["body"][...]), -lr, rtol=1e-4)
    np.testing.assert_allclose(float(updates["gate"][...]), -50 * lr, rtol=1e-4)
    assert np.all(np.asarray(updates["frozen"][...]) == 0)
    with pytest.raises(ValueError, match="'nothing' matches no parameter"):
        make_optimizer(params, StageConfig("s", 1.0, lr_scale=(("nothing", 2.0),)), 10, cfg)


PRESETS = _load_presets()


@pytest.mark.parametrize("name", sorted(n for n in PRESETS if not n.startswith("qwen3")))
def test_every_preset_stage_names_existing_params(name):
    """Each stage's trainable / lr_scale regexes match the preset's model (tiny backbones of
    the same structure stand in for the real ones)."""
    cfg = PRESETS[name]
    encoder = "tiny-decoder" if cfg.model.encoder.startswith("smollm2") else "tiny-bert"
    model_cfg = dataclasses.replace(cfg.model, encoder=encoder, reranker="tiny-decoder")
    if model_cfg.resrank.phi in ("identity", "rescale", "scale") and encoder == "tiny-bert":
        model_cfg = dataclasses.replace(
            model_cfg, resrank=dataclasses.replace(model_cfg.resrank, phi="linear")
        )
    model, _, _ = build_model(model_cfg, make_mesh((1, 1, 1), jax.devices()[:1]), 0)
    params = nnx.state(model, nnx.Param)
    for stage in cfg.stages:  # raises if a pattern matches nothing
        labels = set(jax.tree.leaves(trainable_labels(params, stage)))
        assert ("freeze" in labels) == (stage.trainable != (".*",)), (stage.name, labels)
