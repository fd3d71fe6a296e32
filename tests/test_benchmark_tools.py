"""What the accelerator benchmarks (`benchmarks/gpu.sh`) rely on: random HF checkpoints of a
named shape that the real loader reads back, rankers in bf16, and the attention implementation
reaching both backbones from a training config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from benchmarks.random_checkpoint import write_random_checkpoint
from resrank_jax import init_backbone, load_backbone, make_mesh
from resrank_jax.config import resolve_config
from resrank_jax.models.build import flat_params
from resrank_jax.rerank import Candidate
from resrank_jax.rerank.factory import build_ranker
from resrank_jax.train.models import TINY, build_model

# Qwen3-shaped (q/k norm) but tiny, with SmolLM2's vocabulary so its tokenizer fits.
QWEN_SHAPED = TINY["tiny-decoder"][0].replace(family="qwen3", qk_norm=True)


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory, smollm2_tokenizer):
    out = tmp_path_factory.mktemp("random") / "qwen-shaped"
    return write_random_checkpoint(QWEN_SHAPED, out, smollm2_tokenizer.hf, seed=5)


def test_random_checkpoint_loads_back_bit_for_bit(random_checkpoint, smollm2_tokenizer):
    loaded, tokenizer = load_backbone(random_checkpoint)
    assert loaded.cfg.family == "qwen3" and loaded.cfg.qk_norm
    expected = flat_params(init_backbone(QWEN_SHAPED, seed=5))
    got = flat_params(loaded)
    assert set(got) == set(expected)
    for path, value in expected.items():
        np.testing.assert_array_equal(np.asarray(got[path]), np.asarray(value), err_msg=str(path))
    text = "what causes cancer"
    assert tokenizer.hf(text)["input_ids"] == smollm2_tokenizer.hf(text)["input_ids"]
    assert (tokenizer.eos_id, tokenizer.pad_id) == (
        smollm2_tokenizer.eos_id,
        smollm2_tokenizer.pad_id,
    )


def test_random_checkpoint_refuses_a_tokenizer_larger_than_the_vocabulary(
    tmp_path, smollm2_tokenizer
):
    with pytest.raises(ValueError, match="embeds only 1000"):
        write_random_checkpoint(
            QWEN_SHAPED.replace(vocab_size=1000), tmp_path, smollm2_tokenizer.hf
        )
    assert not (tmp_path / "model.safetensors").exists()


def test_rankers_in_bfloat16_hold_bf16_params_and_agree_with_fp32(random_checkpoint):
    rng = np.random.default_rng(0)
    words = ["protein", "cell", "gene", "drug", "cancer", "virus", "patient", "study"]
    cands = [Candidate(f"d{i}", " ".join(rng.choice(words, 10)), 0.0) for i in range(6)]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        ranker = build_ranker("e2rank", model=str(random_checkpoint), dtype=dtype)
        params = jax.tree.leaves(nnx.state(ranker.model.encoder, nnx.Param))
        assert {p.dtype for p in params} == {jnp.dtype(dtype)}
        scores[dtype] = ranker.rank("what causes cancer", cands).scores
    np.testing.assert_allclose(scores["bfloat16"], scores["float32"], atol=0.05)


def test_attention_impl_reaches_both_backbones_from_the_config():
    cfg = resolve_config("tiny", ["model.attention_impl=cudnn"])
    model, _, _ = build_model(cfg.model, make_mesh((1, 1, 1), jax.devices()[:1]), cfg.seed)
    assert model.encoder.backbone.cfg.attention_impl == "cudnn"
    assert model.reranker.cfg.attention_impl == "cudnn"
    with pytest.raises(ValueError, match="choose from"):
        resolve_config("tiny", ["model.attention_impl=flash"])
