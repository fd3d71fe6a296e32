"""The flags that choose a ranker and its weights, shared by ``resrank eval``, ``rerank``,
``index`` and ``serve``, and what every one of them does with them."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_ranker_source(
    p: argparse.ArgumentParser | argparse._ArgumentGroup, default_ranker: str | None = None
) -> None:
    """``--ranker`` (required unless ``default_ranker``), ``--checkpoint`` or ``--model``,
    ``--reranker``, ``--dtype`` and ``--passage-max-length``."""
    from resrank_jax.rerank.factory import RANKERS

    p.add_argument(
        "--ranker",
        required=default_ranker is None,
        default=default_ranker,
        choices=RANKERS,
        help=f"default {default_ranker}" if default_ranker else None,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a training run directory (latest checkpoint)")
    source.add_argument(
        "--model",
        help="encoder / generator: HF dir, hub id, .gguf, packaged name, or a directory "
        "written by `resrank export`",
    )
    p.add_argument("--reranker", help="ResRank Reranker-LLM source (default: --model)")
    p.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16"),
        help="params and compute of --model/--reranker (an artifact keeps its own)",
    )
    p.add_argument(
        "--passage-max-length",
        type=int,
        help="encoder tokens per passage (default: a run's own recipe; 256 for --model)",
    )


def ranker_from_args(args: argparse.Namespace, **options):
    """The ranker the flags of ``add_ranker_source`` name (``options``: more ``build_ranker``
    keywords, e.g. ``window``); a ``ModelRanker`` also gets the command's ``--batch-size``
    and the vectors of its ``--embedding-cache`` file when present (refused if another encoder
    or length made them)."""
    from resrank_jax.rerank.encode import EmbeddingCache
    from resrank_jax.rerank.factory import build_ranker
    from resrank_jax.rerank.model_ranker import ModelRanker

    ranker = build_ranker(
        args.ranker,
        checkpoint=args.checkpoint,
        model=args.model,
        reranker=args.reranker,
        passage_max_length=args.passage_max_length,
        dtype=args.dtype,
        **options,
    )
    if isinstance(ranker, ModelRanker):
        ranker.batch_size = getattr(args, "batch_size", None) or ranker.batch_size
        cache_file = getattr(args, "embedding_cache", None)
        if cache_file and Path(cache_file).exists():
            ranker.cache = EmbeddingCache.load(cache_file, expect=ranker.encoder_key)
    return ranker


def save_embedding_cache(ranker, args: argparse.Namespace) -> None:
    """Writes the passage vectors of a ``ModelRanker`` to ``--embedding-cache`` (if given and
    the cache holds any)."""
    from resrank_jax.rerank.model_ranker import ModelRanker

    if args.embedding_cache and isinstance(ranker, ModelRanker) and len(ranker.cache):
        ranker.cache.save(args.embedding_cache)


def with_instructions(ranker, choice: str | None, dataset_name: str):
    """``ranker`` with the instructions ``--instructions`` asks for on ``dataset_name``
    (``per-dataset``: the dataset's own)."""
    from resrank_jax.instructions import dataset_key

    if choice is None:
        return ranker
    return ranker.for_dataset(dataset_key(dataset_name) if choice == "per-dataset" else choice)
