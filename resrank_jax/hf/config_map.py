"""HF ``config.json`` <-> resrank_jax backbone configs, for the supported model types only."""

from __future__ import annotations

from typing import Any

from resrank_jax.models.config import BackboneConfig, BertConfig, DecoderConfig

DECODER_TYPES = {
    "qwen3": "Qwen3ForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
}
SUPPORTED_TYPES = (*DECODER_TYPES, "bert")


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
    if hf.get("hidden_act", "silu") != "silu":
        raise UnsupportedModelError(f"hidden_act {hf['hidden_act']!r} is not supported (silu only)")
    rope_scaling = hf.get("rope_scaling") or (hf.get("rope_parameters") or {})
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in (None, "default"):
        raise UnsupportedModelError(f"rope scaling {rope_type!r} is not supported")
    theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))
    n_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // n_heads
    return DecoderConfig(
        family=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=n_heads,
        num_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        rope_theta=float(theta),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=hf.get("tie_word_embeddings", False),
        qk_norm=model_type == "qwen3",
        qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
        max_position_embeddings=hf.get("max_position_embeddings", 32768),
        **overrides,
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
    hf: dict[str, Any] = {
        "architectures": [DECODER_TYPES[cfg.family]],
        "model_type": cfg.family,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.max_position_embeddings,
        "hidden_act": "silu",
        "torch_dtype": cfg.param_dtype,
    }
    if cfg.family == "llama":
        hf["attention_bias"] = cfg.qkv_bias
        hf["mlp_bias"] = False
    return hf
