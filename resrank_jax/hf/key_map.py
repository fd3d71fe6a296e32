"""The strict HF <-> NNX parameter key map, one table per family, used for import and export.

A rule names the HF tensor, the NNX state path, whether the tensor is a torch ``Linear``
weight (``[out, in]``, transposed to a Flax kernel ``[in, out]``), and, for decoders with
scanned layers, which index of the param's leading layer axis the per-layer HF tensor is.
"""

from __future__ import annotations

import dataclasses

from resrank_jax.models.config import BackboneConfig, BertConfig, DecoderConfig

# Non-parameter buffers that some HF checkpoints carry; they are dropped on import.
IGNORED_HF_KEYS = ("embeddings.position_ids", "rotary_emb.inv_freq")

StatePath = tuple[str | int, ...]


@dataclasses.dataclass(frozen=True)
class KeyRule:
    """HF tensor ``hf`` <-> NNX param ``path``; ``layer``: the index on the param's leading
    layer axis (scanned layers: import stacks the per-layer tensors, export slices them)."""

    hf: str
    path: StatePath
    transpose: bool = False
    layer: int | None = None


def _linear(hf: str, path: StatePath, bias: bool = False) -> list[KeyRule]:
    rules = [KeyRule(f"{hf}.weight", (*path, "kernel"), transpose=True)]
    if bias:
        rules.append(KeyRule(f"{hf}.bias", (*path, "bias")))
    return rules


def decoder_rules(cfg: DecoderConfig, prefix: str = "model.") -> list[KeyRule]:
    """Rules for the decoders (Qwen3, Qwen2, Llama, Mistral, Gemma 3). ``prefix`` is
    ``model.`` for *ForCausalLM files."""
    rules = [
        KeyRule(f"{prefix}embed_tokens.weight", ("embed_tokens", "embedding")),
        KeyRule(f"{prefix}norm.weight", ("norm", "weight")),
    ]
    for i in range(cfg.num_layers):
        rules += _decoder_layer_rules(cfg, f"{prefix}layers.{i}", i)
    if cfg.has_lm_head and not cfg.tie_word_embeddings:
        rules += _linear("lm_head", ("lm_head",))
    return rules


def _decoder_layer_rules(cfg: DecoderConfig, hf: str, i: int) -> list[KeyRule]:
    """Rules of decoder layer ``i``: paths under ``("layers", i)`` when unrolled; under
    ``("layers",)`` at ``layer=i`` when scanned."""
    p = ("layers", i)
    rules = [
        KeyRule(f"{hf}.input_layernorm.weight", (*p, "input_layernorm", "weight")),
        KeyRule(
            f"{hf}.post_attention_layernorm.weight", (*p, "post_attention_layernorm", "weight")
        ),
    ]
    if cfg.sandwich_norms:
        for name in ("pre_feedforward_layernorm", "post_feedforward_layernorm"):
            rules.append(KeyRule(f"{hf}.{name}.weight", (*p, name, "weight")))
    for name in ("q_proj", "k_proj", "v_proj"):
        rules += _linear(f"{hf}.self_attn.{name}", (*p, "self_attn", name), bias=cfg.qkv_bias)
    rules += _linear(f"{hf}.self_attn.o_proj", (*p, "self_attn", "o_proj"))
    if cfg.qk_norm:
        for name in ("q_norm", "k_norm"):
            rules.append(
                KeyRule(f"{hf}.self_attn.{name}.weight", (*p, "self_attn", name, "weight"))
            )
    for name in ("gate_proj", "up_proj", "down_proj"):
        rules += _linear(f"{hf}.mlp.{name}", (*p, "mlp", name))
    if not cfg.scan_layers:
        return rules
    return [dataclasses.replace(r, path=("layers", *r.path[2:]), layer=i) for r in rules]


def _layer_norm(hf: str, path: StatePath) -> list[KeyRule]:
    return [KeyRule(f"{hf}.weight", (*path, "scale")), KeyRule(f"{hf}.bias", (*path, "bias"))]


def bert_rules(cfg: BertConfig, prefix: str = "") -> list[KeyRule]:
    """Rules for ``BertModel`` files (``prefix`` is ``bert.`` inside task-head checkpoints)."""
    e = f"{prefix}embeddings"
    rules = [
        KeyRule(f"{e}.word_embeddings.weight", ("word_embeddings", "embedding")),
        KeyRule(f"{e}.position_embeddings.weight", ("position_embeddings", "embedding")),
        KeyRule(f"{e}.token_type_embeddings.weight", ("token_type_embeddings", "embedding")),
        *_layer_norm(f"{e}.LayerNorm", ("embeddings_norm",)),
    ]
    for i in range(cfg.num_layers):
        hf, p = f"{prefix}encoder.layer.{i}", ("layers", i)
        for name in ("query", "key", "value"):
            rules += _linear(f"{hf}.attention.self.{name}", (*p, name), bias=True)
        rules += _linear(f"{hf}.attention.output.dense", (*p, "attention_output"), bias=True)
        rules += _layer_norm(f"{hf}.attention.output.LayerNorm", (*p, "attention_norm"))
        rules += _linear(f"{hf}.intermediate.dense", (*p, "intermediate"), bias=True)
        rules += _linear(f"{hf}.output.dense", (*p, "output"), bias=True)
        rules += _layer_norm(f"{hf}.output.LayerNorm", (*p, "output_norm"))
    if cfg.add_pooler:
        rules += _linear(f"{prefix}pooler.dense", ("pooler",), bias=True)
    return rules


def rules_for(cfg: BackboneConfig, prefix: str) -> list[KeyRule]:
    if isinstance(cfg, BertConfig):
        return bert_rules(cfg, prefix)
    return decoder_rules(cfg, prefix)


def detect_prefix(cfg: BackboneConfig, hf_keys: set[str]) -> str:
    """The prefix the file puts before the body's keys (``model.``, ``bert.`` or none)."""
    anchor = (
        "embeddings.word_embeddings.weight"
        if isinstance(cfg, BertConfig)
        else "embed_tokens.weight"
    )
    prefixes = sorted(k[: -len(anchor)] for k in hf_keys if k.endswith(anchor))
    if len(prefixes) != 1:
        raise KeyError(
            f"cannot find exactly one '{anchor}' tensor in the checkpoint "
            f"(found {prefixes or 'none'})"
        )
    return prefixes[0]
