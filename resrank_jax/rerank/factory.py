"""Build any ranker by name from model sources (HF directory, hub id, GGUF file, packaged
weights)."""

from __future__ import annotations

from flax import nnx

from resrank_jax.hf.load import load_backbone
from resrank_jax.hf.packaged import PACKAGED, packaged_weights
from resrank_jax.models.bert import Bert
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.rerank.base import IdentityRanker, Ranker
from resrank_jax.rerank.embedding_rankers import DenseRanker, E2RankRanker, ResRankRanker
from resrank_jax.rerank.generative import GenerativeRanker

RANKERS = ("bm25", "identity", "dense", "e2rank", "resrank", "resrank-window", "generative")


def resolve_model(source: str):
    """Packaged weight names (``all-minilm-l6-v2``, ``smollm2-135m-instruct``) or any
    ``load_backbone`` source."""
    return load_backbone(packaged_weights(source) if source in PACKAGED else source)


def build_ranker(
    name: str,
    *,
    model: str | None = None,
    reranker: str | None = None,
    passage_max_length: int = 256,
    resrank_config: ResRankConfig | None = None,
) -> Ranker:
    """A ranker by name. ``model`` is the encoder (dense, e2rank, resrank) or the generator
    (generative); ``reranker`` the ResRank Reranker-LLM (default: the same source as
    ``model``). ResRank built this way is zero-shot (untrained fusion)."""
    if name not in RANKERS:
        raise ValueError(f"unknown ranker {name!r}; choose from {', '.join(RANKERS)}")
    if name in ("bm25", "identity"):
        return IdentityRanker(name)
    if model is None:
        raise ValueError(f"ranker {name!r} needs a model (--model SOURCE)")
    backbone, tokenizer = resolve_model(model)
    if tokenizer is None:
        raise ValueError(f"{model}: no tokenizer found next to the weights")
    kw = dict(passage_max_length=passage_max_length)
    if name == "dense":
        return DenseRanker(Encoder(backbone), tokenizer, **kw)
    if isinstance(backbone, Bert) and name in ("e2rank", "generative"):
        raise ValueError(f"ranker {name!r} needs a decoder LM; {model} is a BERT encoder")
    if name == "e2rank":
        return E2RankRanker(Encoder(backbone), tokenizer, **kw)
    if name == "generative":
        return GenerativeRanker(backbone, tokenizer)
    rr_backbone, rr_tokenizer = (
        (backbone, tokenizer) if reranker in (None, model) else resolve_model(reranker)
    )
    cfg = resrank_config or ResRankConfig(
        phi="rescale" if backbone.cfg.hidden_size == rr_backbone.cfg.hidden_size else "linear"
    )
    resrank = ResRank(Encoder(backbone), rr_backbone, cfg, rngs=nnx.Rngs(0))
    window = (20, 10) if name == "resrank-window" else None
    return ResRankRanker(resrank, tokenizer, rr_tokenizer, window=window, **kw)
