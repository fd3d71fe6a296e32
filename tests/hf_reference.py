"""Tiny random HF (PyTorch) models saved to disk: the independent reference for parity tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = dict(
    vocab_size=97,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
)


# A window shorter than the test sequences (9 tokens), so sliding layers really slide.
SLIDING_WINDOW = 4
# Gemma 3: sliding, global, sliding (both RoPE bases and both masks in one model), a query
# scale that is not head_dim**-0.5.
GEMMA3 = dict(
    num_hidden_layers=3,
    layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    sliding_window=SLIDING_WINDOW,
    query_pre_attn_scalar=24,
    rope_parameters={
        "full_attention": {"rope_type": "default", "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
)


def make_tiny_hf(
    family: str,
    out_dir: Path,
    *,
    tie: bool,
    seed: int = 0,
    rope_scaling: dict | None = None,
    **overrides,
):
    """Saves a random ``*ForCausalLM`` of ``family`` (qwen3 / qwen2 / llama / mistral /
    gemma3) and returns it. ``rope_scaling``: HF RoPE parameters of a scaled type (Llama);
    ``overrides``: other config fields.

    Every parameter (norm scales and biases included) is randomised so that a wrong key
    mapping cannot hide behind an init of ones or zeros.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    kw = dict(TINY, tie_word_embeddings=tie, rope_theta=10000.0 if family == "llama" else 1e6)
    kw |= overrides
    if rope_scaling is not None:
        kw["rope_parameters"] = {"rope_theta": kw.pop("rope_theta"), **rope_scaling}
    if family == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    elif family == "qwen2":
        kw.pop("head_dim")
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    elif family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    elif family == "mistral":
        kw["sliding_window"] = SLIDING_WINDOW
        model = transformers.MistralForCausalLM(transformers.MistralConfig(**kw))
    elif family == "gemma3":
        kw.pop("rope_theta")
        config = transformers.Gemma3TextConfig(**(kw | GEMMA3))
        model = transformers.Gemma3ForCausalLM(config)
    else:
        raise ValueError(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") and family != "gemma3":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("norm.weight"):  # Gemma scales by 1 + w
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.05 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def padded_batch(vocab: int, lengths: list[int], side: str, seed: int = 0):
    """Random ids ``[B, L]`` and mask, padded on ``side`` to the longest length."""
    rng = np.random.default_rng(seed)
    length = max(lengths)
    ids = np.zeros((len(lengths), length), np.int32)
    mask = np.zeros((len(lengths), length), np.int32)
    for i, n in enumerate(lengths):
        sl = slice(length - n, length) if side == "left" else slice(0, n)
        ids[i, sl] = rng.integers(1, vocab, n)
        mask[i, sl] = 1
    return ids, mask


def hf_forward(model, ids: np.ndarray, mask: np.ndarray):
    """``(final hidden states, logits)`` of an HF causal LM, as numpy fp32."""
    import torch

    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids.astype(np.int64)),
            attention_mask=torch.from_numpy(mask.astype(np.int64)),
            output_hidden_states=True,
        )
    return out.hidden_states[-1].float().numpy(), out.logits.float().numpy()
