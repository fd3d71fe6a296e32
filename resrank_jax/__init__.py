"""resrank_jax: embedding-based listwise rerankers (ResRank, E2Rank) in JAX / Flax NNX."""

from resrank_jax.hf.export import export_hf
from resrank_jax.hf.load import load_backbone
from resrank_jax.models.build import init_backbone
from resrank_jax.models.config import PRESETS, BertConfig, DecoderConfig
from resrank_jax.sharding import LOGICAL_AXIS_RULES, make_mesh
from resrank_jax.tokenizer import TextTokenizer

__all__ = [
    "LOGICAL_AXIS_RULES",
    "PRESETS",
    "BertConfig",
    "DecoderConfig",
    "TextTokenizer",
    "export_hf",
    "init_backbone",
    "load_backbone",
    "make_mesh",
]
