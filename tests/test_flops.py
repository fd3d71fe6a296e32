"""Model FLOPs (resrank_jax.flops) against hand counts from the config fields."""

import numpy as np
import pytest

from resrank_jax.flops import Tower, step_flops
from resrank_jax.models.build import abstract_backbone, param_count
from resrank_jax.models.config import PRESETS, BertConfig, DecoderConfig

# Qwen3-style decoder with an untied LM head: d=8, f=12, 2 layers, 4 heads x 4, 2 kv heads.
DECODER = DecoderConfig(
    family="qwen3",
    vocab_size=100,
    hidden_size=8,
    intermediate_size=12,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=4,
    qk_norm=True,
    tie_word_embeddings=False,
)
# BERT with a pooler: d=8, f=16, 1 layer, 2 heads x 4.
BERT = BertConfig(
    vocab_size=50,
    hidden_size=8,
    intermediate_size=16,
    num_layers=1,
    num_heads=2,
    max_position_embeddings=16,
)
# q 8x16, k and v 8x8, o 16x8, q/k norms 4 each, SwiGLU 3 x 8x12, two RMSNorms 8 each.
DECODER_LAYER = 8 * 16 + 2 * 8 * 8 + 16 * 8 + 2 * 4 + 3 * 8 * 12 + 2 * 8  # 696
DECODER_PARAMS = 2 * DECODER_LAYER + 8  # + final norm = 1,400 (no embed_tokens, no lm_head)
# q/k/v/out 8x8 + bias, intermediate 8x16 + 16, output 16x8 + 8, two LayerNorms 2 x 8 each.
BERT_LAYER = 4 * (8 * 8 + 8) + (8 * 16 + 16) + (16 * 8 + 8) + 2 * 2 * 8  # 600
BERT_PARAMS = BERT_LAYER + 2 * 8  # + embeddings LayerNorm = 616 (no tables, no pooler)


# B=2 lists of K=3 passages of 5 tokens, queries of 4, prompts of 10 tokens.
BATCH = {
    "passage_ids": np.zeros((2, 3, 5), np.int32),
    "query_ids": np.zeros((2, 4), np.int32),
    "prompt_ids": np.zeros((2, 10), np.int32),
}


def test_towers_count_non_embedding_params():
    assert DECODER_PARAMS == 1400 and BERT_PARAMS == 616
    assert Tower.of(abstract_backbone(DECODER)) == Tower(1400, 2, 4, 4, causal=True)
    assert Tower.of(abstract_backbone(BERT)) == Tower(616, 1, 2, 4, causal=False)
    # the excluded params are the tables (+ lm_head, pooler) of the totals
    assert param_count(DECODER) == 1400 + 2 * 100 * 8
    assert param_count(BERT) == 616 + (50 + 16 + 2) * 8 + 8 * 8 + 8


def test_resrank_step_flops_by_hand():
    bert, decoder = Tower.of(abstract_backbone(BERT)), Tower.of(abstract_backbone(DECODER))
    # BERT over 6 passages x 5 and 2 queries x 4 tokens: 6 x 616 x tokens + bidirectional
    # attention 12 x 1 layer x 2 heads x 4 = 96 per sequence x length^2
    passages = 6 * 616 * 30 + 96 * 5**2 * 6  # 110,880 + 14,400
    queries = 6 * 616 * 8 + 96 * 4**2 * 2  # 29,568 + 3,072
    # decoder over 2 prompts x 10: causal attention 6 x 2 layers x 4 heads x 4 = 192
    prompts = 6 * 1400 * 20 + 192 * 10**2 * 2  # 168,000 + 38,400
    assert passages + queries + prompts == 364_320
    assert step_flops(BATCH, bert, decoder) == 364_320


def test_e2rank_step_flops_by_hand():
    decoder = Tower.of(abstract_backbone(DECODER))
    passages = 6 * 1400 * 30 + 192 * 5**2 * 6  # 252,000 + 28,800
    queries = 6 * 1400 * 8 + 192 * 4**2 * 2  # 67,200 + 6,144
    pseudo_query = 6 * 1400 * 20 + 192 * 10**2 * 2  # 168,000 + 38,400
    assert passages + queries + pseudo_query == 560_544
    assert step_flops(BATCH, decoder, decoder) == 560_544


@pytest.mark.parametrize(("name", "tables"), [("qwen3-0.6b", 1), ("qwen3-8b", 2)])
def test_published_presets_exclude_embeddings(name, tables):
    """Qwen3-0.6B ties its LM head to the embedding table; Qwen3-8B has a separate one."""
    cfg = PRESETS[name]
    expected = param_count(cfg) - tables * 151936 * cfg.hidden_size
    assert Tower.of(abstract_backbone(cfg)).params == expected
    if name == "qwen3-0.6b":
        assert expected == 596_049_920 - 151936 * 1024 == 440_467_456
