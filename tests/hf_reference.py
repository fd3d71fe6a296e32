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


def make_tiny_hf(family: str, out_dir: Path, *, tie: bool, seed: int = 0):
    """Saves a random ``*ForCausalLM`` of ``family`` (qwen3 / qwen2 / llama) and returns it.

    Every parameter (norm scales and biases included) is randomised so that a wrong key
    mapping cannot hide behind an init of ones or zeros.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    kw = dict(TINY, tie_word_embeddings=tie, rope_theta=10000.0 if family == "llama" else 1e6)
    if family == "qwen3":
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**kw))
    elif family == "qwen2":
        kw.pop("head_dim")
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kw))
    elif family == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kw))
    else:
        raise ValueError(family)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
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
