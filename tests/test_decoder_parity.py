"""Decoder parity with HF transformers (PyTorch) on tiny random Qwen3 / Qwen2 / Llama / Mistral
/ Gemma 3, and Llama's scaled RoPE types beyond the original context."""

import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax import export_hf, load_backbone
from resrank_jax.hf.config_map import UnsupportedModelError, config_from_hf
from resrank_jax.models.build import backbone_from_arrays, flat_params
from tests.hf_reference import SLIDING_WINDOW, hf_forward, make_tiny_hf, padded_batch

pytestmark = pytest.mark.torch
TOL = 1e-4  # fp32, fixed
FAMILIES = [
    ("qwen3", True),
    ("qwen2", False),
    ("llama", False),
    ("mistral", False),
    ("gemma3", True),
]


@pytest.fixture(scope="module", params=FAMILIES, ids=[f for f, _ in FAMILIES])
def pair(request, tmp_path_factory):
    family, tie = request.param
    out = tmp_path_factory.mktemp(family)
    hf_model = make_tiny_hf(family, out, tie=tie)
    model, _ = load_backbone(out)
    return out, hf_model, model


def _max_diff(model, hf_model, ids, mask) -> tuple[float, float]:
    ref_h, ref_logits = hf_forward(hf_model, ids, mask)
    h, logits = model(jnp.asarray(ids), attention_mask_bl=jnp.asarray(mask), return_logits=True)
    real = mask.astype(bool)
    assert np.isfinite(np.asarray(h)).all(), "padding rows must stay finite"
    return (
        float(np.abs(np.asarray(h)[real] - ref_h[real]).max()),
        float(np.abs(np.asarray(logits)[real] - ref_logits[real]).max()),
    )


@pytest.mark.parametrize("side", ["left", "right"])
def test_hidden_and_logits_match_hf(pair, side):
    _family, hf_model, model = pair
    ids, mask = padded_batch(97, [9, 5, 1], side)  # 9 > the sliding window of 4
    assert max(_max_diff(model, hf_model, ids, mask)) <= TOL


@pytest.mark.parametrize(("family", "tie"), [("mistral", False), ("gemma3", True)])
def test_the_sliding_window_is_what_makes_them_match(family, tie, tmp_path):
    hf_model = make_tiny_hf(family, tmp_path, tie=tie, seed=1)
    model, _ = load_backbone(tmp_path)
    assert model.cfg.sliding_window == SLIDING_WINDOW
    wide = backbone_from_arrays(
        model.cfg.replace(sliding_window=64), lambda path: np.asarray(flat_params(model)[path])
    )
    ids, mask = padded_batch(97, [9, 5, 1], "right")
    assert max(_max_diff(wide, hf_model, ids, mask)) > 100 * TOL
    short_ids, short_mask = padded_batch(97, [SLIDING_WINDOW, 2], "right")
    assert max(_max_diff(wide, hf_model, short_ids, short_mask)) <= TOL  # within the window


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


# Original context 32 (llama3: the 8-to-32 band of wavelengths is blended, head_dim 16 has
# wavelengths 6 to 20000, so all three regimes occur); sequences of 40 tokens go beyond it.
ROPE_SCALINGS = {
    "linear": ({"rope_type": "linear", "factor": 4.0}, {}),
    "llama3": (
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
        },
        {},
    ),
    "dynamic": ({"rope_type": "dynamic", "factor": 2.0}, {"max_position_embeddings": 32}),
}


@pytest.mark.parametrize("rope_type", list(ROPE_SCALINGS))
def test_llama_rope_scaling_matches_hf_beyond_the_original_context(rope_type, tmp_path):
    scaling, overrides = ROPE_SCALINGS[rope_type]
    hf_model = make_tiny_hf("llama", tmp_path, tie=False, rope_scaling=scaling, **overrides)
    model, _ = load_backbone(tmp_path)
    assert model.cfg.rope_scaling.rope_type == rope_type
    ids, mask = padded_batch(97, [40, 40], "right", seed=5)  # no padding: see rope_inv_freq
    assert max(_max_diff(model, hf_model, ids, mask)) <= TOL
    unscaled = backbone_from_arrays(
        model.cfg.replace(rope_scaling=None), lambda path: np.asarray(flat_params(model)[path])
    )
    assert max(_max_diff(unscaled, hf_model, ids, mask)) > 100 * TOL  # the scaling matters
    import transformers

    export_hf(model, tmp_path / "exported")  # the scaling survives export
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exported").eval()
    assert max(_max_diff(model, reloaded, ids, mask)) <= TOL


@pytest.mark.parametrize("rope_type", ["yarn", "longrope"])
def test_unsupported_rope_types_name_the_type(rope_type):
    hf = dict(
        model_type="llama",
        vocab_size=97,
        hidden_size=64,
        intermediate_size=112,
        num_hidden_layers=2,
        num_attention_heads=4,
        rope_scaling={"rope_type": rope_type, "factor": 4.0},
    )
    with pytest.raises(UnsupportedModelError, match=f"rope scaling '{rope_type}'"):
        config_from_hf(hf)
