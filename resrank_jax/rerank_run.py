"""Rerank any first-stage run with any ranker (the logic behind ``resrank rerank``).

The input is a TREC run with topics and a corpus, rank_llm request JSONL, or an ir_datasets
id (``resrank_jax.data.requests``, ``resrank_jax.data.irds``). Each query's first ``depth``
candidates are reranked; the rest follow in first-stage order. The outputs' scores decrease
strictly down every list, so a tool that sorts by score (trec_eval, ir_measures) reads the
order written: the reranked block keeps the ranker's scores (a tie, which a ranker breaks by
first-stage order, is split by the smallest float step), and the rest continue below it
(lowest reranked score - 1, - 2, ...). Metrics (optional: only with qrels) are ir_measures
measures under trec_eval ``-c`` semantics (``resrank_jax.data.metrics.evaluate_measures``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from resrank_jax.data.formats import QrelsFormat, QueryCandidates, read_qrels_with_format
from resrank_jax.data.irds import irds_qrels_format, load_irds, register_bundled_collections
from resrank_jax.data.metrics import default_rel_level, evaluate_measures
from resrank_jax.data.requests import RerankRequests, read_corpus_texts, read_requests
from resrank_jax.data.requests import requests_from_run as _requests_from_run
from resrank_jax.errors import ConfigError
from resrank_jax.paths import as_path
from resrank_jax.rerank.base import Ranker

Run = dict[str, list[tuple[str, float]]]
"""``qid -> [(docid, score)]`` best first."""


@dataclasses.dataclass
class RerankInput:
    """What to rerank: ``requests`` (lists and documents), a display ``name``, and the
    judgments that came with the input (an ir_datasets id's), if any."""

    name: str
    requests: RerankRequests
    qrels: dict[str, dict[str, int]] | None = None
    qrels_format: QrelsFormat | None = None


def _file_name(path: str | Path) -> str:
    """``folder/stem`` of an input file (``data/trec-dl19/bm25.run`` -> ``trec-dl19/bm25``)."""
    p = as_path(path)
    return f"{p.parent.name}/{p.stem}" if p.parent.name else p.stem


def load_input(
    *,
    run: str | Path | None = None,
    topics: str | Path | None = None,
    corpus: str | Path | None = None,
    requests: str | Path | None = None,
    irds: str | None = None,
) -> RerankInput:
    """One input: ``run`` with ``topics`` and ``corpus``; ``requests`` (rank_llm JSONL, any
    ``read_candidates`` format; ``corpus`` for candidates without text); or ``irds``, an
    ir_datasets id with scored docs (``irds:`` prefix optional; ``resrank/scifact/test`` is
    the packaged SciFact), all its scored docs and its qrels when it has them.

    Raises:
        ConfigError: not exactly one input, or files that input does not take.
        DataFormatError: malformed files (file:line).
    """
    given = [flag for flag, v in (("--run", run), ("--requests", requests), ("--irds", irds)) if v]
    if len(given) != 1:
        raise ConfigError(
            "give one input: --run RUN --topics T --corpus C, --requests FILE or --irds ID"
            + (f" (got {' and '.join(given)})" if given else "")
        )
    if run:
        if not topics or not corpus:
            raise ConfigError("--run needs --topics (TSV or JSONL) and --corpus (JSONL or TSV)")
        return RerankInput(_file_name(run), _requests_from_run(run, topics, corpus))
    if topics:
        raise ConfigError("--topics goes with --run")
    if requests:
        texts = read_corpus_texts(corpus) if corpus else None
        return RerankInput(_file_name(requests), read_requests(requests, texts))
    if corpus:
        raise ConfigError("--corpus goes with --run or --requests")
    dataset_id = irds.removeprefix("irds:")
    if dataset_id.startswith("resrank/"):
        register_bundled_collections()
    queries, qrels = load_irds(dataset_id, depth=None, need_qrels=False)
    return RerankInput(
        dataset_id, RerankRequests(queries), qrels or None, irds_qrels_format(dataset_id)
    )


def load_qrels(
    path: str | Path | None, source: RerankInput, rel_level: int | None = None
) -> tuple[dict[str, dict[str, int]] | None, int]:
    """The judgments to score with (``path``, else the input's own, else ``None``) and the
    relevance level of binary measures (``rel_level``, else the qrels' convention:
    ``resrank_jax.data.metrics.default_rel_level``)."""
    if path:
        qrels, fmt = read_qrels_with_format(path)
    elif source.qrels:
        qrels, fmt = source.qrels, source.qrels_format or "beir"
    else:
        return None, rel_level or 1
    return qrels, rel_level or default_rel_level(fmt, qrels)


def strictly_decreasing(scores: Iterable[float]) -> list[float]:
    """``scores`` (best first) with each one that is not below the one before lowered to the
    next float below it (NaN and infinities too; 0.0 in first place). The order is unchanged
    and every finite value that already decreased stays as it was."""
    out: list[float] = []
    for s in scores:
        s = float(s)
        if not math.isfinite(s) and not out:
            s = 0.0
        elif not math.isfinite(s) or (out and not s < out[-1]):
            s = math.nextafter(out[-1], -math.inf)
        out.append(s)
    return out


def head_then_tail(
    order: Sequence[int], scores: Sequence[float], n: int
) -> tuple[list[int], list[float]]:
    """All ``n`` candidate indices best first and their output scores: the reranked head (the
    first ``len(order)`` candidates, in ``order`` with their ``scores``), then the rest in
    first-stage order below it; scores strictly decreasing (the module docstring)."""
    top = [float(scores[i]) for i in order]
    low = min(top) if top else 0.0
    k = len(order)
    indices = [*(int(i) for i in order), *range(k, n)]
    return indices, strictly_decreasing([*top, *(low - j - 1 for j in range(n - k))])


def rerank_queries(
    ranker: Ranker,
    queries: list[QueryCandidates],
    *,
    depth: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> tuple[Run, dict]:
    """Reranks each query's first ``depth`` candidates (all for ``None``) with ``ranker``; the
    rest follow in first-stage order. Returns the run (scores as the module docstring says)
    and stats: ``seconds_per_query``, ``passages_per_second`` (reranked passages),
    ``ranked_queries``, ``reranked_passages`` and the ranker's counters summed."""
    if depth is not None and depth < 1:
        raise ConfigError(f"--depth must be >= 1, got {depth}")
    run: Run = {}
    totals: dict[str, int] = {}
    seconds, passages = 0.0, 0
    for qc in tqdm(queries, desc=desc or ranker.name, unit="query", disable=not progress):
        head = qc.candidates[: len(qc.candidates) if depth is None else depth]
        start = time.perf_counter()
        ranking = ranker.rank(qc.query, head)
        seconds += time.perf_counter() - start
        passages += len(head)
        order, scores = head_then_tail(ranking.order, ranking.scores, len(qc.candidates))
        run[qc.qid] = [(qc.candidates[i].docid, s) for i, s in zip(order, scores, strict=True)]
        for key, value in ranking.stats.items():
            totals[key] = totals.get(key, 0) + value
    stats = {
        "seconds_per_query": seconds / max(len(queries), 1),
        "passages_per_second": passages / max(seconds, 1e-9),
        "ranked_queries": len(queries),
        "reranked_passages": passages,
        **totals,
    }
    return run, stats


def score_run(
    run: Run, qrels: Mapping[str, Mapping[str, int]], measures: Mapping[str, object]
) -> tuple[dict[str, float | int], dict[str, dict[str, float]]]:
    """``evaluate_measures`` on ``run`` by position (score ``N - position``: only the order
    written counts). Returns the means and the per-query values."""
    ranked = {q: {d: float(len(r) - i) for i, (d, _) in enumerate(r)} for q, r in run.items()}
    return evaluate_measures(ranked, qrels, measures)


def write_per_query(path: str | Path, per_query: Mapping[str, Mapping[str, float]]) -> None:
    """Per-query metrics: a JSON object ``{qid: {measure: value}}`` for a ``.json`` path, else
    a TSV with a header ``qid<TAB>measure...`` and one row per judged query."""
    path = as_path(path)
    if path.suffix == ".json":
        path.write_text(json.dumps(per_query, indent=2) + "\n")
        return
    names = list(next(iter(per_query.values()), {}))
    lines = ["\t".join(["qid", *names])]
    lines += ["\t".join([q, *(repr(v[n]) for n in names)]) for q, v in per_query.items()]
    path.write_text("\n".join(lines) + "\n")


def format_metrics(name: str, ranker: str, metrics: Mapping[str, float | int]) -> str:
    """A one-row markdown table of ``metrics`` (measures, then queries and s/query)."""
    measures = [k for k, v in metrics.items() if k not in _NOT_MEASURES and isinstance(v, float)]
    head = ["input", "ranker", *measures, "queries", "s/query"]
    row = [
        name,
        ranker,
        *(f"{metrics[m]:.4f}" for m in measures),
        str(metrics["queries"]),
        f"{metrics['seconds_per_query']:.3f}",
    ]
    return "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"]
    )


_NOT_MEASURES = {"seconds_per_query", "passages_per_second"}
