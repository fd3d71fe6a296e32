"""Rerank latency per query on BM25 top-100, every ranker on the same backbone and machine.

    python benchmarks/rerank_latency.py [--queries 3] [--model smollm2-135m-instruct]
        [--dtype bfloat16] [--name rerank_latency]

ResRank single pass and sliding window (20/10), E2Rank and the generative listwise baseline
(RankGPT-style, window 20/10, KV-cache greedy decoding) all use ``--model`` as encoder,
reranker and generator. Embedding rankers are timed twice: with passage embeddings computed
per query ("cold") and with a warm cache ("cached", as when the dense index already holds
them). Each embedding ranker first ranks every query once untimed, so no prompt-length
bucket compiles inside a timed query (the generative baseline: one warm-up query). Writes
``benchmarks/results/rerank_latency.json`` with median seconds per query, token counts and
``speedup_vs_generative`` for ResRank single pass (``--name`` changes the file name).
Beside one query at a time (``median_s_per_query``, ``queries_per_s``), the embedding
rankers are timed on all timed queries in ``rank_batch`` calls (``batched_queries_per_s``:
``max_batch`` = 8 lists per jitted call), cold and cached; ``--rankers`` picks a subset.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, write_result
from resrank_jax.data.formats import read_candidates
from resrank_jax.models.config import ResRankConfig
from resrank_jax.rerank.encode import EmbeddingCache
from resrank_jax.rerank.factory import build_ranker

ROOT = Path(__file__).resolve().parent.parent


def time_ranker(ranker, queries, *, cached: bool) -> dict:
    """Seconds per query, one ``rank`` call each. Embedding rankers first rank every query
    untimed: each query's prompt-length bucket is compiled (and, ``cached``, its passages
    cached) outside the timing; the generative baseline warms up on the first query only."""
    embedding = hasattr(ranker, "cache")
    for qc in queries if embedding else queries[:1]:
        ranker.rank(qc.query, qc.candidates)
    seconds, stats = [], {}
    for qc in queries[1:]:
        if embedding and not cached:
            ranker.cache = EmbeddingCache()
        start = time.perf_counter()
        ranking = ranker.rank(qc.query, qc.candidates)
        seconds.append(time.perf_counter() - start)
        for key, value in ranking.stats.items():
            stats[key] = stats.get(key, 0) + value
    n = len(seconds)
    return {
        "median_s_per_query": statistics.median(seconds),
        "queries_per_s": n / sum(seconds),
        "queries_timed": n,
        **{f"{k}_per_query": v / n for k, v in stats.items()},
    }


def time_batched(ranker, queries, *, cached: bool) -> dict:
    """All timed queries in ``rank_batch`` calls of ``ranker.max_batch`` lists (after one
    untimed call that compiles the shapes and, when ``cached``, fills the cache)."""
    timed = queries[1:]
    lists = ([qc.query for qc in timed], [qc.candidates for qc in timed])
    ranker.rank_batch(*lists)
    if not cached:
        ranker.cache = EmbeddingCache()
    start = time.perf_counter()
    ranker.rank_batch(*lists)
    seconds = time.perf_counter() - start
    return {
        "batched_queries_per_s": len(timed) / seconds,
        "batched_s_per_query": seconds / len(timed),
        "batch_lists": min(ranker.max_batch, len(timed)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--queries", type=int, default=8, help="timed queries (+1 warm-up)")
    p.add_argument(
        "--rankers",
        default="resrank,resrank-window,e2rank,dense,generative",
        help="comma-separated subset (generative: minutes a query on a CPU)",
    )
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--candidates", default=str(ROOT / "data/trec-dl19/candidates.jsonl"))
    p.add_argument("--top-k", type=int, default=100, help="rerank each query's first K")
    p.add_argument("--name", default="rerank_latency", help="benchmarks/results/NAME.json")
    p.add_argument("--backbone-label", help="what --model is, for the JSON (default: --model)")
    args = p.parse_args()
    queries = [
        dataclasses.replace(qc, candidates=qc.candidates[: args.top_k])
        for qc in read_candidates(args.candidates)[: args.queries + 1]
    ]
    kw = dict(model=args.model, passage_max_length=args.passage_max_length, dtype=args.dtype)
    same_width = ResRankConfig(phi="rescale")
    results = {}
    plan = [
        ("resrank", True),
        ("resrank", False),
        ("resrank-window", True),
        ("e2rank", True),
        ("e2rank", False),
        ("dense", True),
        ("dense", False),
        ("generative", False),
    ]
    chosen = args.rankers.split(",")
    for name, cached in (step for step in plan if step[0] in chosen):
        ranker = build_ranker(name, resrank_config=same_width, **kw)
        label = f"{ranker.name}" + (
            "" if name == "generative" else " (cached)" if cached else " (cold)"
        )
        results[label] = time_ranker(ranker, queries, cached=cached)
        if name != "generative":  # the generative baseline has no batched call
            results[label] |= time_batched(ranker, queries, cached=cached)
        print(label, results[label])
    speedups = {}
    if "generative" in chosen and "resrank" in chosen:
        generative = results["generative-window20/10"]["median_s_per_query"]
        speedups = {
            "speedup_vs_generative": generative / results["resrank (cached)"]["median_s_per_query"],
            "speedup_vs_generative_cold": generative
            / results["resrank (cold)"]["median_s_per_query"],
        }
    payload = {
        "benchmark": "rerank_latency",
        "device": device_name(),
        "backbone": args.backbone_label or args.model,
        "dtype": args.dtype,
        "candidates_per_query": len(queries[0].candidates),
        "passage_max_length": args.passage_max_length,
        "rankers": results,
        **speedups,
    }
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
