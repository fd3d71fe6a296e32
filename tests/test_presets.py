"""Published Qwen3 and Gemma 3 sizes: parameter counts from eval_shape (no memory allocated)."""

import pytest

from resrank_jax.models.build import param_count
from resrank_jax.models.config import PRESETS

# (total, non-embedding) in billions as published on the model cards, with their precision.
PUBLISHED = {
    "qwen3-0.6b": ("0.6", "0.44"),
    "qwen3-1.7b": ("1.7", "1.4"),
    "qwen3-4b": ("4.0", "3.6"),
    "qwen3-8b": ("8.2", "6.95"),
    "qwen3-embedding-0.6b": ("0.6", None),
    "qwen3-embedding-4b": ("4", None),
    "qwen3-embedding-8b": ("8", None),
}


def _matches(count: int, published: str) -> bool:
    decimals = len(published.split(".")[1]) if "." in published else 0
    return round(count / 1e9, decimals) == float(published)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_matches_published(name):
    cfg = PRESETS[name]
    total = param_count(cfg)
    published_total, published_non_embedding = PUBLISHED[name]
    assert _matches(total, published_total), f"{name}: {total:,} vs {published_total}B"
    if published_non_embedding:
        heads = 1 if cfg.tie_word_embeddings else 2
        non_embedding = total - heads * cfg.vocab_size * cfg.hidden_size
        assert _matches(non_embedding, published_non_embedding), f"{name}: {non_embedding:,}"


# Gemma 3 text decoders: the published total where the model card gives one for the text
# model (270M, 1B; the 4B's published total includes its vision tower) and the exact count
# transformers gives the same config (meta device, no memory). 268,098,176 is also the
# element count of the real 270M GGUF file.
GEMMA3 = {
    "gemma3-270m": ("0.27", 268_098_176),
    "gemma3-1b": ("1.0", 999_885_952),
    "gemma3-4b": (None, 3_880_263_168),
}


@pytest.mark.parametrize("name", sorted(GEMMA3))
def test_gemma3_parameter_counts_match_published(name):
    published, exact = GEMMA3[name]
    total = param_count(PRESETS[name])
    assert published is None or _matches(total, published), f"{name}: {total:,} vs {published}B"
    assert total == exact


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(GEMMA3))
def test_gemma3_presets_have_transformers_parameter_count(name):
    import torch
    import transformers

    from resrank_jax.hf.config_map import config_to_hf

    hf = config_to_hf(PRESETS[name])
    config = transformers.Gemma3TextConfig(**{k: v for k, v in hf.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.Gemma3ForCausalLM(config)
    count = sum(p.numel() for p in model.parameters())  # the tied head is counted once
    assert count == GEMMA3[name][1] == param_count(PRESETS[name])


def test_exact_count_qwen3_0_6b():
    # 28 layers x 15,730,944 + final norm 1,024 + embeddings 151,936 x 1,024 (tied head)
    assert param_count(PRESETS["qwen3-0.6b"]) == 596_049_920


def test_embedding_presets_have_no_lm_head():
    assert not PRESETS["qwen3-embedding-8b"].has_lm_head
    assert (
        param_count(PRESETS["qwen3-8b"]) - param_count(PRESETS["qwen3-embedding-8b"])
        == 151936 * 4096
    )


def test_spec_preset_and_its_ablations_change_one_thing_each():
    import dataclasses

    from resrank_jax.config import resolve_config
    from resrank_jax.models.config import ResRankConfig

    spec = resolve_config("smollm2-135m-spec")
    assert spec.model.resrank == ResRankConfig(phi="linear", projector_init="orthogonal")
    assert (ResRankConfig().residual, ResRankConfig().query_vector) == ("norm_sum", "last")

    def differences(name: str) -> set[str]:
        a, b = dataclasses.asdict(spec), dataclasses.asdict(resolve_config(name))
        return {k for k in a if a[k] != b[k]}

    assert differences("smollm2-135m-no-residual") == {"model"}
    assert resolve_config("smollm2-135m-no-residual").model.resrank == dataclasses.replace(
        spec.model.resrank, residual="none"
    )
    for name in ("single-stage", "no-contrastive"):
        assert differences(f"smollm2-135m-{name}") == {"stages"}, name
    frozen = resolve_config("smollm2-135m-frozen-encoder")
    assert differences("smollm2-135m-frozen-encoder") == {"stages", "data"}
    assert frozen.data == dataclasses.replace(spec.data, cached_vectors=True)  # a shortcut only
    assert [s.weights for s in resolve_config("smollm2-135m-no-contrastive").stages] == [
        (("rank", 2.0),)
    ] * 2


def test_frozen_gated_preset_is_the_gated_preset_with_a_frozen_encoder_and_inference_like_lists():
    import dataclasses
    import re

    from resrank_jax.config import resolve_config

    gated, frozen = resolve_config("smollm2-135m"), resolve_config("smollm2-135m-frozen-gated")
    a, b = dataclasses.asdict(gated), dataclasses.asdict(frozen)
    assert {k for k in a if a[k] != b[k]} == {"model", "stages", "data"}
    assert frozen.model == dataclasses.replace(
        gated.model,
        resrank=dataclasses.replace(gated.model.resrank, gate_init=0.3),
        remat="none",
    )
    before, after = dataclasses.asdict(gated.data), dataclasses.asdict(frozen.data)
    changed = {k: v for k, v in after.items() if before[k] != v}
    assert changed == {
        "cached_vectors": True,
        "list_size": 20,  # inference-like lists: shuffled, negatives from the whole top-100
        "candidate_order": "shuffled",
        "negatives": "sampled",
        "default_teacher": "judged_only",
    }
    for before, after in zip(gated.stages, frozen.stages, strict=True):
        assert after == dataclasses.replace(
            before, trainable=after.trainable, weights=(("rank", 2.0),)
        )
        (pattern,) = after.trainable
        assert not re.fullmatch(pattern, "encoder/layers/0/attention/query/kernel")
        assert re.fullmatch(pattern, "reranker/layers/0/attn/q_proj/kernel")
        assert re.fullmatch(pattern, "gate")
