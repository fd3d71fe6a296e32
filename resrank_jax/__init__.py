"""resrank_jax: embedding-based listwise rerankers (ResRank, E2Rank) in JAX / Flax NNX."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The public names, imported on first use (PEP 562): importing the package (or its CLI layer,
# so that ``resrank --help`` answers at once) does not import JAX.
_EXPORTS = {
    "LOGICAL_AXIS_RULES": "resrank_jax.sharding",
    "PRESETS": "resrank_jax.models.config",
    "BertConfig": "resrank_jax.models.config",
    "DecoderConfig": "resrank_jax.models.config",
    "TextTokenizer": "resrank_jax.tokenizer",
    "export_hf": "resrank_jax.hf.export",
    "init_backbone": "resrank_jax.models.build",
    "load_backbone": "resrank_jax.hf.load",
    "make_mesh": "resrank_jax.sharding",
    # rankers and trained-reranker artifacts
    "Candidate": "resrank_jax.rerank.base",
    "Ranker": "resrank_jax.rerank.base",
    "RerankResult": "resrank_jax.rerank.base",
    "ModelRanker": "resrank_jax.rerank.model_ranker",
    "build_ranker": "resrank_jax.rerank.factory",
    "export_artifact": "resrank_jax.artifact",
    "load_artifact": "resrank_jax.artifact",
    "load_ranker": "resrank_jax.artifact",
}

__all__ = [
    "LOGICAL_AXIS_RULES",
    "PRESETS",
    "BertConfig",
    "Candidate",
    "DecoderConfig",
    "ModelRanker",
    "Ranker",
    "RerankResult",
    "TextTokenizer",
    "build_ranker",
    "export_artifact",
    "export_hf",
    "init_backbone",
    "load_artifact",
    "load_backbone",
    "load_ranker",
    "make_mesh",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'resrank_jax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from resrank_jax.artifact import export_artifact, load_artifact, load_ranker
    from resrank_jax.hf.export import export_hf
    from resrank_jax.hf.load import load_backbone
    from resrank_jax.models.build import init_backbone
    from resrank_jax.models.config import PRESETS, BertConfig, DecoderConfig
    from resrank_jax.rerank.base import Candidate, Ranker, RerankResult
    from resrank_jax.rerank.factory import build_ranker
    from resrank_jax.rerank.model_ranker import ModelRanker
    from resrank_jax.sharding import LOGICAL_AXIS_RULES, make_mesh
    from resrank_jax.tokenizer import TextTokenizer
