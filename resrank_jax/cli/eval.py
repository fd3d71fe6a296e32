"""Rerank candidate sets and report IR metrics. Thin wrapper over resrank_jax.evaluation.

    resrank eval --candidates FILE [--corpus FILE] --qrels FILE --ranker NAME
                 [--model SOURCE] [--run-out FILE] [--metrics-json FILE] [--rel-level N]

``python eval.py ...`` in a checkout is the same command. Repeat --candidates/--qrels (and
--corpus, --name) to evaluate several datasets in one table. ``data/...`` paths read the
packaged DL19 / SciFact copies from any directory (``resrank_jax.data.bundled``);
``irds:<id>`` reads an ir_datasets id. Input, config and file errors print one line and exit 2
(--debug: the traceback).
"""

from __future__ import annotations

import argparse
import json

from resrank_jax.cli.ranker_args import (
    add_ranker_source,
    ranker_from_args,
    save_embedding_cache,
    with_instructions,
)
from resrank_jax.data.bundled import resolve_flag
from resrank_jax.instructions import INSTRUCTIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--candidates", action="append", required=True, help="candidate JSON(L) file")
    p.add_argument("--qrels", action="append", required=True, help="TREC or BEIR qrels")
    p.add_argument("--corpus", action="append", help="corpus for candidates without text")
    p.add_argument("--name", action="append", help="dataset names (default: folder/file)")
    add_ranker_source(p)
    p.add_argument(
        "--instructions",
        help="prompt instructions: a key of resrank_jax.instructions (default: the run's, or "
        "'default' as E2Rank's released reranking uses), or 'per-dataset' for each dataset's",
    )
    p.add_argument("--max-queries", type=int, help="rank only the first N queries of each set")
    p.add_argument(
        "--rel-level",
        type=int,
        metavar="N",
        help="MRR@10, R@100 and MAP count rel >= N (default: BEIR qrels 1, TREC DL qrels 2)",
    )
    p.add_argument("--run-out", help="TREC run file (several datasets: suffixed by dataset index)")
    p.add_argument("--metrics-json", help="write the metrics as JSON here")
    p.add_argument(
        "--embedding-cache",
        help=".npz of passage embeddings for this encoder: loaded if present, updated after",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Checks across flags (``p.error``: usage and exit 2)."""
    if args.rel_level is not None and args.rel_level < 1:
        p.error(f"--rel-level must be >= 1, got {args.rel_level}")
    if args.instructions not in (None, "per-dataset", *INSTRUCTIONS):
        choices = ", ".join(("per-dataset", *INSTRUCTIONS))
        p.error(f"--instructions {args.instructions!r}: choose from {choices}")
    n = len(args.candidates)
    for flag in ("qrels", "corpus", "name"):
        given = getattr(args, flag)
        if (given is not None and len(given) not in (1, n)) or (
            flag == "qrels" and len(given) != n
        ):
            p.error(f"--{flag} given {len(given)} times for {n} --candidates")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """``eval.py``'s flags parsed and checked (``python eval.py`` / ``resrank eval``)."""
    from resrank_jax.cli import parse_subcommand

    return parse_subcommand("eval", argv)


def main(argv: list[str] | None = None) -> int:
    """Input, config and file errors: one line on stderr and status 2 (``--debug``: traceback)."""
    from resrank_jax.cli import run_subcommand

    return run_subcommand("eval", argv)


def run(args: argparse.Namespace) -> int:
    """Reads and checks every dataset first (bad input fails before a model is built)."""
    from resrank_jax.evaluation import evaluate_ranker, format_table, load_dataset
    from resrank_jax.paths import as_path

    n = len(args.candidates)
    corpora = (args.corpus * n if args.corpus and len(args.corpus) == 1 else args.corpus) or [
        None
    ] * n
    names = args.name or [None] * n
    datasets = [
        load_dataset(resolve_flag(c), resolve_flag(q), resolve_flag(k), m, rel_level=args.rel_level)
        for c, q, k, m in zip(args.candidates, args.qrels, corpora, names, strict=True)
    ]
    ranker = ranker_from_args(args)
    results = {}
    for i, dataset in enumerate(datasets):
        run_out = args.run_out if n == 1 or not args.run_out else f"{args.run_out}.{i}"
        results[dataset.name] = evaluate_ranker(
            with_instructions(ranker, args.instructions, dataset.name),
            dataset,
            max_queries=args.max_queries,
            run_out=run_out,
            progress=not args.quiet,
        )
    print(format_table(results))
    save_embedding_cache(ranker, args)
    if args.metrics_json:
        payload = next(iter(results.values())) if n == 1 else results
        as_path(args.metrics_json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0
