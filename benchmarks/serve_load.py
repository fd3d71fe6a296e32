"""Bounded load test of `resrank serve`: a fixed number of requests from concurrent clients.

    python benchmarks/serve_load.py [--requests 200] [--clients 8] [--candidates 100]
        [--max-batch 8] [--max-wait-ms 5] [--model all-minilm-l6-v2] [--name serve]

Serves the dense ranker of ``--model`` in-process on 127.0.0.1 (``resrank_jax.serve``, uvicorn
on a thread) and sends DL19 queries with their first ``--candidates`` BM25 candidates as
rank_llm requests over HTTP (httpx). A first pass, one request per distinct query from one
client, is timed apart ("cold": compilation and passage encoding); then ``--requests``
requests (the queries in turn) from ``--clients`` client threads are timed ("warm": cached
passage vectors). Writes ``benchmarks/results/NAME.json``: the machine, the config, p50/p99/
mean latency per request, requests/s, the batches the micro-batcher formed and the errors.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx
import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, write_result
from resrank_jax.data.formats import QueryCandidates, read_candidates
from resrank_jax.rerank.factory import build_ranker
from resrank_jax.serve import create_app, serve_in_thread

ROOT = Path(__file__).resolve().parent.parent


def request_body(qc: QueryCandidates) -> dict:
    """A rank_llm request of a query and its candidates."""
    return {
        "query": {"text": qc.query, "qid": qc.qid},
        "candidates": [{"docid": c.docid, "score": c.score, "doc": c.text} for c in qc.candidates],
    }


def summary(latencies: list[float], seconds: float, errors: int) -> dict:
    """Latency percentiles (ms), throughput and errors of a pass."""
    ms = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "requests_per_s": len(latencies) / seconds,
        "seconds": seconds,
    }


def load(url: str, bodies: list[dict], n_requests: int, clients: int) -> dict:
    """Sends ``n_requests`` (``bodies`` in turn) from ``clients`` threads, each with its own
    connection; returns ``summary`` plus the mean batch size the requests were ranked in."""
    counter, lock = itertools.count(), threading.Lock()
    latencies, batch_sizes, errors = [], [], []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while (i := next(counter)) < n_requests:
                start = time.perf_counter()
                try:
                    response = http.post("/rerank", json=bodies[i % len(bodies)])
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    latencies.append(time.perf_counter() - start)
                    if ok:
                        batch_sizes.append(response.json()["stats"]["batch_size"])
                    else:
                        errors.append(i)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    mean_batch = statistics.fmean(batch_sizes) if batch_sizes else 0.0
    return {**summary(latencies, seconds, len(errors)), "mean_batch_size": mean_batch}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all-minilm-l6-v2")
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--requests", type=int, default=200, help="timed requests (warm)")
    p.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    p.add_argument("--candidates", type=int, default=100, help="candidates per request")
    p.add_argument("--queries", type=int, help="distinct DL19 queries (default: all)")
    p.add_argument("--max-batch", type=int, default=8)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--data", default=str(ROOT / "data/trec-dl19/candidates.jsonl"))
    p.add_argument("--name", default="serve", help="benchmarks/results/NAME.json")
    args = p.parse_args()

    queries = read_candidates(args.data)[: args.queries]
    bodies = [
        request_body(QueryCandidates(q.qid, q.query, q.candidates[: args.candidates]))
        for q in queries
    ]
    ranker = build_ranker("dense", model=args.model, passage_max_length=args.passage_max_length)
    app = create_app(ranker, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    with serve_in_thread(app) as url:
        cold = load(url, bodies, len(bodies), clients=1)
        before = httpx.get(f"{url}/health").json()
        warm = load(url, bodies, args.requests, args.clients)
        after = httpx.get(f"{url}/health").json()
    warm["batches"] = after["batches"] - before["batches"]
    payload = {
        "benchmark": "serve_load",
        "device": device_name(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "jax_backend": jax.default_backend(),
        },
        "config": {
            "ranker": ranker.name,
            "model": args.model,
            "passage_max_length": args.passage_max_length,
            "candidates_per_request": len(bodies[0]["candidates"]),
            "distinct_queries": len(bodies),
            "clients": args.clients,
            "max_batch": args.max_batch,
            "max_wait_ms": args.max_wait_ms,
        },
        "cold": cold,
        "warm": warm,
        "cached_passages": after["cached_passages"],
    }
    print(f"cold: {cold}\nwarm: {warm}")
    print(f"wrote {write_result(args.name, payload)}")


if __name__ == "__main__":
    main()
