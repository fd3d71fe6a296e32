"""Training lists of K candidates per query, with labels from qrels or from a teacher order.

- ``qrels`` labels: the relevance grade (0 for unjudged).
- ``teacher`` labels: ``K - rank`` of a teacher permutation. Without a teacher file the
  teacher order is "relevant first (by grade), then first-stage order": a weak but honest
  teacher built only from the training data. A teacher file in E2Rank's format
  (``{"query", "documents", "ranking"}`` per line; ``ranking`` a permutation of document
  indices, best first) replaces it.

A list holds the judged positives found in the first-stage top-100 (at most K/2; when none
is there, one qrels positive from the corpus takes the last slot) and non-relevant candidates:
the highest-ranked ones (``negatives="head"``: hard negatives) or a seeded uniform sample of
the whole first-stage list (``"sampled"``), shown in first-stage order unless
``shuffle_candidates`` permutes them. ``teacher="judged_only"`` gives every unjudged
candidate the same teacher label, so RankNet gets no negative-vs-negative pair.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from resrank_jax.data.formats import DataFormatError, QueryCandidates, iter_json_records
from resrank_jax.paths import as_path


@dataclasses.dataclass
class TrainingList:
    qid: str
    query: str
    docids: list[str]
    texts: list[str]
    qrels_labels: np.ndarray  # [K] grades
    teacher_labels: np.ndarray  # [K] K - teacher rank


def lists_from_qrels(
    queries: list[QueryCandidates],
    qrels: dict[str, dict[str, int]],
    corpus: dict[str, str],
    *,
    list_size: int,
    negatives: str = "head",
    teacher: str = "first_stage",
    seed: int = 0,
) -> tuple[list[TrainingList], dict[str, int]]:
    """Builds one list per query that has a positive judgment; returns lists and counts.
    ``negatives`` ``head`` or ``sampled`` (``np.random.default_rng([seed, query index])``),
    ``teacher`` ``first_stage`` or ``judged_only`` (the module docstring)."""
    lists, counts = [], {"queries": len(queries), "no_positive": 0, "positive_from_corpus": 0}
    for index, qc in enumerate(queries):
        judged = qrels.get(qc.qid, {})
        positives = {d: g for d, g in judged.items() if g > 0}
        if not positives:
            counts["no_positive"] += 1
            continue
        ranked = [c.docid for c in qc.candidates]
        texts = {c.docid: c.text for c in qc.candidates}
        chosen_pos = [d for d in ranked if d in positives][: list_size // 2]
        pool = [d for d in ranked if d not in positives]
        wanted = min(list_size - max(len(chosen_pos), 1), len(pool))
        if negatives == "sampled":
            picked = np.random.default_rng([seed, index]).choice(len(pool), wanted, replace=False)
            chosen_neg = [pool[i] for i in picked]
        else:
            chosen_neg = pool[:wanted]
        chosen = set(chosen_pos) | set(chosen_neg)
        docids = [d for d in ranked if d in chosen]
        if not chosen_pos:
            extra = sorted(positives, key=lambda d: (-positives[d], d))[0]
            if extra not in corpus:
                counts["no_positive"] += 1
                continue
            docids.append(extra)
            texts[extra] = corpus[extra]
            counts["positive_from_corpus"] += 1
        grades = np.array([positives.get(d, 0) for d in docids], np.float32)
        labels = default_teacher_labels(docids, positives, judged_only=teacher == "judged_only")
        lists.append(
            TrainingList(qc.qid, qc.query, docids, [texts[d] for d in docids], grades, labels)
        )
    return lists, counts


def default_teacher_labels(
    docids: list[str], positives: dict[str, int], *, judged_only: bool
) -> np.ndarray:
    """Teacher labels ``[K]`` (``K - rank``) of the order "judged positives by grade, then
    ``docids``' (first-stage) order"; with ``judged_only`` every unjudged candidate shares
    the label of the first of them."""
    position = {d: i for i, d in enumerate(docids)}
    order = sorted(docids, key=lambda d: (-positives.get(d, 0), position[d]))
    k = len(docids)
    labels = np.zeros(k, np.float32)
    for rank, d in enumerate(order):
        labels[position[d]] = k - rank
    if judged_only:
        unjudged = np.array([d not in positives for d in docids])
        if unjudged.any():
            labels[unjudged] = labels[unjudged].max()
    return labels


def lists_from_teacher_file(path: str | Path, *, list_size: int) -> list[TrainingList]:
    """Reads E2Rank-format teacher lists (first ``list_size`` documents of each)."""
    path, out = as_path(path), []
    for line, rec in iter_json_records(path):
        if not isinstance(rec, dict) or not {"query", "documents", "ranking"} <= set(rec):
            raise DataFormatError(path, line, "expected fields 'query', 'documents', 'ranking'")
        docs, ranking = rec["documents"], rec["ranking"]
        if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs) or len(docs) < 2:
            raise DataFormatError(path, line, "'documents' must be a list of at least 2 strings")
        if sorted(ranking) != list(range(len(docs))):
            raise DataFormatError(path, line, "'ranking' is not a permutation of the documents")
        keep = docs[:list_size]
        order = [i for i in ranking if i < len(keep)]
        k = len(keep)
        teacher = np.zeros(k, np.float32)
        for rank, i in enumerate(order):
            teacher[i] = k - rank
        best = np.zeros(k, np.float32)
        best[order[0]] = 1.0
        qid = str(rec.get("qid", line))
        out.append(
            TrainingList(qid, rec["query"], [f"{qid}:{i}" for i in range(k)], keep, best, teacher)
        )
    if not out:
        raise DataFormatError(path, None, "no lists in file")
    return out


def shuffle_candidates(lists: list[TrainingList], seed: int) -> list[TrainingList]:
    """Each list with its candidates (ids, texts, both label arrays) permuted together by
    ``np.random.default_rng([seed, list index])``: deterministic, so a resumed run sees the
    same lists."""
    out = []
    for i, tl in enumerate(lists):
        perm = np.random.default_rng([seed, i]).permutation(len(tl.docids))
        out.append(
            dataclasses.replace(
                tl,
                docids=[tl.docids[j] for j in perm],
                texts=[tl.texts[j] for j in perm],
                qrels_labels=tl.qrels_labels[perm],
                teacher_labels=tl.teacher_labels[perm],
            )
        )
    return out
