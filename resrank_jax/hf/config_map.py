"""HF ``config.json`` <-> resrank_jax backbone configs, for the supported model types only."""

from __future__ import annotations

from typing import Any

from resrank_jax.models.config import (
    BackboneConfig,
    BertConfig,
    DecoderConfig,
    RopeScaling,
    gemma3_layer_types,
)

# resrank_jax family -> (HF model_type, HF architecture)
DECODER_TYPES = {
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
}
FAMILY_OF_TYPE = {model_type: family for family, (model_type, _) in DECODER_TYPES.items()}
SUPPORTED_TYPES = (*FAMILY_OF_TYPE, "bert")
SCALED_ROPE_TYPES = ("linear", "dynamic", "llama3")
_GEMMA_KINDS = {"full_attention": "full", "sliding_attention": "sliding"}


class UnsupportedModelError(ValueError):
    """The checkpoint's architecture is not one resrank_jax implements."""


def config_from_hf(hf: dict[str, Any], **overrides: Any) -> BackboneConfig:
    """Builds a backbone config from an HF ``config.json`` dict.

    ``overrides`` set resrank_jax-only fields (``dtype``, ``param_dtype``, ``remat``...).
    """
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        raise UnsupportedModelError(
            f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_TYPES)})"
        )
    if model_type == "bert":
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModelError("only absolute position embeddings are supported for BERT")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise UnsupportedModelError(f"BERT hidden_act {hf['hidden_act']!r} is not supported")
        return BertConfig(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=hf["num_attention_heads"],
            max_position_embeddings=hf.get("max_position_embeddings", 512),
            type_vocab_size=hf.get("type_vocab_size", 2),
            layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
            **overrides,
        )
    family = FAMILY_OF_TYPE[model_type]
    n_heads = hf["num_attention_heads"]
    common = dict(
        family=family,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=n_heads,
        num_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // n_heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
    )
    if family == "gemma3":
        return DecoderConfig(**common, **_gemma3_fields(hf), **overrides)
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    params = hf.get("rope_parameters") or {}
    theta, scaling = _rope(
        {"rope_theta": hf.get("rope_theta", 10000.0), **params, **(hf.get("rope_scaling") or {})},
        common["max_position_embeddings"],
    )
    return DecoderConfig(
        **common,
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_window=hf.get("sliding_window") if family == "mistral" else None,
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        qk_norm=family == "qwen3",
        qkv_bias=family == "qwen2" or bool(hf.get("attention_bias", False)),
        **overrides,
    )


def _rope(params: dict[str, Any], max_positions: int) -> tuple[float, RopeScaling | None]:
    """``(theta, scaling)`` of one HF RoPE parameter dict (``rope_scaling`` or
    ``rope_parameters``); types transformers defines but resrank_jax does not raise."""
    rope_type = params.get("rope_type", params.get("type")) or "default"
    theta = float(params.get("rope_theta", 10000.0))
    if rope_type == "default":
        return theta, None
    if rope_type not in SCALED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"rope scaling {rope_type!r} is not supported "
            f"(supported: default, {', '.join(SCALED_ROPE_TYPES)})"
        )
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedModelError("partial_rotary_factor != 1 is not supported")
    original = params.get("original_max_position_embeddings")
    if rope_type == "dynamic":
        original = max_positions  # transformers' dynamic NTK grows from max_position_embeddings
    return theta, RopeScaling(
        rope_type,
        float(params["factor"]),
        original_max_position_embeddings=original,
        low_freq_factor=float(params.get("low_freq_factor", 1.0)),
        high_freq_factor=float(params.get("high_freq_factor", 4.0)),
    )


def _gemma3_fields(hf: dict[str, Any]) -> dict[str, Any]:
    """The Gemma 3 flags of a ``gemma3_text`` config (old ``rope_theta`` /
    ``rope_local_base_freq`` / ``rope_scaling`` keys or transformers 5 ``rope_parameters`` per
    layer type)."""
    if hf.get("hidden_activation", "gelu_pytorch_tanh") not in ("gelu_pytorch_tanh", "gelu_tanh"):
        raise UnsupportedModelError(f"Gemma 3 hidden_activation {hf['hidden_activation']!r}")
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(key) is not None:
            raise UnsupportedModelError(f"Gemma 3 {key}={hf[key]} is not supported")
    if hf.get("use_bidirectional_attention"):
        raise UnsupportedModelError("bidirectional Gemma 3 (EmbeddingGemma) is not supported")
    params = hf.get("rope_parameters") or {}
    full = params.get("full_attention") or {
        "rope_theta": hf.get("rope_theta", 1e6),
        **(hf.get("rope_scaling") or {}),
    }
    sliding = params.get("sliding_attention") or {
        "rope_theta": hf.get("rope_local_base_freq", 10000.0)
    }
    max_positions = hf.get("max_position_embeddings", 131072)
    theta, scaling = _rope(full, max_positions)
    local_theta, local_scaling = _rope(sliding, max_positions)
    if local_scaling is not None:
        raise UnsupportedModelError("RoPE scaling on Gemma 3 sliding layers is not supported")
    layer_types = hf.get("layer_types")
    return dict(
        rope_theta=theta,
        rope_scaling=scaling,
        local_rope_theta=local_theta,
        sliding_window=hf.get("sliding_window", 4096),
        layer_types=tuple(_GEMMA_KINDS[t] for t in layer_types)
        if layer_types
        else gemma3_layer_types(
            hf["num_hidden_layers"],
            hf.get("sliding_window_pattern", hf.get("_sliding_window_pattern", 6)),
        ),
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        qk_norm=True,
        norm_plus_one=True,
        scale_embeddings=True,
        sandwich_norms=True,
        mlp_activation="gelu_tanh",
    )


def config_to_hf(cfg: BackboneConfig) -> dict[str, Any]:
    """The HF ``config.json`` dict that transformers loads into the same architecture."""
    if isinstance(cfg, BertConfig):
        return {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "max_position_embeddings": cfg.max_position_embeddings,
            "type_vocab_size": cfg.type_vocab_size,
            "layer_norm_eps": cfg.layer_norm_eps,
            "hidden_act": "gelu",
            "position_embedding_type": "absolute",
            "torch_dtype": cfg.param_dtype,
        }
    model_type, architecture = DECODER_TYPES[cfg.family]
    hf: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "torch_dtype": cfg.param_dtype,
    }
    full_rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling is not None:
        full_rope.update(_rope_scaling_to_hf(cfg.rope_scaling))
    if cfg.family == "gemma3":
        kinds = {"full": "full_attention", "sliding": "sliding_attention"}
        local = {"rope_type": "default", "rope_theta": cfg.local_rope_theta or cfg.rope_theta}
        return hf | {
            "hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
            "sliding_window": cfg.sliding_window,
            "layer_types": [kinds[k] for k in cfg.kinds],
            "rope_parameters": {"full_attention": full_rope, "sliding_attention": local},
        }
    hf |= {"hidden_act": "silu", "rope_parameters": full_rope}
    if cfg.family == "mistral":
        hf["sliding_window"] = cfg.sliding_window
    if cfg.family == "llama":
        hf["attention_bias"] = cfg.qkv_bias
        hf["mlp_bias"] = False
    return hf


def _rope_scaling_to_hf(scaling: RopeScaling) -> dict[str, Any]:
    out: dict[str, Any] = {"rope_type": scaling.rope_type, "factor": scaling.factor}
    if scaling.rope_type == "llama3":
        out |= {
            "original_max_position_embeddings": scaling.original_max_position_embeddings,
            "low_freq_factor": scaling.low_freq_factor,
            "high_freq_factor": scaling.high_freq_factor,
        }
    return out
