"""The model card (``README.md``) of an exported artifact, generated from its training run:
the closest preset and the overrides, steps, stages, data, last losses, dev and evaluation
numbers found in the run directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from resrank_jax.evaluation import TABLE_COLUMNS
from resrank_jax.paths import as_path


def _read_json(path) -> Any:
    try:
        return json.loads(path.read_text()) if path.exists() else None
    except (json.JSONDecodeError, OSError, UnicodeDecodeError):
        return None


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def closest_preset(config: dict) -> tuple[str | None, dict[str, Any]]:
    """The preset (``resrank_jax.config``'s presets) a run config differs least from, and the
    differing ``key: value`` pairs (the overrides that make the run from it)."""
    try:
        from resrank_jax.config import _load_presets, config_to_json

        presets = _load_presets()
    except Exception:  # no presets in this installation: the card lists the config alone
        return None, {}
    run = _flatten(json.loads(json.dumps(config)))
    best: tuple[int, str, dict] | None = None
    for name in sorted(presets):
        preset = _flatten(json.loads(config_to_json(presets[name])))
        diff = {k: v for k, v in run.items() if preset.get(k, object()) != v}
        diff.update({k: None for k in preset if k not in run})
        if best is None or len(diff) < best[0]:
            best = (len(diff), name, diff)
    return (best[1], best[2]) if best else (None, {})


def _eval_rows(data: Any, label: tuple[str, ...] = ()) -> Iterator[tuple[str, dict]]:
    """``(label, metrics)`` of every metrics dict (one with ``nDCG@10``) inside ``data``
    (``experiment.py``'s ``results.json``, ``eval.py --metrics-json``)."""
    if not isinstance(data, dict):
        return
    if isinstance(data.get("nDCG@10"), int | float):
        yield " / ".join(label) or str(data.get("ranker", "")), data
        return
    for key, value in data.items():
        if key not in ("config", "train", "overrides"):
            yield from _eval_rows(value, (*label, str(key)))


def evaluation_results(run_dir) -> list[tuple[str, str, dict]]:
    """``(file, label, metrics)`` of the evaluation numbers recorded for a run: JSON files in
    the run directory (``eval.py --metrics-json`` written there) and ``results.json`` beside
    it when that file's ``config`` is the run's (``experiment.py`` trains into
    ``OUT/train`` and writes ``OUT/results.json``)."""
    run = as_path(run_dir)
    config = _read_json(run / "config.json")
    files = [p for p in sorted(run.glob("*.json")) if p.name not in ("config.json", "summary.json")]
    beside = run.parent / "results.json"
    data = _read_json(beside)
    if isinstance(data, dict) and data.get("config") == config:
        files.append(beside)
    rows = []
    for file in files:
        for label, metrics in _eval_rows(_read_json(file)):
            rows.append((str(file.relative_to(run.parent)), label, metrics))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if not isinstance(value, str) else value


def model_card(run_dir, cfg, step: int, info: dict) -> str:
    """The ``README.md`` of an artifact: what it is, how to load it, how it was trained
    (preset and overrides, data, steps, last losses) and its evaluation numbers."""
    from resrank_jax.artifact import HEAD_FILE, MANIFEST  # the artifact's file names
    from resrank_jax.config import config_to_json

    run = as_path(run_dir)
    config = json.loads(config_to_json(cfg))
    summary = _read_json(run / "summary.json") or {}
    metrics_path = run / "metrics.jsonl"
    records = []
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    preset, diff = (summary.get("preset"), {}) if summary.get("preset") else closest_preset(config)
    task = info["task"]
    m = cfg.model
    lines = [
        "---",
        "library_name: resrank_jax",
        "pipeline_tag: text-ranking",
        f"tags: [reranking, listwise, {task}, jax, flax]",
        "---",
        "",
        f"# {task} reranker ({m.encoder}" + (f" + {m.reranker})" if info.get("reranker") else ")"),
        "",
        f"A listwise {task} reranker trained with resrank_jax, exported from the run "
        f"`{run}` at step {step}.",
        "",
        "## Load it",
        "",
        "```python",
        "from resrank_jax import load_ranker",
        "",
        'ranker = load_ranker("THIS_DIRECTORY")',
        'result = ranker.rerank("what is a flea?", ["passage one", "passage two"])',
        "print(result.order, result.scores)",
        "```",
        "",
        "or `resrank eval --ranker " + task + " --model THIS_DIRECTORY ...`.",
        "",
        "## Model",
        "",
        f"- task (`model.mode`): `{task}`",
        f"- encoder: `{m.encoder}` -> `encoder/` (pooling `{info['encoder']['pooling']}`)",
    ]
    if info.get("reranker"):
        lines.append(f"- reranker: `{m.reranker}` -> `reranker/`")
    if info["model"]["resrank"] and info.get("reranker"):
        flags = ", ".join(f"{k}={_fmt(v)}" for k, v in info["model"]["resrank"].items())
        lines.append(f"- ResRank: {flags}")
    if info.get("head"):
        names = ", ".join(f"`{k}` {tuple(v['shape'])}" for k, v in info["head"]["params"].items())
        lines.append(f"- head (`{HEAD_FILE}`): {names}")
    lines.append(f"- dtype: {info['model']['dtype']} (params {info['model']['param_dtype']})")
    recipe = ", ".join(f"{k}={_fmt(v)}" for k, v in info["recipe"].items())
    lines += [f"- ranking recipe: {recipe}", "", "## Training", ""]
    if preset:
        lines.append(
            f"- preset: `{preset}`" + (" (closest preset to the saved config)" if diff else "")
        )
        if diff:
            overrides = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(diff.items()))
            lines.append(f"- overrides: `{overrides}`")
    lines.append(f"- steps: {summary.get('steps', step)} (checkpoint exported: step {step})")
    if summary.get("origin"):
        lines.append(f"- started from: {summary['origin']}")
    stages = ", ".join(
        f"{s.name} ({s.labels}, lr {s.lr:g}, {n} steps)"
        for s, n in zip(cfg.stages, cfg.stage_steps(), strict=True)
    )
    lines.append(f"- stages: {stages}")
    lines.append(f"- seed: {cfg.seed}; queries per step: {cfg.data.queries_per_step}")
    lines += ["", "### Data", ""]
    d = cfg.data
    lines.append(f"- candidates: `{d.candidates}`; corpus: `{d.corpus}`; qrels: `{d.qrels}`")
    if d.teacher:
        lines.append(f"- teacher rankings: `{d.teacher}`")
    counts = summary.get("list_counts")
    lines.append(
        f"- lists: {summary.get('lists', 'unknown')}"
        + (f" ({', '.join(f'{k} {v}' for k, v in counts.items())})" if counts else "")
        + f", list size {d.list_size}"
    )
    if records:
        lines += ["", "### Last losses", "", "| stage | step | loss | terms |", "|---|---|---|---|"]
        last: dict[str, dict] = {}
        for record in records:
            last[str(record.get("stage"))] = record
        for stage, record in last.items():
            terms = ", ".join(f"{k} {_fmt(v)}" for k, v in record.items() if k.startswith("loss/"))
            lines.append(
                f"| {stage} | {record.get('step')} | {_fmt(record.get('loss'))} | {terms} |"
            )
        dev = [(r["step"], r["dev_ndcg@10"]) for r in records if "dev_ndcg@10" in r]
        if dev:
            best = max(dev, key=lambda x: x[1])
            lines.append("")
            lines.append(
                f"Dev nDCG@10 ({d.dev_queries} held-out training queries): "
                f"{dev[-1][1]:.4f} at step {dev[-1][0]}, best {best[1]:.4f} at step {best[0]}."
            )
    lines += ["", "## Evaluation", ""]
    results = evaluation_results(run)
    if results:
        head = ["source", "ranker", *TABLE_COLUMNS, "queries"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for file, label, metrics in results:
            cells = [file, label, *(_fmt(metrics.get(c, "")) for c in TABLE_COLUMNS)]
            lines.append("| " + " | ".join([*cells, _fmt(metrics.get("queries", ""))]) + " |")
        lines += ["", "Numbers as recorded with the run (not recomputed at export)."]
    else:
        lines.append(
            "No evaluation results were recorded with this run (no results JSON in or beside "
            "the run directory). Measure them with `resrank eval --ranker "
            f"{task} --model THIS_DIRECTORY --candidates ... --qrels ...`."
        )
    lines += [
        "",
        "## Files",
        "",
        f"- `{MANIFEST}`: format version, task, model settings, recipe, provenance",
        "- `encoder/`"
        + (", `reranker/`" if info.get("reranker") else "")
        + ": HF format (config.json, model.safetensors, tokenizer)",
    ]
    if info.get("head"):
        lines.append(f"- `{HEAD_FILE}`: the parameters outside the backbones")
    return "\n".join(lines) + "\n"
