"""One training step's loss and EVERY gradient against an independent PyTorch reference
(``tests/torch_step_reference.py``: transformers' ``BertModel`` / ``LlamaModel``, losses
written out), on the real all-MiniLM-L6-v2 and SmolLM2-135M-Instruct weights.

Cases: ResRank as SPEC'd (``smollm2-135m-spec``: linear phi, ``norm_sum`` residual, query =
the reranker's last token), the gated variant (``smollm2-135m``: gated residual and query
vector, gate set to 0.5 so that the reranker gets a gradient at all: at its init of 0 every
reranker gradient is exactly zero), and E2Rank with SmolLM2 as the embedding model
(``smollm2-135m-e2rank``, RankNet on the pseudo-query + InfoNCE). The batch (real SciFact
lists) has a padded candidate, a document that reappears in another list (a copy of a
judged positive: the false-negative mask must drop it for its own query only) and a second
judged positive in one list.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

pytestmark = [pytest.mark.slow, pytest.mark.torch]

torch = pytest.importorskip("torch")

# Fixed float32 tolerances, set once from measurements (same weights and batch, 2-core CPU):
# - the PyTorch reference in float32 against itself in float64 (the float32 noise floor) differs
#   in the loss by up to 1.3e-5 (E2Rank, loss 10.5; 3e-7 for ResRank, loss 1.7) and in the
#   gradients by up to 8.8e-5 x max|g| of a tensor (worst: a SmolLM2 layer norm, 30 layers);
#   JAX float32 against the float32 reference: loss 1.3e-5 / 7e-7, gradients up to 1.1e-4 x
#   max|g| (worst in the SPEC case, a SmolLM2 post-attention norm).
# - Gradients: per tensor, max|jax - torch| <= GRAD_ATOL + GRAD_RTOL * max|torch|: about 9x
#   the worst measured difference. It is relative to the tensor's scale, not element by
#   element: gradients summed over many tokens (layer norms, BERT's token-type row) have
#   elements near zero whose float32 cancellation noise exceeds an element-wise
#   1e-5 + 1e-3|g| bound up to 2.9x even between torch float32 and float64 (E2Rank). A wrong
#   or missing gradient path is off by O(max|g|) (SmolLM2's pad row, see the reference, was
#   off by 25% of max|g| before it was handled).
# - Loss: |jax - torch| <= LOSS_ATOL + LOSS_RTOL * |torch| (8x the worst measured).
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-3
LOSS_ATOL, LOSS_RTOL = 1e-5, 1e-5

OVERRIDES = [
    "data.max_queries=4",
    "data.list_size=4",
    "data.passage_max_length=32",
    "data.query_max_length=32",
    "data.prompt_max_length=256",
    "mesh=(1,1,1)",
]
# case: (preset, stage index (its loss weights and labels), gate value or None)
CASES = {
    "resrank-spec": ("smollm2-135m-spec", 0, None),  # qrels labels, rank 2 + ret 1
    "resrank-gated": ("smollm2-135m", 1, 0.5),  # teacher labels, rank 2 + ret 1
    "e2rank": ("smollm2-135m-e2rank", 1, None),  # teacher labels, rank 2 + ret 1
}


@pytest.fixture(scope="module")
def torch_backbones():
    """The reference backbones, loaded once (gradients are cleared before each case)."""
    from tests import torch_step_reference as ref

    return {"minilm": ref.load_minilm(), "smollm2": ref.load_smollm2()}


@pytest.fixture(scope="module")
def backbones_loaded_once():
    """``build_model`` reads each real backbone from disk once for all cases (a SmolLM2 GGUF
    takes 12 s); the seed only matters for random tiny backbones."""
    from resrank_jax.train import models

    original, cache = models.backbone_and_tokenizer, {}

    def cached(source, cfg, mesh, seed):
        key = (source, cfg.dtype, cfg.param_dtype, cfg.remat, cfg.attention_impl, cfg.scan_layers)
        if key not in cache:
            cache[key] = original(source, cfg, mesh, seed)
        return cache[key]

    patch = pytest.MonkeyPatch()
    patch.setattr(models, "backbone_and_tokenizer", cached)
    yield
    patch.undo()


def crafted_lists(cfg):
    """Two real SciFact lists of 4: list A gets a second judged positive (grade 1 beside its
    positive's 2); list B keeps its first two candidates plus a copy of A's positive (3 of 4:
    one padded candidate)."""
    from resrank_jax.train.data import load_lists

    lists, _ = load_lists(cfg)
    a, b = lists[0], lists[1]
    pos = int(np.argmax(a.qrels_labels))
    grades = np.zeros(len(a.docids), np.float32)
    grades[pos], grades[(pos + 1) % len(grades)] = 2.0, 1.0
    a = dataclasses.replace(a, qrels_labels=grades)
    b = dataclasses.replace(
        b,
        docids=[*b.docids[:2], a.docids[pos]],
        texts=[*b.texts[:2], a.texts[pos]],
        qrels_labels=np.array([*b.qrels_labels[:2], 0.0], np.float32),
        teacher_labels=np.array([3.0, 2.0, 1.0], np.float32),
    )
    return [a, b]


def jax_loss_and_grads(model, task, batch, weights, loss_cfg):
    """``(loss, metrics, {path: grad})`` from ``jax.value_and_grad`` over the nnx params, the
    way ``make_train_step``'s ``loss_fn`` splits and merges them."""
    from resrank_jax.train.objective import compute_loss

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p, b):
        return compute_loss(task, nnx.merge(graphdef, p, rest), b, weights, loss_cfg)

    grad_fn = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    (loss, metrics), grads = grad_fn(params, {k: jnp.asarray(v) for k, v in batch.items()})
    flat = per_layer_named(grads, np.float64)
    params_np = per_layer_named(params, None)
    return float(loss), {k: float(v) for k, v in metrics.items()}, flat, params_np


def per_layer_named(state: nnx.State, dtype) -> dict[str, np.ndarray]:
    """``{path: array}`` with ``/``-joined paths; scanned layers (``layers/<name>`` stacked on
    a leading axis) are split into the unrolled names ``layers/<i>/<name>`` the torch
    reference uses."""
    out = {}
    for path, v in nnx.to_flat_state(state):
        value = np.asarray(v[...], dtype)
        k = path.index("layers") + 1 if "layers" in path else None
        if k is None or isinstance(path[k], int):
            out["/".join(map(str, path))] = value
            continue
        for i, layer in enumerate(value):
            out["/".join(map(str, (*path[:k], i, *path[k:])))] = layer
    return out


def compare_grads(ours: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    """Asserts every gradient within the tolerance; returns the worst differences."""
    assert sorted(ours) == sorted(ref), (
        f"parameters only in JAX: {sorted(set(ours) - set(ref))}; "
        f"only in torch: {sorted(set(ref) - set(ours))}"
    )
    not_finite = [p for p, g in ours.items() if not np.isfinite(g).all()]
    assert not not_finite, (
        f"JAX gradients are not finite in {len(not_finite)} of {len(ours)} tensors, e.g. "
        f"{not_finite[:5]} (the torch reference's are finite)"
    )
    rows = []
    for path in sorted(ours):
        g, r = ours[path], ref[path]
        assert g.shape == r.shape, f"{path}: JAX {g.shape} vs torch {r.shape}"
        assert np.isfinite(r).all(), f"{path}: torch gradient not finite"
        diff = float(np.abs(g - r).max()) if g.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        rows.append((diff / (GRAD_ATOL + GRAD_RTOL * scale), diff, scale, path))
    rows.sort(reverse=True)
    bad = [row for row in rows if row[0] > 1.0]
    assert not bad, f"{len(bad)} of {len(rows)} gradients differ beyond the tolerance:\n" + (
        "\n".join(f"  {p}: max|diff| {d:.3g}, max|g| {s:.3g} ({q:.1f}x)" for q, d, s, p in bad[:15])
    )
    worst_abs = max(rows, key=lambda row: row[1])
    return {
        "tensors": len(rows),
        "worst_ratio_to_bound": rows[0][0],
        "worst_ratio_param": rows[0][3],
        "max_abs_diff": worst_abs[1],
        "max_abs_diff_param": worst_abs[3],
        "max_abs_diff_scale": worst_abs[2],
    }


@pytest.mark.parametrize("case", list(CASES))
def test_train_step_loss_and_every_gradient_match_torch(
    case, torch_backbones, backbones_loaded_once
):
    from resrank_jax import make_mesh
    from resrank_jax.config import resolve_config
    from resrank_jax.train.batches import BatchBuilder
    from resrank_jax.train.models import build_model, build_task
    from tests import torch_step_reference as ref

    start = time.perf_counter()
    preset, stage_index, gate = CASES[case]
    cfg = resolve_config(preset, OVERRIDES)
    stage = cfg.stages[stage_index]
    weights = dict(stage.weights)
    assert set(weights) == {"rank", "ret"}
    mesh = make_mesh(cfg.mesh, jax.devices()[:1])
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    batch = BatchBuilder(crafted_lists(cfg), task).batch(np.arange(2), stage.labels)
    assert batch["cand_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["doc_key"][0, batch["positive"][0]] == batch["doc_key"][1, 2]
    if gate is not None:
        model.gate[...] = jnp.asarray(gate, jnp.float32)

    loss, metrics, grads, params = jax_loss_and_grads(model, task, batch, weights, cfg.loss)
    del model

    if cfg.model.mode == "e2rank":
        tmodel = ref.TorchE2Rank(torch_backbones["smollm2"])
    else:
        rc = cfg.model.resrank
        assert rc.phi == "linear"
        tmodel = ref.TorchResRank(
            torch_backbones["minilm"],
            torch_backbones["smollm2"],
            params["projector/kernel"],
            params["projector/bias"],
            residual=rc.residual,
            query_vector=rc.query_vector,
            gate=float(params["gate"]) if "gate" in params else None,
        )
    tmodel.zero_grad(set_to_none=True)
    tb = ref.to_torch(batch)
    total, terms, (_, e, u) = ref.step_loss(
        tmodel, tb, weights, kappa=cfg.loss.kappa, temperature=cfg.loss.temperature
    )
    total.backward()
    torch_grads = ref.jax_named_grads(tmodel)
    tmodel.zero_grad(set_to_none=True)

    # the batch exercises the false-negative mask: without it, query A's copy of its
    # positive in list B and its second judged positive would be negatives (InfoNCE moves by
    # 100x the loss tolerance at least)
    with torch.no_grad():
        unmasked = ref.infonce(u, e, tb, cfg.loss.temperature, mask_false_negatives=False)
    assert float(unmasked) - float(terms["ret"].detach()) > 100 * LOSS_ATOL

    for name, value in terms.items():
        np.testing.assert_allclose(
            metrics[f"loss/{name}"], value.item(), atol=LOSS_ATOL, rtol=LOSS_RTOL, err_msg=name
        )
    np.testing.assert_allclose(loss, total.item(), atol=LOSS_ATOL, rtol=LOSS_RTOL)
    stats = compare_grads(grads, torch_grads)
    print(
        f"\n{case}: loss jax {loss:.7f} torch {total.item():.7f} "
        f"(diff {abs(loss - total.item()):.2g}); {stats}; {time.perf_counter() - start:.0f} s"
    )
