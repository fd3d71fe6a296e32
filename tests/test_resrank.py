"""ResRank model: splicing, causality, residual variants and end-to-end gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from resrank_jax import losses
from resrank_jax.models.config import ResRankConfig
from resrank_jax.prompts import SlotPrompt, pad_slot_prompts
from tests.tiny_models import VOCAB, synthetic_batch, tiny_resrank


def run(model, passages, passage_mask, batch):
    return jax.jit(lambda m, *a: m(*a))(
        model, passages, passage_mask, batch.ids, batch.mask, batch.slot_pos, batch.slot_mask
    )


def _run_with_query(model, passages, passage_mask, batch):
    query = jnp.asarray(passages[:, 0])
    return jax.jit(lambda m, *a: m(*a))(
        model,
        passages,
        passage_mask,
        batch.ids,
        batch.mask,
        batch.slot_pos,
        batch.slot_mask,
        query,
        jnp.ones_like(query),
    )


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference_scores(model, cfg: ResRankConfig, out, batch) -> np.ndarray:
    """ResRank's score in NumPy (float64) from the slot and query states ``contextualize``
    returns: ``scale * cos(query vector, fused slot)``, for projector-free ``phi``."""
    assert cfg.phi in ("identity", "rescale", "scale")  # project() is the identity
    e = np.asarray(out["passage_emb"], np.float64)
    args = (jnp.asarray(batch.ids), jnp.asarray(batch.mask), jnp.asarray(batch.slot_pos))
    h, h_q = (np.asarray(x, np.float64) for x in model.contextualize(out["passage_emb"], *args))
    if cfg.center_slots:  # minus the mean of the list's real slots
        real = batch.slot_mask.astype(bool)
        mean = np.stack([h[b][real[b]].mean(axis=0) for b in range(len(h))])
        h, h_q = h - mean[:, None], h_q - mean
    if cfg.query_vector == "last_plus_encoder":
        h_q = h_q + np.asarray(out["query_emb"], np.float64)
    fused = {
        "norm_sum": lambda: _unit(h) + _unit(e),
        "sum": lambda: h + e,
        "alpha": lambda: h + float(model.alpha[...]) * e,
        "none": lambda: h,
    }[cfg.residual]()
    return cfg.score_scale * np.einsum("bd,bnd->bn", _unit(h_q), _unit(fused))


def test_scores_are_cosines_and_padded_slots_are_masked():
    model = tiny_resrank()
    passages, passage_mask, batch = synthetic_batch()
    out = run(model, passages, passage_mask, batch)
    scores = np.asarray(out["scores"])
    assert scores.shape == (2, 3)
    assert scores[1, 2] == losses.NEG  # query 2 has two candidates
    # reference: cos(h_q, norm(h) + norm(e)) in NumPy from the slot and query states
    reference = _reference_scores(model, ResRankConfig(), out, batch)
    valid = batch.slot_mask.astype(bool)
    np.testing.assert_allclose(scores[valid], reference[valid], rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        np.linalg.norm(np.asarray(out["passage_emb"]), axis=-1), 1.0, atol=1e-5
    )


def test_centred_slot_states_score_as_the_numpy_reference():
    """``center_slots``: slot and query states minus the mean over the real slots only (the
    second query's padded slot must not move its mean)."""
    cfg = ResRankConfig(center_slots=True)
    model = tiny_resrank(cfg)
    passages, passage_mask, batch = synthetic_batch()
    out = run(model, passages, passage_mask, batch)
    scores = np.asarray(out["scores"])
    valid = batch.slot_mask.astype(bool)
    reference = _reference_scores(model, cfg, out, batch)
    np.testing.assert_allclose(scores[valid], reference[valid], rtol=0, atol=1e-5)
    plain = np.asarray(run(tiny_resrank(), passages, passage_mask, batch)["scores"])
    assert np.abs(plain[valid] - scores[valid]).max() > 1e-3  # same weights, not centred


def _spy_reranker_inputs(model, monkeypatch) -> list[dict]:
    """Records what ``model.reranker`` is called with (eager calls only)."""
    calls = []
    original = type(model.reranker).__call__

    def spy(self, *args, **kwargs):
        calls.append({k: np.asarray(v) for k, v in kwargs.items() if v is not None})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(model.reranker), "__call__", spy)
    return calls


def _phi_reference(model, cfg: ResRankConfig, e: np.ndarray) -> np.ndarray:
    """``phi(e)`` in NumPy from the model's parameters (float64)."""
    e = e.astype(np.float64)
    if cfg.phi == "rescale":
        table = np.asarray(model.reranker.embed_tokens.embedding[...], np.float64)
        scale = np.linalg.norm(table, axis=-1).mean()
        return e / np.linalg.norm(e, axis=-1, keepdims=True) * scale
    assert cfg.phi == "linear"
    kernel = np.asarray(model.projector.kernel[...], np.float64)
    return e @ kernel + np.asarray(model.projector.bias[...], np.float64)


@pytest.mark.parametrize(
    "cfg", [ResRankConfig(), ResRankConfig(phi="linear")], ids=["rescale", "linear"]
)
def test_reranker_reads_phi_e_at_slots_and_token_embeddings_elsewhere(cfg, monkeypatch):
    model = tiny_resrank(cfg)
    passages, passage_mask, batch = synthetic_batch()  # lists of 3 and 2 passages
    length = batch.ids.shape[1]
    real = batch.slot_mask.astype(bool)
    assert batch.mask[1, 0] == 0, "the shorter prompt is left-padded"
    assert batch.slot_pos[1, 2] == length and not real[1, 2], "its third slot is padding"
    e = np.array(run(model, passages, passage_mask, batch)["passage_emb"])
    # the padded slot carries a vector of its own: it must not land anywhere in the prompt
    e[~real] = np.random.default_rng(1).normal(size=(int((~real).sum()), e.shape[-1]))
    calls = _spy_reranker_inputs(model, monkeypatch)
    model.contextualize(
        jnp.asarray(e), jnp.asarray(batch.ids), jnp.asarray(batch.mask), jnp.asarray(batch.slot_pos)
    )
    (call,) = calls
    np.testing.assert_array_equal(call["attention_mask_bl"], batch.mask)
    phi = np.asarray(model.slot_inputs(jnp.asarray(e)))
    np.testing.assert_allclose(phi, _phi_reference(model, cfg, e), rtol=1e-5, atol=1e-6)
    expected = np.array(model.reranker.embed(jnp.asarray(batch.ids)))  # token embeddings
    for b, k in zip(*np.nonzero(real), strict=True):
        expected[b, batch.slot_pos[b, k]] = phi[b, k]
    inputs = call["inputs_embeds_bld"]
    assert inputs.shape == expected.shape
    np.testing.assert_allclose(inputs, expected, rtol=0, atol=1e-6)
    # the slots really differ from the pad token's embedding they replace
    slot_rows = inputs[np.nonzero(real)[0], batch.slot_pos[real]]
    pad_row = np.asarray(model.reranker.embed(jnp.zeros((1, 1), jnp.int32)))[0, 0]
    assert np.abs(slot_rows - pad_row).max(axis=-1).min() > 1e-3


def test_padding_n_to_a_bucket_leaves_scores_unchanged():
    """N = 5 real slots vs the same 5 padded to 8 (padded slots point past the prompt and
    carry random vectors): the 5 scores agree to fp32 rounding, the 3 padded ones are NEG."""
    model = tiny_resrank(ResRankConfig(residual="alpha", query_vector="last_plus_encoder"))
    rng = np.random.default_rng(3)
    ids = [int(i) for i in rng.integers(1, VOCAB, 6)]
    slots = list(range(len(ids), len(ids) + 5))
    ids += [0] * 5 + [int(i) for i in rng.integers(1, VOCAB, 3)]
    prompt = SlotPrompt(ids, slots)
    e = rng.normal(size=(1, 8, 32)).astype(np.float32)
    e /= np.linalg.norm(e, axis=-1, keepdims=True)
    query = rng.normal(size=(1, 32)).astype(np.float32)
    jitted = jax.jit(lambda m, e, q, *p: m.score(e, *p, q))

    def score(model, e, p, query):
        return jitted(model, e, query, p.ids, p.mask, p.slot_pos, p.slot_mask)

    exact = pad_slot_prompts([prompt], pad_id=0)
    padded = pad_slot_prompts([prompt], pad_id=0, n_slots=8)
    assert exact.slot_pos.shape == (1, 5) and padded.slot_pos[0, 5:].tolist() == [len(ids)] * 3
    five = np.asarray(score(model, e[:, :5], exact, query))
    eight = np.asarray(score(model, e, padded, query))
    np.testing.assert_allclose(eight[:, :5], five, rtol=0, atol=1e-6)
    assert (eight[:, 5:] == losses.NEG).all()
    # a bucketed prompt (left-padded to 32 tokens) gives the same scores too
    bucketed = pad_slot_prompts([prompt], pad_id=0, pad_to=32, n_slots=8)
    np.testing.assert_allclose(
        np.asarray(score(model, e, bucketed, query))[:, :5], five, rtol=0, atol=1e-5
    )


def test_causality_of_slot_states():
    model = tiny_resrank()
    passages, passage_mask, batch = synthetic_batch(n_per_query=(4,))
    e = run(model, passages, passage_mask, batch)["passage_emb"]
    args = (jnp.asarray(batch.ids), jnp.asarray(batch.mask), jnp.asarray(batch.slot_pos))
    contextualize = jax.jit(lambda m, e: m.contextualize(e, *args))
    h, h_q = contextualize(model, e)
    changed = e.at[0, 2].set(-e[0, 2])  # change passage 3 of 4
    h2, h_q2 = contextualize(model, changed)
    diff = np.abs(np.asarray(h2 - h)).max(axis=-1)[0]
    assert diff[0] == 0.0 and diff[1] == 0.0, "earlier slots must not see a later passage"
    assert diff[2] > 1e-4 and diff[3] > 1e-4, "the slot itself and later slots see it"
    assert float(jnp.abs(h_q2 - h_q).max()) > 1e-4, "the final query state sees every slot"
    for k in range(4):  # and the query state depends on each slot
        _, h_qk = contextualize(model, e.at[0, k].set(-e[0, k]))
        assert float(jnp.abs(h_qk - h_q).max()) > 1e-4, k


def _encoder_grad_norm(model, passages, passage_mask, batch):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    labels = jnp.asarray(
        np.arange(batch.slot_mask.shape[1])[::-1][None].repeat(len(batch.ids), 0), jnp.float32
    )

    def loss(p):
        out = run(nnx.merge(graphdef, p, rest), passages, passage_mask, batch)
        return losses.ranknet(out["scores"], labels, jnp.asarray(batch.slot_mask))

    grads = jax.jit(jax.grad(loss))(params)
    enc = jax.tree.leaves(grads["encoder"])
    return float(sum(jnp.sum(g**2) for g in enc)) ** 0.5


def test_ranking_loss_reaches_the_encoder_through_slot_and_residual(monkeypatch):
    passages, passage_mask, batch = synthetic_batch()
    model = tiny_resrank()
    assert _encoder_grad_norm(model, passages, passage_mask, batch) > 0

    slot_only = tiny_resrank()  # residual detached: gradient flows through the slot alone
    original_fuse = type(slot_only).fuse
    monkeypatch.setattr(
        type(slot_only), "fuse", lambda self, h, e: original_fuse(self, h, jax.lax.stop_gradient(e))
    )
    assert _encoder_grad_norm(slot_only, passages, passage_mask, batch) > 0
    monkeypatch.undo()

    residual_only = tiny_resrank()  # slot input detached: gradient flows through the residual
    original_slot = type(residual_only).slot_inputs
    monkeypatch.setattr(
        type(residual_only),
        "slot_inputs",
        lambda self, e: jax.lax.stop_gradient(original_slot(self, e)),
    )
    assert _encoder_grad_norm(residual_only, passages, passage_mask, batch) > 0


def test_residual_none_reaches_the_encoder_only_through_the_slot(monkeypatch):
    passages, passage_mask, batch = synthetic_batch()
    model = tiny_resrank(ResRankConfig(residual="none"))
    assert _encoder_grad_norm(model, passages, passage_mask, batch) > 0
    original_slot = type(model).slot_inputs
    monkeypatch.setattr(
        type(model), "slot_inputs", lambda self, e: jax.lax.stop_gradient(original_slot(self, e))
    )
    assert _encoder_grad_norm(model, passages, passage_mask, batch) == 0.0


@pytest.mark.parametrize(
    "cfg",
    [
        ResRankConfig(phi="identity", residual="sum"),
        ResRankConfig(phi="scale", residual="alpha"),
        ResRankConfig(phi="rescale", query_vector="last_plus_encoder", score_scale=5.0),
    ],
)
def test_variants_score_as_their_definition(cfg):
    model = tiny_resrank(cfg)
    passages, passage_mask, batch = synthetic_batch()
    out = _run_with_query(model, passages, passage_mask, batch)
    valid = batch.slot_mask.astype(bool)
    scores = np.asarray(out["scores"])
    reference = _reference_scores(model, cfg, out, batch)
    np.testing.assert_allclose(scores[valid], reference[valid], rtol=0, atol=1e-5 * cfg.score_scale)


@pytest.mark.parametrize("phi", ["linear", "mlp"])
def test_projector_bridges_different_widths(phi):
    model = tiny_resrank(ResRankConfig(phi=phi), bert_encoder=True)
    passages, passage_mask, batch = synthetic_batch()
    out = run(model, passages, passage_mask, batch)
    assert out["passage_emb"].shape[-1] == 24 and np.isfinite(np.asarray(out["scores"])).all()


def test_width_mismatch_without_projector_is_an_error():
    with pytest.raises(ValueError, match="use phi='linear' or phi='mlp'"):
        tiny_resrank(ResRankConfig(phi="rescale"), bert_encoder=True)


def test_unknown_flag_is_an_error():
    with pytest.raises(ValueError, match="residual="):
        ResRankConfig(residual="gate")


GATED = ResRankConfig(
    phi="linear", residual="gated", query_vector="gated", projector_init="orthogonal"
)


def test_gated_model_starts_as_the_dense_ranker_across_widths():
    model = tiny_resrank(GATED, bert_encoder=True)  # encoder width 24 -> reranker width 32
    passages, passage_mask, batch = synthetic_batch()
    out = _run_with_query(model, passages, passage_mask, batch)
    e = np.asarray(out["passage_emb"], np.float64)
    u = np.asarray(out["query_emb"], np.float64)
    dense = np.einsum("bd,bnd->bn", u, e) / (
        np.linalg.norm(u, axis=-1)[:, None] * np.linalg.norm(e, axis=-1)
    )
    valid = batch.slot_mask.astype(bool)
    np.testing.assert_allclose(np.asarray(out["scores"])[valid], dense[valid], atol=1e-5)
    model.gate[...] = jnp.float32(0.5)  # an open gate lets the reranker change the scores
    opened = np.asarray(_run_with_query(model, passages, passage_mask, batch)["scores"])
    assert np.abs(opened[valid] - dense[valid]).max() > 1e-3


def test_closed_gate_trains_the_gate_first():
    model = tiny_resrank(GATED, bert_encoder=True)
    passages, passage_mask, batch = synthetic_batch()
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    labels = jnp.asarray(np.arange(3)[::-1][None].repeat(2, 0), jnp.float32)

    def loss(p):
        out = _run_with_query(nnx.merge(graphdef, p, rest), passages, passage_mask, batch)
        return losses.ranknet(out["scores"], labels, jnp.asarray(batch.slot_mask))

    grads = jax.jit(jax.grad(loss))(params)
    assert abs(float(grads["gate"][...])) > 0
    reranker = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["reranker"])]
    assert max(reranker) == 0.0, "with g = 0 the reranker's states do not reach the scores"
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads["encoder"])) > 0
