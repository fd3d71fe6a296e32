"""Rerank candidate sets with any ranker, write TREC runs, and tabulate IR metrics with
latency (the logic behind ``eval.py``)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from resrank_jax.data.formats import (
    QrelsFormat,
    QueryCandidates,
    read_candidates,
    read_corpus,
    read_qrels_with_format,
    write_run,
)
from resrank_jax.data.irds import irds_qrels_format, load_irds, register_bundled_collections
from resrank_jax.data.metrics import default_measures, default_rel_level, evaluate_measures
from resrank_jax.errors import ConfigError
from resrank_jax.paths import as_path
from resrank_jax.rerank.base import Ranker

TABLE_COLUMNS = ("nDCG@10", "MRR@10", "R@100", "MAP")


@dataclasses.dataclass
class Dataset:
    """Candidate lists and judgments. ``rel_level``: the grade from which binary measures
    (MRR@10, R@100, MAP) count a document relevant; nDCG@10 always uses the grades."""

    name: str
    queries: list[QueryCandidates]
    qrels: dict[str, dict[str, int]]
    rel_level: int

    def __post_init__(self) -> None:
        if self.rel_level < 1:
            raise ValueError(f"{self.name}: rel_level must be >= 1, got {self.rel_level}")


def shuffled(dataset: Dataset, seed: int) -> Dataset:
    """``dataset`` with each query's candidates permuted by ``default_rng([seed, index])``
    (index: the query's place in ``dataset.queries``), so slot position carries no
    first-stage order; the same seed gives every ranker the same lists."""
    queries = []
    for i, qc in enumerate(dataset.queries):
        perm = np.random.default_rng([seed, i]).permutation(len(qc.candidates))
        queries.append(dataclasses.replace(qc, candidates=[qc.candidates[j] for j in perm]))
    return dataclasses.replace(dataset, queries=queries)


_Parts = tuple[str, list[QueryCandidates], dict[str, dict[str, int]], QrelsFormat]
"""Default name, candidate lists, qrels and the qrels' format of a dataset being loaded."""


def _irds_parts(candidates: str, qrels: str) -> _Parts:
    """An ``irds:<id>`` dataset (the same id for candidates and qrels)."""
    dataset_id = candidates.removeprefix("irds:")
    if qrels != candidates:
        raise ConfigError(f"with --candidates {candidates} pass the same id as --qrels")
    if dataset_id.startswith("resrank/"):
        register_bundled_collections()
    queries, judgments = load_irds(dataset_id)
    return dataset_id, queries, judgments, irds_qrels_format(dataset_id)


def _file_parts(candidates: Path, qrels: str | Path, corpus: str | Path | None) -> _Parts:
    """A dataset from a candidate file, a qrels file and an optional corpus; its default name
    is ``folder/split`` (``data/scifact/candidates.test.jsonl`` -> ``scifact/test``)."""
    corpus_map = read_corpus(corpus) if corpus else None
    split = candidates.stem.removeprefix("candidates").strip("._-")
    name = f"{candidates.parent.name}/{split}" if split else candidates.parent.name
    queries = read_candidates(candidates, corpus_map)
    judgments, qrels_format = read_qrels_with_format(qrels)
    return name, queries, judgments, qrels_format


def load_dataset(
    candidates: str | Path,
    qrels: str | Path,
    corpus: str | Path | None = None,
    name: str | None = None,
    *,
    rel_level: int | None = None,
) -> Dataset:
    """A dataset from files, or from an ir_datasets id written ``irds:<id>`` (for both
    ``candidates`` and ``qrels``; ``irds:resrank/scifact/test`` is the packaged copy).
    ``rel_level`` (binary measures count rel >= it) defaults to the qrels' convention, see
    ``default_rel_level``: 1 for BEIR-format files and ir_datasets ids outside TREC DL, 2 for
    TREC-format files and TREC DL ids."""
    if str(candidates).startswith("irds:"):
        default, queries, judgments, qrels_format = _irds_parts(str(candidates), str(qrels))
    else:
        default, queries, judgments, qrels_format = _file_parts(as_path(candidates), qrels, corpus)
    if rel_level is None:
        rel_level = default_rel_level(qrels_format, judgments)
    return Dataset(name or default, queries, judgments, rel_level)


def rerank_dataset(
    ranker: Ranker, dataset: Dataset, *, max_queries: int | None = None, progress: bool = True
) -> tuple[dict[str, list[tuple[str, float]]], dict]:
    """Runs ``ranker`` over the dataset's queries. Returns the run (``qid -> [(docid, score)]``
    best first) and timing/throughput stats."""
    queries = dataset.queries[:max_queries] if max_queries else dataset.queries
    run, totals, seconds, passages = {}, {}, 0.0, 0
    for qc in tqdm(
        queries, desc=f"{ranker.name} on {dataset.name}", unit="query", disable=not progress
    ):
        start = time.perf_counter()
        ranking = ranker.rank(qc.query, qc.candidates)
        seconds += time.perf_counter() - start
        passages += len(qc.candidates)
        run[qc.qid] = [(qc.candidates[i].docid, float(ranking.scores[i])) for i in ranking.order]
        for key, value in ranking.stats.items():
            totals[key] = totals.get(key, 0) + value
    n = max(len(queries), 1)
    stats = {
        "seconds_per_query": seconds / n,
        "passages_per_second": passages / max(seconds, 1e-9),
        "ranked_queries": len(queries),
        **totals,
    }
    return run, stats


def score_run(
    run: dict[str, list[tuple[str, float]]], dataset: Dataset, *, max_queries: int | None
):
    """Metrics of a run. Scores are replaced by ``N - position`` so ties can never reorder
    what the ranker returned. With ``max_queries`` only the ranked queries' judgments count."""
    return score_run_per_query(run, dataset, max_queries=max_queries)[0]


def score_run_per_query(
    run: dict[str, list[tuple[str, float]]], dataset: Dataset, *, max_queries: int | None
) -> tuple[dict, dict[str, dict[str, float]]]:
    """``score_run``'s metrics and the per-query values ``{qid: {measure: value}}``."""
    qrels = dataset.qrels
    if max_queries:
        qrels = {q: d for q, d in qrels.items() if q in run}
    ranked = {q: {d: float(len(r) - i) for i, (d, _) in enumerate(r)} for q, r in run.items()}
    return evaluate_measures(ranked, qrels, default_measures(dataset.rel_level))


def evaluate_ranker(
    ranker: Ranker,
    dataset: Dataset,
    *,
    max_queries: int | None = None,
    run_out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    run, stats = rerank_dataset(ranker, dataset, max_queries=max_queries, progress=progress)
    if run_out:
        write_run(run_out, run, tag=ranker.name)
    return {
        **score_run(run, dataset, max_queries=max_queries),
        **stats,
        "ranker": ranker.name,
        "rel_level": dataset.rel_level,
    }


def format_table(rows: dict[str, dict]) -> str:
    """A markdown table: one row per dataset (or dataset x ranker)."""
    head = ["dataset", "ranker", *TABLE_COLUMNS, "queries", "s/query", "passages/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in rows.items():
        cells = [
            name,
            m["ranker"],
            *(f"{m[c]:.4f}" for c in TABLE_COLUMNS),
            str(m["queries"]),
            f"{m['seconds_per_query']:.3f}",
            f"{m['passages_per_second']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
