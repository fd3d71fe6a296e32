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


def resolve_model(source: str, dtype: str = "float32"):
    """Packaged weight names (``all-minilm-l6-v2``, ``smollm2-135m-instruct``) or any
    ``load_backbone`` source, with params and compute in ``dtype``."""
    path = packaged_weights(source) if source in PACKAGED else source
    return load_backbone(path, dtype=dtype, param_dtype=dtype)


def build_ranker(
    name: str,
    *,
    checkpoint: str | None = None,
    model: str | None = None,
    reranker: str | None = None,
    passage_max_length: int = 256,
    resrank_config: ResRankConfig | None = None,
    dtype: str = "float32",
) -> Ranker:
    """A ranker by name. ``model`` is the encoder (dense, e2rank, resrank) or the generator
    (generative); ``reranker`` the ResRank Reranker-LLM (default: the same source as
    ``model``). ``dtype`` (``float32``/``bfloat16``) is the params' and compute dtype of
    ``model``/``reranker``. ResRank built this way is zero-shot (untrained fusion)."""
    if name not in RANKERS:
        raise ValueError(f"unknown ranker {name!r}; choose from {', '.join(RANKERS)}")
    if name in ("bm25", "identity"):
        return IdentityRanker(name)
    if checkpoint is not None:
        return ranker_from_run(name, checkpoint, passage_max_length)
    if model is None:
        raise ValueError(f"ranker {name!r} needs --model SOURCE or --checkpoint DIR")
    backbone, tokenizer = resolve_model(model, dtype)
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
        (backbone, tokenizer) if reranker in (None, model) else resolve_model(reranker, dtype)
    )
    cfg = resrank_config or ResRankConfig(
        phi="rescale" if backbone.cfg.hidden_size == rr_backbone.cfg.hidden_size else "linear"
    )
    resrank = ResRank(Encoder(backbone), rr_backbone, cfg, rngs=nnx.Rngs(0))
    window = (20, 10) if name == "resrank-window" else None
    return ResRankRanker(resrank, tokenizer, rr_tokenizer, window=window, **kw)


def ranker_from_run(name: str, run_dir: str, passage_max_length: int) -> Ranker:
    """A ranker from a training run's latest checkpoint: ``resrank``/``resrank-window`` for a
    ResRank run, ``e2rank`` for an E2Rank run, ``dense`` (the trained encoder) for both."""
    from resrank_jax.train.models import load_trained

    model, enc_tok, rr_tok, cfg = load_trained(run_dir)
    kw = dict(passage_max_length=passage_max_length)
    encoder = model.encoder if cfg.model.mode == "resrank" else model
    if name == "dense":
        return DenseRanker(encoder, enc_tok, **kw)
    if cfg.model.mode == "e2rank" and name == "e2rank":
        return E2RankRanker(model, enc_tok, **kw)
    if cfg.model.mode == "resrank" and name in ("resrank", "resrank-window"):
        window = (20, 10) if name == "resrank-window" else None
        return ResRankRanker(model, enc_tok, rr_tok, window=window, **kw)
    raise ValueError(f"a {cfg.model.mode} run cannot serve ranker {name!r}")
