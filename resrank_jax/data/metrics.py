"""IR metrics through ir_measures (pytrec_eval), with trec_eval ``-c`` semantics: every query
in the qrels counts, and one the run does not cover scores 0 (never silently dropped)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import ir_measures
from ir_measures import AP, RR, R, nDCG

from resrank_jax.data.formats import QrelsFormat

REL_LEVELS: dict[QrelsFormat, int] = {"beir": 1, "trec": 2}
"""Relevance level of binary measures by qrels format: BEIR counts rel >= 1, TREC DL rel >= 2."""


def default_rel_level(qrels_format: QrelsFormat, qrels: Mapping[str, Mapping[str, int]]) -> int:
    """``REL_LEVELS[qrels_format]``, lowered to 1 for TREC-format qrels with no grade >= 2
    (binary judgments written as TREC, like ``data/scifact/qrels.test.txt``): rel >= 2 would
    count nothing relevant there."""
    top = max((grade for docs in qrels.values() for grade in docs.values()), default=0)
    return min(REL_LEVELS[qrels_format], max(top, 1))


def default_measures(rel_level: int = 1) -> dict[str, object]:
    """nDCG@10 (graded), and MRR@10, R@100, MAP with relevance >= ``rel_level`` (TREC DL: 2)."""
    return {
        "nDCG@10": nDCG @ 10,
        "MRR@10": RR(rel=rel_level) @ 10,
        "R@100": R(rel=rel_level) @ 100,
        "MAP": AP(rel=rel_level),
    }


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    rel_level: int = 1,
) -> dict[str, float | int]:
    """Mean of each measure over **all** judged queries (missing ones count 0), plus
    ``queries`` (how many were averaged) and ``queries_missing`` (judged but not in the run).
    Queries in the run without judgments are ignored, as trec_eval does."""
    measures = default_measures(rel_level)
    judged = sorted(q for q, docs in qrels.items() if docs)
    missing = [q for q in judged if not run.get(q)]
    if missing:
        warnings.warn(
            f"{len(missing)} judged queries have no results in the run and score 0 "
            f"(e.g. {missing[:3]})",
            stacklevel=2,
        )
    per_query: dict[str, dict[str, float]] = {name: {} for name in measures}
    by_measure = {m: name for name, m in measures.items()}
    run_judged = {q: dict(docs) for q, docs in run.items() if q in qrels and docs}
    qrels_plain = {q: dict(docs) for q, docs in qrels.items()}
    for result in ir_measures.iter_calc(list(measures.values()), qrels_plain, run_judged):
        per_query[by_measure[result.measure]][result.query_id] = float(result.value)
    out: dict[str, float | int] = {
        name: sum(values.get(q, 0.0) for q in judged) / max(len(judged), 1)
        for name, values in per_query.items()
    }
    out["queries"] = len(judged)
    out["queries_missing"] = len(missing)
    return out
