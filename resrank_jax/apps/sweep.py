"""Ablation sweep: train and evaluate several presets with the same overrides and query
subsets, and write one markdown table (plus the BM25 and zero-shot dense rows they share).

    python -m resrank_jax.apps.sweep --output-dir runs/ablations \\
        [--presets smollm2-135m smollm2-135m-no-residual ...] [--dl19-queries N] \\
        [--scifact-queries N] [--passage-max-length L] [key=value ...]

Each preset runs in ``output-dir/<preset>`` (resumable: a finished preset is not retrained);
the table goes to ``output-dir/ablations.md`` and every number to ``ablations.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resrank_jax.apps.experiment import (
    baseline_rankers,
    eval_datasets,
    evaluate_rankers,
    run_experiment,
)

ABLATIONS = {
    "smollm2-135m-spec": "ResRank as published (SPEC defaults: norm_sum residual, reranker "
    "query, linear projector; dual stage, contrastive + RankNet, end to end)",
    "smollm2-135m": "our gated variant (gate on the reranker states, encoder query)",
    "smollm2-135m-no-residual": "SPEC without the residual: slot states alone",
    "smollm2-135m-single-stage": "SPEC, single stage (teacher lists only)",
    "smollm2-135m-no-contrastive": "SPEC without the contrastive term (RankNet only)",
    "smollm2-135m-frozen-encoder": "SPEC with a frozen encoder (not end to end)",
}


def sweep_table(baselines: dict, runs: dict[str, dict]) -> str:
    """Markdown: one row per baseline and per preset; nDCG@10 per dataset for the preset's
    full model and its encoder alone."""
    datasets = list(baselines)
    head = ["run", "what changes", "steps", "train min"]
    for ds in datasets:
        q = next(iter(baselines[ds].values()))["queries"]
        head += [f"{ds} ({q} q) model", f"{ds} encoder alone"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in next(iter(baselines.values())):
        cells = [name, "baseline", "-", "-"]
        for ds in datasets:
            cells += [f"{baselines[ds][name]['nDCG@10']:.4f}", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    for preset, result in runs.items():
        train = result["train"]
        minutes = sum(train["timings"].values()) / 60
        cells = [preset, ABLATIONS.get(preset, ""), str(train["steps"]), f"{minutes:.1f}"]
        for ds in datasets:
            by = result["metrics"][ds]
            model = next(m for name, m in by.items() if not name.startswith("dense"))
            cells += [f"{model['nDCG@10']:.4f}", f"{by['dense (trained encoder)']['nDCG@10']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--presets", nargs="+", default=list(ABLATIONS))
    p.add_argument("--dl19-queries", type=int, default=10)
    p.add_argument("--scifact-queries", type=int, default=20)
    p.add_argument("--passage-max-length", type=int, default=128)
    p.add_argument("overrides", nargs="*", help="applied to every preset, e.g. steps=30")
    args = p.parse_args(argv)
    out = Path(args.output_dir)
    datasets = eval_datasets(args.dl19_queries, args.scifact_queries)
    runs = {}
    for preset in args.presets:
        done = out / preset / "results.json"
        if done.exists() and json.loads(done.read_text())["overrides"] == args.overrides:
            runs[preset] = json.loads(done.read_text())
            continue
        runs[preset] = run_experiment(
            preset,
            args.overrides,
            out / preset,
            dl19_queries=args.dl19_queries,
            scifact_queries=args.scifact_queries,
            passage_max_length=args.passage_max_length,
            baselines=False,
        )
    baselines = evaluate_rankers(baseline_rankers(args.passage_max_length), datasets)
    table = sweep_table(baselines, runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablations.md").write_text(table + "\n")
    (out / "ablations.json").write_text(
        json.dumps({"overrides": args.overrides, "baselines": baselines, "runs": runs}, indent=2)
        + "\n"
    )
    print(table)
    print(f"saved {out / 'ablations.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
