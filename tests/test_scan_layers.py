"""Decoder layers under ``jax.lax.scan`` (``scan_layers``) and the ``remat`` policy knob:
the scanned decoder computes what the unrolled one computes, HF/GGUF import and export see the
same per-layer tensors, shardings keep the usual specs behind a replicated layer axis, and
training steps, checkpoints and generation are unchanged."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file

from resrank_jax import init_backbone, load_backbone, make_mesh
from resrank_jax.config import ModelConfig, config_from_json, config_to_json, resolve_config
from resrank_jax.errors import ConfigError
from resrank_jax.hf.export import export_hf
from resrank_jax.models.build import backbone_from_arrays, flat_params, param_count
from resrank_jax.models.config import PRESETS, REMAT_CHOICES, DecoderConfig
from resrank_jax.models.generation import greedy_generate
from resrank_jax.models.layers import remat_policy
from resrank_jax.train.checkpoint import Checkpointer
from resrank_jax.train.resume import check_same_config
from tests.hf_reference import hf_forward, make_tiny_hf, padded_batch
from tests.tiny_models import TINY_DECODER

# Three layers (not two): a scan that reversed or repeated layers would not go unnoticed.
# Untied head, so the logits go through a layer-free param too.
CFG = TINY_DECODER.replace(num_layers=3, tie_word_embeddings=False)
TOL = 1e-5  # fp32, same weights, same ops; only XLA's fusion and ordering may differ


def stacked_value(per_layer: Mapping[tuple, np.ndarray], path: tuple) -> np.ndarray:
    """The value at state ``path`` of a scanned model, from the per-layer values of an
    unrolled one: ``(..., "layers", *rest)`` stacks ``(..., "layers", i, *rest)`` over i."""
    if path in per_layer:
        return per_layer[path]
    k = path.index("layers") + 1
    count = sum(1 for p in per_layer if p[:k] == path[:k] and p[k + 1 :] == path[k:])
    return np.stack([per_layer[(*path[:k], i, *path[k:])] for i in range(count)])


def numpy_flat(state: nnx.State) -> dict[tuple, np.ndarray]:
    return {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(state)}


def scanned_copy(cfg: DecoderConfig, unrolled, mesh: Mesh | None = None) -> nnx.Module:
    """A scanned decoder of ``cfg`` holding the weights of the ``unrolled`` one."""
    per_layer = {p: np.asarray(v) for p, v in flat_params(unrolled).items()}
    return backbone_from_arrays(
        cfg.replace(scan_layers=True), lambda path: stacked_value(per_layer, path), mesh=mesh
    )


def assert_stacked_close(scanned: nnx.State, unrolled: nnx.State, tol: float) -> None:
    """Every leaf of ``scanned`` equals the stacked per-layer leaves of ``unrolled`` up to
    ``tol`` times the leaf's largest magnitude (fp32 rounding scales with the values)."""
    per_layer, flat = numpy_flat(unrolled), numpy_flat(scanned)
    assert len(flat) < len(per_layer)  # really stacked
    for path, value in flat.items():
        expected = stacked_value(per_layer, path)
        assert value.shape == expected.shape, path
        bound = tol * max(float(np.abs(expected).max()), 1.0)
        worst = float(np.abs(value - expected).max())
        assert worst <= bound, f"{path}: max difference {worst:.3g} > {bound:.3g}"


@pytest.fixture(scope="module")
def pair():
    unrolled = init_backbone(CFG, seed=3)
    return unrolled, scanned_copy(CFG, unrolled)


def test_scanned_hidden_states_and_logits_equal_unrolled_with_left_padding(pair):
    unrolled, scanned = pair
    ids, mask = padded_batch(CFG.vocab_size, [7, 3, 1], "left", seed=1)
    run = jax.jit(lambda m, i, k: m(i, attention_mask_bl=k, return_logits=True))
    h_ref, logits_ref = run(unrolled, jnp.asarray(ids), jnp.asarray(mask))
    h, logits = run(scanned, jnp.asarray(ids), jnp.asarray(mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h)[real], np.asarray(h_ref)[real], atol=TOL, rtol=0)
    np.testing.assert_allclose(
        np.asarray(logits)[real], np.asarray(logits_ref)[real], atol=TOL, rtol=0
    )
    assert float(jnp.abs(h_ref[real]).max()) > 0.1  # not trivially small


def _loss_grads(model, ids: np.ndarray, mask: np.ndarray) -> tuple[float, nnx.State]:
    """A scalar loss over the hidden states and logits of real tokens, and its gradient
    w.r.t. every param."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    probe_h = jax.random.normal(jax.random.key(0), (*ids.shape, CFG.hidden_size))
    probe_v = jax.random.normal(jax.random.key(1), (*ids.shape, CFG.vocab_size))
    real = jnp.asarray(mask)[..., None]

    def loss(p):
        h, logits = nnx.merge(graphdef, p, rest)(
            jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True
        )
        return jnp.sum(h * probe_h * real) + jnp.sum(logits * probe_v * real)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    return float(value), grads


def test_scanned_gradients_equal_per_layer_gradients(pair):
    unrolled, scanned = pair
    ids, mask = padded_batch(CFG.vocab_size, [6, 2], "left", seed=2)
    loss_ref, grads_ref = _loss_grads(unrolled, ids, mask)
    loss, grads = _loss_grads(scanned, ids, mask)
    assert abs(loss - loss_ref) <= TOL * max(1.0, abs(loss_ref))
    assert_stacked_close(grads, grads_ref, TOL)
    assert all(np.abs(g).max() > 0 for g in numpy_flat(grads).values())


@pytest.mark.torch
@pytest.mark.parametrize(
    ("family", "tie"), [("qwen3", True), ("llama", False), ("mistral", False), ("gemma3", True)]
)
def test_hf_import_with_scan_layers_matches_transformers(family, tie, tmp_path):
    # Gemma 3's layers are sliding, full, sliding: the scan picks each layer's mask and RoPE.
    hf_model = make_tiny_hf(family, tmp_path, tie=tie, seed=4)
    model, _ = load_backbone(tmp_path, scan_layers=True)
    assert model.layers.mlp.up_proj.kernel[...].shape[0] == model.cfg.num_layers  # stacked
    ids, mask = padded_batch(97, [9, 5, 1], "left")
    ref_h, ref_logits = hf_forward(hf_model, ids, mask)
    h, logits = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h)[real], ref_h[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], atol=1e-4, rtol=0)


def test_export_of_scanned_model_equals_unrolled_export(pair, tmp_path):
    unrolled, scanned = pair
    ref = load_file(str(export_hf(unrolled, tmp_path / "unrolled") / "model.safetensors"))
    got = load_file(str(export_hf(scanned, tmp_path / "scanned") / "model.safetensors"))
    assert sorted(got) == sorted(ref)
    assert "model.layers.2.mlp.down_proj.weight" in got
    for name, value in ref.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    config = json.loads((tmp_path / "scanned" / "config.json").read_text())
    assert config == json.loads((tmp_path / "unrolled" / "config.json").read_text())


def test_gguf_import_stacks_the_files_layer_tensors():
    """The packaged SmolLM2 GGUF (Llama: q/k rows un-permuted) through the same key map."""
    from resrank_jax.hf.gguf_file import GGUFFile
    from resrank_jax.hf.load import _state_arrays
    from resrank_jax.hf.packaged import packaged_weights

    gguf = GGUFFile(packaged_weights("smollm2-135m-instruct"))
    cfg = gguf.config
    per_layer = _state_arrays(cfg, gguf.tensors, "gguf")
    stacked = _state_arrays(cfg.replace(scan_layers=True), gguf.tensors, "gguf")
    for rest in (("self_attn", "q_proj", "kernel"), ("input_layernorm", "weight")):
        got = stacked(("layers", *rest))
        assert got.shape[0] == cfg.num_layers == 30
        for i in (0, 17, 29):
            np.testing.assert_array_equal(got[i], per_layer(("layers", i, *rest)))


def remat_policies(model, ids: np.ndarray) -> list:
    """The policies of the rematerialised (``jax.checkpoint``) calls in ``model``'s forward
    jaxpr, scan bodies included."""
    found = []

    def walk(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in ("remat", "remat2", "checkpoint"):
                found.append(eqn.params["policy"])
            for value in eqn.params.values():
                inner = getattr(value, "jaxpr", value)
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jax.make_jaxpr(lambda m: m(jnp.asarray(ids)))(model).jaxpr)
    return found


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_every_remat_policy_gives_the_loss_and_grads_of_none(pair, scan):
    unrolled = pair[0]
    ids, mask = padded_batch(CFG.vocab_size, [5, 3], "left", seed=5)

    per_layer = {p: np.asarray(v) for p, v in flat_params(unrolled).items()}

    def model_with(remat: str):
        cfg = CFG.replace(remat=remat)
        if scan:
            return scanned_copy(cfg, unrolled)
        return backbone_from_arrays(cfg, per_layer.__getitem__)

    plain = model_with("none")
    assert remat_policies(plain, ids) == []
    loss_ref, grads_ref = _loss_grads(plain, ids, mask)
    ref = numpy_flat(grads_ref)
    for remat in REMAT_CHOICES[1:]:
        model = model_with(remat)
        calls = 1 if scan else CFG.num_layers  # one scan body, or one call per layer
        assert remat_policies(model, ids) == [remat_policy(remat)] * calls, remat
        loss, grads = _loss_grads(model, ids, mask)
        assert abs(loss - loss_ref) <= 1e-6 * max(1.0, abs(loss_ref)), remat
        for path, g in numpy_flat(grads).items():
            bound = 1e-6 * max(float(np.abs(ref[path]).max()), 1.0)
            assert float(np.abs(g - ref[path]).max()) <= bound, (remat, path)


def test_old_boolean_remat_configs_load_as_full_and_none():
    for old, new in ((True, "full"), (False, "none")):
        saved = json.loads(config_to_json(resolve_config("tiny")))
        saved["model"]["remat"] = old  # a run saved before remat took a policy name
        del saved["model"]["scan_layers"]  # ... and before scan_layers existed
        cfg = config_from_json(json.dumps(saved))
        assert cfg.model.remat == new and cfg.model.scan_layers is False
        current = resolve_config("tiny", [f"model.remat={new}"])
        check_same_config(json.dumps(saved), config_to_json(current), "run")  # resumes
    assert resolve_config("tiny", ["model.remat=true"]).model.remat == "full"
    assert PRESETS["qwen3-0.6b"].replace(remat=True).remat == "full"


@pytest.mark.parametrize(
    "make",
    [
        lambda: resolve_config("tiny", ["model.remat=everything"]),
        lambda: ModelConfig(remat="everything"),
        lambda: CFG.replace(remat="everything"),
    ],
    ids=["override", "model_config", "decoder_config"],
)
def test_unknown_remat_policy_is_a_one_line_error(make):
    with pytest.raises(ConfigError) as err:
        make()
    message = str(err.value)
    assert "\n" not in message and "'everything'" in message
    assert all(name in message for name in REMAT_CHOICES)


def full_spec(array: jax.Array) -> tuple:
    """The array's ``PartitionSpec`` with one entry per dimension (``P()`` == ``P(None)``)."""
    spec = tuple(array.sharding.spec)
    return spec + (None,) * (array.ndim - len(spec))


def test_scanned_params_shard_like_unrolled_with_a_replicated_layer_axis(pair):
    unrolled = pair[0]
    mesh = make_mesh((2, 2, 2))
    assert mesh.devices.size == 8
    specs_ref = {p: full_spec(v) for p, v in flat_params(init_backbone(CFG, mesh=mesh)).items()}
    sharded = scanned_copy(CFG, unrolled, mesh)
    scanned = flat_params(sharded)
    assert scanned[("layers", "mlp", "up_proj", "kernel")].sharding.spec == P(
        None, "fsdp", "tensor"
    )
    for path, value in scanned.items():
        if path[0] != "layers":
            assert full_spec(value) == specs_ref[path], path
            continue
        for i in range(CFG.num_layers):
            assert full_spec(value) == (None, *specs_ref[("layers", i, *path[1:])]), path
    # the scan runs on the sharded params (a batch split over data x fsdp)
    ids, mask = padded_batch(CFG.vocab_size, [7, 3, 1, 5, 2, 6, 4, 7], "left", seed=6)
    batch = NamedSharding(mesh, P(("data", "fsdp")))
    h = jax.jit(lambda m, i, k: m(i, attention_mask_bl=k))(
        sharded, jax.device_put(ids, batch), jax.device_put(mask, batch)
    )
    h_ref = unrolled(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h)[real], np.asarray(h_ref)[real], atol=TOL, rtol=0)


def test_param_count_is_the_same_scanned():
    cfg = PRESETS["qwen3-0.6b"]
    assert param_count(cfg.replace(scan_layers=True)) == param_count(cfg)


def test_scanned_greedy_generation_equals_unrolled():
    unrolled = init_backbone(TINY_DECODER, seed=7)
    params = nnx.state(unrolled, nnx.Param)
    nnx.update(unrolled, jax.tree.map(lambda x: 8 * x, params))  # peaked logits: varied tokens
    scanned = scanned_copy(TINY_DECODER, unrolled)
    ids, mask = padded_batch(TINY_DECODER.vocab_size, [6, 3, 9], "left", seed=3)
    generate = dict(max_new_tokens=8, stop_ids=(), pad_id=0)
    ref, _ = greedy_generate(unrolled, jnp.asarray(ids), jnp.asarray(mask), **generate)
    tokens, _ = greedy_generate(scanned, jnp.asarray(ids), jnp.asarray(mask), **generate)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(ref))
    assert len(np.unique(np.asarray(ref))) > 3  # the tokens depend on the weights


@functools.cache
def _cached_load_backbone(path):
    return load_backbone(path)


@pytest.fixture(scope="module")
def two_steps_each(tmp_path_factory):
    """Two training steps of the tiny preset (ResRank: BERT encoder, decoder reranker) from
    the same weights, unrolled and with the reranker's layers scanned, on one device."""
    from resrank_jax.train import models
    from resrank_jax.train.batches import BatchBuilder
    from resrank_jax.train.data import load_lists
    from resrank_jax.train.state import build_stage_step

    mesh = make_mesh((1, 1, 1), jax.devices()[:1])
    runs = {}
    for scan in (False, True):
        cfg = resolve_config("tiny", ["data.max_queries=4", f"model.scan_layers={scan}"])
        with pytest.MonkeyPatch.context() as patch:  # the tiny models' tokenizers, read once
            patch.setattr(models, "load_backbone", _cached_load_backbone)
            model, enc_tok, rr_tok = models.build_model(cfg.model, mesh, cfg.seed)
        task = models.build_task(cfg, enc_tok, rr_tok)
        lists, _ = load_lists(cfg)
        batch_np = BatchBuilder(lists, task).batch(np.arange(4), "qrels")
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        if scan:  # the unrolled run's initial weights, stacked
            per_layer = numpy_flat(runs[False]["initial"])
            for path, var in nnx.to_flat_state(params):
                var.set_value(jnp.asarray(stacked_value(per_layer, path)))
        stage = dataclasses.replace(cfg.stages[0], lr=1e-2)
        built = build_stage_step(graphdef, rest, params, stage, 10, cfg, task, mesh, batch_np)
        state = built.init_state(jax.tree.map(jnp.copy, params))
        batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
        losses = []
        for _ in range(2):
            state, metrics = built.step_fn(state, batch)
            losses.append(float(metrics["loss"]))
        runs[scan] = dict(initial=params, losses=losses, state=state, built=built)
    runs["dir"] = tmp_path_factory.mktemp("scan_ckpt")
    return runs


def test_tiny_training_steps_scanned_equal_unrolled(two_steps_each):
    unrolled, scanned = two_steps_each[False], two_steps_each[True]
    np.testing.assert_allclose(scanned["losses"], unrolled["losses"], atol=1e-5, rtol=0)
    assert unrolled["losses"][1] != unrolled["losses"][0]  # the first step changed the params
    reranker = scanned["state"]["params"]["reranker"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert reranker[...].shape[0] == 2


def test_scanned_train_state_round_trips_through_orbax(two_steps_each):
    run = two_steps_each[True]
    ckpt = Checkpointer(two_steps_each["dir"], async_save=False)
    ckpt.save(2, run["state"], {"note": "scanned"})
    restored = ckpt.restore(2, run["built"].abstract_state, with_opt_state=True)
    ckpt.close()
    for saved, back in zip(
        jax.tree.leaves((run["state"]["params"], run["state"]["opt_state"])),
        jax.tree.leaves((restored["params"], restored["opt_state"])),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(back), np.asarray(saved))
