"""Rerank candidate sets and report IR metrics. Thin wrapper over resrank_jax.evaluation.

    python eval.py --candidates FILE [--corpus FILE] --qrels FILE --ranker NAME
                   [--model SOURCE] [--run-out FILE] [--metrics-json FILE]

Repeat --candidates/--qrels (and --corpus, --name) to evaluate several datasets in one table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resrank_jax.evaluation import evaluate_ranker, format_table, load_dataset
from resrank_jax.rerank.encode import EmbeddingCache
from resrank_jax.rerank.factory import RANKERS, build_ranker


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", action="append", required=True, help="candidate JSON(L) file")
    p.add_argument("--qrels", action="append", required=True, help="TREC or BEIR qrels")
    p.add_argument("--corpus", action="append", help="corpus for candidates without text")
    p.add_argument("--name", action="append", help="dataset names (default: folder/file)")
    p.add_argument("--ranker", required=True, choices=RANKERS)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", help="a train.py output directory (latest checkpoint)")
    source.add_argument(
        "--model", help="encoder / generator: HF dir, hub id, .gguf, or packaged name"
    )
    p.add_argument("--reranker", help="ResRank Reranker-LLM source (default: --model)")
    p.add_argument("--passage-max-length", type=int, default=256)
    p.add_argument("--max-queries", type=int, help="rank only the first N queries of each set")
    p.add_argument("--run-out", help="TREC run file (several datasets: suffixed by dataset index)")
    p.add_argument("--metrics-json", help="write the metrics as JSON here")
    p.add_argument(
        "--embedding-cache",
        help=".npz of passage embeddings for this encoder: loaded if present, updated after",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    n = len(args.candidates)
    for flag in ("qrels", "corpus", "name"):
        given = getattr(args, flag)
        if (given is not None and len(given) not in (1, n)) or (
            flag == "qrels" and len(given) != n
        ):
            p.error(f"--{flag} given {len(given)} times for {n} --candidates")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    n = len(args.candidates)
    corpora = (args.corpus * n if args.corpus and len(args.corpus) == 1 else args.corpus) or [
        None
    ] * n
    names = args.name or [None] * n
    datasets = [
        load_dataset(c, q, k, m)
        for c, q, k, m in zip(args.candidates, args.qrels, corpora, names, strict=True)
    ]
    ranker = build_ranker(
        args.ranker,
        checkpoint=args.checkpoint,
        model=args.model,
        reranker=args.reranker,
        passage_max_length=args.passage_max_length,
    )
    cache = getattr(ranker, "cache", None)
    if args.embedding_cache and cache is not None and Path(args.embedding_cache).exists():
        ranker.cache = EmbeddingCache.load(args.embedding_cache)
    results = {}
    for i, dataset in enumerate(datasets):
        run_out = args.run_out if n == 1 or not args.run_out else f"{args.run_out}.{i}"
        results[dataset.name] = evaluate_ranker(
            ranker, dataset, max_queries=args.max_queries, run_out=run_out, progress=not args.quiet
        )
    print(format_table(results))
    if args.embedding_cache and cache is not None:
        ranker.cache.save(args.embedding_cache)
    if args.metrics_json:
        payload = next(iter(results.values())) if n == 1 else results
        Path(args.metrics_json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
