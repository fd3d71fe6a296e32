"""The flags that choose a ranker and its weights, shared by ``resrank eval`` and ``resrank
rerank``."""

from __future__ import annotations

import argparse


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
    keywords, e.g. ``window``)."""
    from resrank_jax.rerank.factory import build_ranker

    return build_ranker(
        args.ranker,
        checkpoint=args.checkpoint,
        model=args.model,
        reranker=args.reranker,
        passage_max_length=args.passage_max_length,
        dtype=args.dtype,
        **options,
    )
