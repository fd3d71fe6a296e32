"""Decoder parity with HF transformers (PyTorch) on tiny random Qwen3 / Qwen2 / Llama."""

import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax import load_backbone
from tests.hf_reference import hf_forward, make_tiny_hf, padded_batch

pytestmark = pytest.mark.torch
TOL = 1e-4  # fp32, fixed


@pytest.fixture(scope="module", params=[("qwen3", True), ("qwen2", False), ("llama", False)])
def pair(request, tmp_path_factory):
    family, tie = request.param
    out = tmp_path_factory.mktemp(family)
    hf_model = make_tiny_hf(family, out, tie=tie)
    model, _ = load_backbone(out)
    return out, hf_model, model


@pytest.mark.parametrize("side", ["left", "right"])
def test_hidden_and_logits_match_hf(pair, side):
    _family, hf_model, model = pair
    ids, mask = padded_batch(97, [9, 5, 1], side)
    ref_h, ref_logits = hf_forward(hf_model, ids, mask)
    h, logits = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True)
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(h)[real], ref_h[real], atol=TOL, rtol=0)
    np.testing.assert_allclose(np.asarray(logits)[real], ref_logits[real], atol=TOL, rtol=0)
    assert np.isfinite(np.asarray(h)).all(), "padding rows must stay finite"


def test_inputs_embeds_path_equals_ids_path(pair):
    _, _, model = pair
    ids, mask = padded_batch(97, [7, 4], "left", seed=1)
    from_ids = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))
    from_embeds = model(
        inputs_embeds_bld=model.embed(jnp.asarray(ids)), attention_mask_bl=jnp.asarray(mask)
    )
    np.testing.assert_array_equal(np.asarray(from_ids), np.asarray(from_embeds))


def test_reference_attention_matches_fused(pair):
    out, _, model = pair
    reference, _ = load_backbone(out, attention_impl="reference")
    ids, mask = padded_batch(97, [8, 3], "left", seed=2)
    fused = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))
    ref = reference(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask))
    real = mask.astype(bool)
    np.testing.assert_allclose(np.asarray(fused)[real], np.asarray(ref)[real], atol=1e-5, rtol=0)
