"""Tiny randomly initialised models shared by the model tests (no downloads, fast compiles)."""

from __future__ import annotations

import numpy as np
from flax import nnx

from resrank_jax import init_backbone
from resrank_jax.models.config import BertConfig, DecoderConfig, ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.prompts import SlotPrompt, pad_slot_prompts

VOCAB = 64
TINY_DECODER = DecoderConfig(
    family="qwen3",
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qk_norm=True,
)
# Gemma 3-shaped: sliding, full, sliding layers (own RoPE bases), the four norms per layer,
# (1 + w) norms, scaled embeddings, GeGLU, a query scale that is not head_dim**-0.5.
TINY_GEMMA3 = TINY_DECODER.replace(
    family="gemma3",
    num_layers=3,
    sliding_window=3,
    layer_types=("sliding", "full", "sliding"),
    local_rope_theta=10000.0,
    norm_plus_one=True,
    scale_embeddings=True,
    sandwich_norms=True,
    mlp_activation="gelu_tanh",
    query_pre_attn_scalar=12,
)
TINY_BERT = BertConfig(
    vocab_size=VOCAB, hidden_size=24, intermediate_size=48, num_layers=1, num_heads=2
)


def tiny_resrank(cfg: ResRankConfig | None = None, *, bert_encoder: bool = False, seed: int = 0):
    enc_cfg = TINY_BERT if bert_encoder else TINY_DECODER
    encoder = Encoder(init_backbone(enc_cfg, seed=seed + 1))
    reranker = init_backbone(TINY_DECODER, seed=seed + 2)
    return ResRank(encoder, reranker, cfg or ResRankConfig(), rngs=nnx.Rngs(seed))


def synthetic_batch(n_per_query=(3, 2), passage_len=5, prompt_len=7, seed=0):
    """Random passages ``[B, N, Lp]`` and slot prompts: ``prompt_len`` query tokens, then one
    slot per passage, then 3 closing query tokens (the ResRank layout)."""
    rng = np.random.default_rng(seed)
    b, n = len(n_per_query), max(n_per_query)
    passages = rng.integers(1, VOCAB, (b, n, passage_len)).astype(np.int32)
    passage_mask = np.ones((b, n, passage_len), np.int32)
    passage_mask[:, :, :1] = 0  # left padding
    prompts = []
    for k in n_per_query:
        ids = list(rng.integers(1, VOCAB, prompt_len))
        slots = []
        for _ in range(k):
            slots.append(len(ids))
            ids.append(0)
        ids += list(rng.integers(1, VOCAB, 3))
        prompts.append(SlotPrompt([int(i) for i in ids], slots))
    batch = pad_slot_prompts(prompts, pad_id=0)
    return passages, passage_mask, batch
