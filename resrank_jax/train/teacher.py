"""A teacher file better than first-stage order: the lists ``lists_from_qrels`` builds, each
ranked by its judged positives and then by a reciprocal-rank fusion (RRF) of the list's
first-stage order with a ranker's order, written in E2Rank's teacher format
(``{"qid", "query", "docids", "documents", "ranking"}`` per line; ``data.teacher=FILE``).

The default teacher (``train/lists.py``) orders the unjudged candidates of a list by the
first stage (BM25 on SciFact), so most RankNet pairs teach BM25's order. Here they follow
RRF (Cormack, Clarke and Buettcher, SIGIR 2009) of two rankings of the same K candidates:
candidate ``i`` scores ``1 / (k + r_first_stage(i)) + 1 / (k + r_ranker(i))`` (ranks from 1
within the list, ``k = 60``). Judged positives stay first, by grade, as in the default
teacher; ties keep first-stage order. The ranker is any ``Ranker``: zero-shot dense MiniLM,
or a trained run's own model (``build_ranker(..., checkpoint=RUN)``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import numpy as np
from etils import epath
from tqdm.auto import tqdm

from resrank_jax.rerank.base import Candidate, Ranker, order_by_scores
from resrank_jax.train.lists import TrainingList

RRF_K = 60
"""RRF's constant (Cormack et al. 2009)."""


def fused_teacher_order(
    grades_k: np.ndarray, ranker_scores_k: np.ndarray, rrf_k: float = RRF_K
) -> list[int]:
    """Candidate indices best first: judged positives (``grades_k > 0``) by grade, then every
    candidate by RRF of its place in the list (the first-stage order) and its rank by
    ``ranker_scores_k`` (higher is better); ties keep the list order."""
    k = len(grades_k)
    ranker_rank_k = np.empty(k)
    ranker_rank_k[order_by_scores(ranker_scores_k)] = np.arange(1, k + 1)
    fused_k = 1.0 / (rrf_k + np.arange(1, k + 1)) + 1.0 / (rrf_k + ranker_rank_k)
    return sorted(range(k), key=lambda i: (-float(grades_k[i]), -float(fused_k[i]), i))


def teacher_records(
    lists: Sequence[TrainingList],
    ranker: Ranker,
    *,
    rrf_k: float = RRF_K,
    batch_size: int = 8,
    progress: bool = True,
) -> Iterator[dict]:
    """One teacher record per list, in order; ``ranker`` ranks ``batch_size`` lists per
    ``rank_batch`` call. Each list must be in first-stage order (``lists_from_qrels``,
    unshuffled): its documents are written in that order."""
    bar = tqdm(total=len(lists), desc="teacher", unit="list", disable=not progress)
    for start in range(0, len(lists), batch_size):
        chunk = lists[start : start + batch_size]
        rankings = ranker.rank_batch(
            [tl.query for tl in chunk],
            [[Candidate(d, t) for d, t in zip(tl.docids, tl.texts, strict=True)] for tl in chunk],
        )
        for tl, ranking in zip(chunk, rankings, strict=True):
            order = fused_teacher_order(tl.qrels_labels, ranking.scores, rrf_k)
            yield {
                "qid": tl.qid,
                "query": tl.query,
                "docids": tl.docids,
                "documents": tl.texts,
                "ranking": order,
            }
        bar.update(len(chunk))
    bar.close()


def write_teacher(path: str, records: Iterator[dict]) -> int:
    """Writes ``records`` as JSON lines to ``path`` (local or ``gs://``; through a temporary
    file renamed at the end, so a killed run leaves no half file); returns their number."""
    target = epath.Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f"{target.name}.partial"
    count = 0
    with partial.open("w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
            count += 1
    partial.rename(target)
    return count
