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
    return evaluate_measures(run, qrels, default_measures(rel_level))[0]


DEFAULT_MEASURES = "nDCG@10 RR@10 R@100 AP"
"""``resrank rerank``'s measures without ``--measures`` (eval.py's nDCG@10, MRR@10, R@100, MAP)."""


def _split_measures(text: str) -> list[str]:
    """Measure names separated by spaces or commas outside parentheses
    (``"nDCG@10 AP(rel=2, judged_only=True)"`` is two)."""
    names, current, depth = [], "", 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and (char.isspace() or char == ","):
            names.append(current)
            current = ""
        else:
            current += char
    return [name for name in (*names, current) if name]


def parse_measures(text: str, rel_level: int = 1) -> dict[str, object]:
    """ir_measures measures from ``text``: names in ir_measures syntax (``nDCG@10 RR@10
    R@100``, ``AP(rel=2)``) or trec_eval's (``ndcg_cut.10``, ``map``), separated by spaces or
    commas. A binary measure without ``rel`` (RR, R, AP, P, ...) counts relevance >=
    ``rel_level``, as ``default_measures`` does. Keys are the measures as ir_measures writes
    them (``RR(rel=2)@10``; ``RR@10`` when the level is 1).

    Raises:
        ConfigError: an empty list or a name neither syntax knows (one line).
    """
    from resrank_jax.errors import ConfigError

    measures: dict[str, object] = {}
    for name in _split_measures(text):
        try:
            parsed = [ir_measures.parse_measure(name)]
        except Exception as err:  # any failure to parse the user's text
            try:
                parsed = list(ir_measures.parse_trec_measure(name))
            except Exception:
                raise ConfigError(
                    f"measure {name!r}: {err}; write ir_measures names such as "
                    f"{DEFAULT_MEASURES!r} or trec_eval's (ndcg_cut.10)"
                ) from None
        for measure in parsed:
            if "rel" in measure.SUPPORTED_PARAMS and "rel" not in measure.params:
                measure = measure(rel=rel_level)
            measures[str(measure)] = measure
    if not measures:
        raise ConfigError(f"no measures in {text!r}")
    return measures


def evaluate_measures(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: Mapping[str, object],
) -> tuple[dict[str, float | int], dict[str, dict[str, float]]]:
    """``measures`` (name -> ir_measures measure, see ``parse_measures``) with ``evaluate``'s
    trec_eval ``-c`` semantics. Returns the means over all judged queries plus ``queries``
    and ``queries_missing``, and the per-query values ``{qid: {name: value}}`` of every
    judged query (0 for one the run does not cover), so the means are the per-query means."""
    judged = sorted(q for q, docs in qrels.items() if docs)
    missing = [q for q in judged if not run.get(q)]
    if missing:
        warnings.warn(
            f"{len(missing)} judged queries have no results in the run and score 0 "
            f"(e.g. {missing[:3]})",
            stacklevel=2,
        )
    per_query = {q: dict.fromkeys(measures, 0.0) for q in judged}
    by_measure = {m: name for name, m in measures.items()}
    run_judged = {q: dict(docs) for q, docs in run.items() if q in per_query and docs}
    qrels_plain = {q: dict(docs) for q, docs in qrels.items()}
    if run_judged:
        for result in ir_measures.iter_calc(list(measures.values()), qrels_plain, run_judged):
            per_query[result.query_id][by_measure[result.measure]] = float(result.value)
    n = max(len(judged), 1)
    out: dict[str, float | int] = {
        name: sum(values[name] for values in per_query.values()) / n for name in measures
    }
    out["queries"] = len(judged)
    out["queries_missing"] = len(missing)
    return out, per_query
