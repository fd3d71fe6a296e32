"""One experiment: train a preset on SciFact train, then rerank BM25 top-100 of TREC DL19 and
SciFact test with what it trained, next to the BM25 order and the zero-shot MiniLM encoder.

    python -m resrank_jax.apps.experiment --preset smollm2-135m --output-dir runs/exp \\
        [--dl19-queries N] [--scifact-queries N] [--passage-max-length L] [key=value ...]

Rerunning resumes the training run (and reuses a finished one) and recomputes the metrics.
Writes ``results.json`` (config, seed, wall times, every metric) and ``results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from resrank_jax.config import config_to_json, resolve_config
from resrank_jax.data.bundled import data_dir
from resrank_jax.evaluation import Dataset, evaluate_ranker, format_table, load_dataset
from resrank_jax.rerank.base import IdentityRanker, Ranker
from resrank_jax.rerank.factory import build_ranker, run_rankers
from resrank_jax.train.loop import run_training


def eval_datasets(dl19_queries: int = 0, scifact_queries: int = 0) -> list[tuple[Dataset, int]]:
    """DL19 and SciFact test (BM25 top-100) with how many queries to rank (0: all), from the
    packaged data (or ``$RESRANK_DATA``)."""
    DATA = data_dir()
    dl19 = load_dataset(
        DATA / "trec-dl19/candidates.jsonl", DATA / "trec-dl19/qrels.txt", name="DL19"
    )
    scifact = load_dataset(
        DATA / "scifact/candidates.test.jsonl",
        DATA / "scifact/qrels.test.txt",
        DATA / "scifact/corpus.jsonl",
        name="SciFact-test",
    )
    return [(dl19, dl19_queries), (scifact, scifact_queries)]


def baseline_rankers(passage_max_length: int) -> list[tuple[str, Ranker]]:
    """The BM25 order and zero-shot MiniLM dense reranking."""
    dense = build_ranker("dense", model="all-minilm-l6-v2", passage_max_length=passage_max_length)
    return [("bm25", IdentityRanker("bm25")), ("dense (zero-shot MiniLM)", dense)]


def trained_rankers(run_dir: str | Path, passage_max_length: int) -> list[tuple[str, Ranker]]:
    """The rankers a finished training run gives, with the run's recipe: its encoder alone
    (dense) and its full model (ResRank single pass, or E2Rank), sharing one cache."""
    rankers = run_rankers(str(run_dir), passage_max_length)
    own = next(name for name in rankers if name != "dense")
    label = "resrank (trained, single pass)" if own == "resrank" else f"{own} (trained)"
    return [("dense (trained encoder)", rankers["dense"]), (label, rankers[own])]


def evaluate_rankers(
    rankers: list[tuple[str, Ranker]], datasets: list[tuple[Dataset, int]]
) -> dict[str, dict[str, dict]]:
    """``{dataset: {ranker: metrics}}`` over each dataset's first ``n`` queries (0: all)."""
    out: dict[str, dict[str, dict]] = {}
    for dataset, n in datasets:
        for name, ranker in rankers:
            m = evaluate_ranker(ranker, dataset, max_queries=n or None)
            out.setdefault(dataset.name, {})[name] = {**m, "ranker": name}
    return out


def run_experiment(
    preset: str,
    overrides: list[str],
    output_dir: str | Path,
    *,
    dl19_queries: int = 0,
    scifact_queries: int = 0,
    passage_max_length: int = 128,
    baselines: bool = True,
) -> dict:
    """Trains (or resumes) ``preset`` in ``output_dir/train`` and evaluates it; returns and
    writes the results."""
    out = Path(output_dir)
    cfg = resolve_config(preset, overrides)
    started = time.perf_counter()
    train_summary = run_training(cfg, out / "train")
    train_s = time.perf_counter() - started
    rankers = trained_rankers(out / "train", passage_max_length)
    if baselines:
        rankers = baseline_rankers(passage_max_length) + rankers
    metrics = evaluate_rankers(rankers, eval_datasets(dl19_queries, scifact_queries))
    results = {
        "preset": preset,
        "overrides": overrides,
        "seed": cfg.seed,
        "config": json.loads(config_to_json(cfg)),
        "train": train_summary,
        "train_seconds_this_call": train_s,
        "eval_seconds": time.perf_counter() - started - train_s,
        "passage_max_length": passage_max_length,
        "metrics": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    rows = {
        f"{ds} ({m['queries']} q) / {name}": m
        for ds, by in metrics.items()
        for name, m in by.items()
    }
    (out / "results.md").write_text(format_table(rows) + "\n")
    print(format_table(rows))
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--dl19-queries", type=int, default=0, help="first N DL19 queries (0: all 43)")
    p.add_argument("--scifact-queries", type=int, default=0, help="first N (0: all 300)")
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("--no-baselines", action="store_true", help="skip BM25 and zero-shot dense")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. steps=200")
    args = p.parse_args(argv)
    run_experiment(
        args.preset,
        args.overrides,
        args.output_dir,
        dl19_queries=args.dl19_queries,
        scifact_queries=args.scifact_queries,
        passage_max_length=args.passage_max_length,
        baselines=not args.no_baselines,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
