"""Does a trained ResRank's reranker help? Trains one preset with several seeds and ranks
DL19 and SciFact test with each seed's ResRank, its own encoder alone and zero-shot
all-MiniLM-L6-v2, with every candidate list **shuffled** (so slot position carries no
first-stage order), then reports the mean and spread over seeds and paired significance
tests on per-query nDCG@10.

    python -m resrank_jax.apps.quality --preset smollm2-135m-spec --seeds 0 1 2 \\
        --output-dir runs/quality/spec [overrides ...]

Training lists are shuffled too (``data.candidate_order=shuffled`` is added to the
overrides). Each seed trains into ``OUTPUT_DIR/seed<N>`` (a rerun resumes it); each finished
(set, ranker, seed) evaluation is journaled in ``OUTPUT_DIR/eval_journal.jsonl``, so a killed
run resumes where it stopped. Writes ``OUTPUT_DIR/quality.{json,md}``.

Tests per set, on the per-query nDCG@10 averaged over seeds (paired by query): ResRank vs its
own encoder and vs zero-shot MiniLM, two-sided paired t-test and Wilcoxon signed-rank
(``scipy.stats``).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from resrank_jax.apps.eval_journal import EvalJournal
from resrank_jax.apps.experiment import eval_datasets
from resrank_jax.config import resolve_config
from resrank_jax.evaluation import Dataset, rerank_dataset, score_run_per_query, shuffled
from resrank_jax.rerank.base import Ranker
from resrank_jax.rerank.encode import EmbeddingCache
from resrank_jax.rerank.factory import build_ranker, run_rankers
from resrank_jax.train.loop import run_training

EVAL_SEED = 0  # the candidate shuffle every ranker and seed sees
MINILM = "all-minilm-l6-v2"
ZERO_SHOT = "dense (zero-shot MiniLM)"
ENCODER = "dense (own encoder)"
RESRANK = "resrank (single pass)"
FLOAT_NOISE = 1e-12  # nDCG lies in [0, 1]
COMPARISONS = ((RESRANK, ENCODER), (RESRANK, ZERO_SHOT), (ENCODER, ZERO_SHOT))


def per_query_ndcg(ranker: Ranker, dataset: Dataset, max_queries: int) -> dict:
    """``{"ndcg": mean nDCG@10, "per_query": {qid: nDCG@10}, "seconds_per_query"}``."""
    run, timing = rerank_dataset(ranker, dataset, max_queries=max_queries or None)
    means, per_query = score_run_per_query(run, dataset, max_queries=max_queries or None)
    return {
        "ndcg": means["nDCG@10"],
        "per_query": {q: v["nDCG@10"] for q, v in per_query.items()},
        "seconds_per_query": timing["seconds_per_query"],
    }


def paired_tests(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Mean difference ``a - b`` over the shared queries and two-sided p-values of the
    paired t-test and the Wilcoxon signed-rank test (1.0 when every difference is 0).
    Differences within ``FLOAT_NOISE`` count as 0: a mean over seeds of equal values can
    differ from that value in its last bit."""
    qids = sorted(set(a) & set(b))
    diff = np.array([a[q] - b[q] for q in qids])
    diff[np.abs(diff) <= FLOAT_NOISE] = 0.0
    if not np.any(diff):
        return {"delta": 0.0, "t_p": 1.0, "wilcoxon_p": 1.0, "queries": len(qids)}
    return {
        "delta": float(diff.mean()),
        "t_p": float(stats.ttest_1samp(diff, 0.0).pvalue),
        "wilcoxon_p": float(stats.wilcoxon(diff).pvalue),
        "queries": len(qids),
    }


def train_seeds(preset: str, overrides: list[str], seeds: list[int], out: Path) -> dict:
    """Trains (or resumes) one run per seed; returns ``{seed: run dir}``."""
    runs = {}
    for seed in seeds:
        cfg = resolve_config(preset, [*overrides, "data.candidate_order=shuffled", f"seed={seed}"])
        run_training(cfg, out / f"seed{seed}")
        runs[seed] = out / f"seed{seed}"
    return runs


def fingerprint(runs: dict[int, Path], sizes: dict) -> dict:
    """What the evaluation depends on: query counts, passage length and each run's config
    and step."""
    done = {}
    for seed, run in runs.items():
        config = hashlib.sha256((run / "config.json").read_bytes()).hexdigest()
        done[str(seed)] = [config, json.loads((run / "summary.json").read_text())["steps"]]
    return {"sizes": sizes, "eval_seed": EVAL_SEED, "runs": done}


def evaluate_seeds(
    runs: dict[int, Path], sizes: dict, journal: EvalJournal, passage_max_length: int
) -> dict:
    """``{set: {ranker: {seed: per_query_ndcg}}}`` (the zero-shot ranker under seed ``-``).
    Models load only for entries the journal lacks. All rankers share one embedding cache
    (keyed by encoder fingerprint): runs with a frozen encoder encode each passage once."""
    length, shared = {"passage_max_length": passage_max_length}, EmbeddingCache()

    def zero_shot() -> Ranker:
        return build_ranker("dense", model=MINILM, **length).with_cache(shared)

    def trained(run: Path) -> dict[str, Ranker]:
        return {k: r.with_cache(shared) for k, r in run_rankers(str(run), **length).items()}

    jobs = [(ZERO_SHOT, "-", functools.cache(zero_shot))]
    for seed, run in runs.items():
        load = functools.cache(functools.partial(trained, run))
        jobs += [
            (ENCODER, str(seed), lambda load=load: load()["dense"]),
            (RESRANK, str(seed), lambda load=load: load()["resrank"]),
        ]
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for dataset, n in eval_datasets(sizes["dl19"], sizes["scifact"]):
        lists = shuffled(dataset, EVAL_SEED)
        for name, seed, ranker in jobs:
            key = f"{dataset.name} / {name} / seed {seed}"
            if journal.get(key) is None:
                journal.put(key, {"result": per_query_ndcg(ranker(), lists, n)}, [])
            by_seed = results.setdefault(dataset.name, {}).setdefault(name, {})
            by_seed[seed] = journal.get(key)["rows"]["result"]
    return results


def summarize(results: dict) -> dict:
    """Per set: each ranker's mean nDCG@10 over seeds with its spread, and the paired tests
    on per-query nDCG@10 averaged over seeds."""
    out = {}
    for set_name, by_ranker in results.items():
        means = {
            name: _mean_per_query([r["per_query"] for r in by_seed.values()])
            for name, by_seed in by_ranker.items()
        }
        out[set_name] = {
            "rankers": {
                name: {
                    "per_seed": {s: r["ndcg"] for s, r in by_seed.items()},
                    "mean": float(np.mean([r["ndcg"] for r in by_seed.values()])),
                    "std": float(np.std([r["ndcg"] for r in by_seed.values()])),
                }
                for name, by_seed in by_ranker.items()
            },
            "tests": {f"{a} vs {b}": paired_tests(means[a], means[b]) for a, b in COMPARISONS},
        }
    return out


def _mean_per_query(per_seed: list[dict[str, float]]) -> dict[str, float]:
    return {q: float(np.mean([p[q] for p in per_seed])) for q in per_seed[0]}


def markdown(summary: dict) -> str:
    """Two tables: nDCG@10 per ranker (mean, std, per seed) and the paired tests."""
    lines = ["| set | ranker | nDCG@10 mean | std over seeds | per seed |", "|---|---|---|---|---|"]
    for set_name, s in summary.items():
        for name, r in s["rankers"].items():
            seeds = ", ".join(f"{k}: {v:.4f}" for k, v in r["per_seed"].items())
            lines.append(f"| {set_name} | {name} | {r['mean']:.4f} | {r['std']:.4f} | {seeds} |")
    lines += ["", "| set | comparison | mean delta | paired t p | Wilcoxon p | queries |"]
    lines.append("|---|---|---|---|---|---|")
    for set_name, s in summary.items():
        for comparison, t in s["tests"].items():
            lines.append(
                f"| {set_name} | {comparison} | {t['delta']:+.4f} | {t['t_p']:.3g} | "
                f"{t['wilcoxon_p']:.3g} | {t['queries']} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dl19-queries", type=int, default=0, help="first N DL19 queries (0: all 43)")
    p.add_argument("--scifact-queries", type=int, default=0, help="first N (0: all 300)")
    p.add_argument("--passage-max-length", type=int, default=128, help="ranking, every ranker")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. steps=200")
    args = p.parse_args(argv)
    out, started = Path(args.output_dir), time.perf_counter()
    runs = train_seeds(args.preset, args.overrides, args.seeds, out)
    train_s = time.perf_counter() - started
    sizes = {
        "dl19": args.dl19_queries,
        "scifact": args.scifact_queries,
        "passage_max_length": args.passage_max_length,
    }
    journal = EvalJournal(out / "eval_journal.jsonl", fingerprint(runs, sizes))
    summary = summarize(evaluate_seeds(runs, sizes, journal, args.passage_max_length))
    record = {
        "preset": args.preset,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "train_seconds_this_call": train_s,
        "seconds_this_call": time.perf_counter() - started,
        "summary": summary,
    }
    (out / "quality.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "quality.md").write_text(markdown(summary) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
