"""The ``Ranker`` interface shared by every ranker, and its input/output types.

Documented edge cases (the same for every ranker):
- ``N = 0``: ``EmptyCandidatesError`` naming the query (never a silent empty ranking).
- ``N = 1``: the single candidate is returned as is (no model call), score = first-stage score.
- duplicate candidates (same docid twice) are kept and ranked as separate entries; each index
  appears once in ``Ranking.order``.
- over-long passages are truncated to the ranker's token limit, counted in
  ``Ranking.stats["truncated"]`` and warned about once per tokenizer.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator, Sequence

import numpy as np


class EmptyCandidatesError(ValueError):
    """A query came with no candidates to rank."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    docid: str
    text: str = ""
    score: float = 0.0  # first-stage score


@dataclasses.dataclass
class Ranking:
    """``order``: candidate indices best first; ``scores``: one per candidate (higher is
    better); ``stats``: counters such as ``tokens_processed``, ``tokens_generated``,
    ``truncated``, ``model_calls``."""

    order: np.ndarray
    scores: np.ndarray
    stats: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class RerankResult:
    """What ``Ranker.rerank`` returns: iterating gives ``(index, score)`` pairs best first
    (``index`` into the documents as given).

    Attributes:
        order: document indices, best first.
        scores: one score per document, in the order given (higher is better).
        docids: the documents' ids best first (a plain string's id is its index, as text).
        stats: the ranker's counters (``Ranking.stats``).
    """

    order: np.ndarray
    scores: np.ndarray
    docids: list[str]
    stats: dict[str, int] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return ((int(i), float(self.scores[i])) for i in self.order)

    def __len__(self) -> int:
        return len(self.order)

    def top(self, k: int) -> list[tuple[int, float]]:
        """The best ``k`` ``(index, score)`` pairs."""
        return list(self)[:k]


def as_candidates(docs: Sequence[str | Candidate]) -> list[Candidate]:
    """Documents as ``Candidate``s: a plain string becomes ``Candidate(str(index), text)``."""
    out = []
    for i, doc in enumerate(docs):
        if isinstance(doc, Candidate):
            out.append(doc)
        elif isinstance(doc, str):
            out.append(Candidate(str(i), doc))
        else:
            raise TypeError(f"document {i}: expected a str or Candidate, got {type(doc).__name__}")
    return out


def order_by_scores(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties keep the first-stage order (stable)."""
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


class Ranker(abc.ABC):
    """Ranks a query's candidates. Subclasses implement ``_rank`` for ``N >= 2``."""

    name: str = "ranker"

    def rank(self, query: str, candidates: Sequence[Candidate]) -> Ranking:
        return self.rank_batch([query], [candidates])[0]

    def _edge_case(self, query: str, candidates: Sequence[Candidate]) -> Ranking | None:
        """The documented ``N = 0`` (an error) and ``N = 1`` (no model call) cases; ``None``
        for a list the model ranks."""
        if len(candidates) == 0:
            raise EmptyCandidatesError(f"{self.name}: query {query!r} has no candidates to rank")
        if len(candidates) == 1:
            return Ranking(
                np.zeros(1, np.int64), np.array([candidates[0].score]), {"model_calls": 0}
            )
        return None

    def rerank(self, query: str, docs: Sequence[str | Candidate]) -> RerankResult:
        """Ranks ``docs`` (plain strings, ``Candidate``s, or both) for ``query``:
        ``ranker.rerank("what is a flea?", ["text", ...])``. Scores and order are
        ``rank``'s."""
        if isinstance(docs, str):
            raise TypeError("docs must be a sequence of documents, not one string")
        return self.rerank_batch([query], [docs])[0]

    def rank_batch(
        self, queries: Sequence[str], candidate_lists: Sequence[Sequence[Candidate]]
    ) -> list[Ranking]:
        """``rank`` for several queries at once (``candidate_lists[i]`` for ``queries[i]``);
        rankings equal ``rank``'s. Lists of two or more candidates go through ``_rank_batch``
        (one model call per bucket of queries where the ranker supports it)."""
        if len(queries) != len(candidate_lists):
            raise ValueError(f"{len(queries)} queries for {len(candidate_lists)} lists")
        out = [self._edge_case(q, c) for q, c in zip(queries, candidate_lists, strict=True)]
        todo = [i for i, ranking in enumerate(out) if ranking is None]
        if not todo:
            return out
        rankings = self._rank_batch(
            [queries[i] for i in todo], [list(candidate_lists[i]) for i in todo]
        )
        for i, ranking in zip(todo, rankings, strict=True):
            n = len(candidate_lists[i])
            if sorted(ranking.order.tolist()) != list(range(n)):
                raise AssertionError(f"{self.name} returned an invalid permutation {ranking.order}")
            out[i] = ranking
        return out

    def rerank_batch(
        self, queries: Sequence[str], docs: Sequence[Sequence[str | Candidate]]
    ) -> list[RerankResult]:
        """``rerank`` for several queries: ``docs[i]`` are query ``i``'s documents."""
        if isinstance(queries, str):
            raise TypeError("queries must be a sequence of queries, not one string")
        lists = []
        for i, d in enumerate(docs):
            if isinstance(d, str):
                raise TypeError(f"docs[{i}] must be a sequence of documents, not one string")
            lists.append(as_candidates(d))
        rankings = self.rank_batch(queries, lists)
        return [
            RerankResult(
                np.asarray(r.order),
                np.asarray(r.scores),
                [c[i].docid for i in np.asarray(r.order).tolist()],
                dict(r.stats),
            )
            for r, c in zip(rankings, lists, strict=True)
        ]

    @abc.abstractmethod
    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking: ...

    def _rank_batch(
        self, queries: list[str], candidate_lists: list[list[Candidate]]
    ) -> list[Ranking]:
        """Rankings of lists with ``N >= 2``; by default one ``_rank`` call per query."""
        return [self._rank(q, c) for q, c in zip(queries, candidate_lists, strict=True)]

    def for_dataset(self, instructions: str) -> Ranker:
        """This ranker with a dataset's instructions (``resrank_jax.instructions``); rankers
        without instructions return themselves."""
        return self


class IdentityRanker(Ranker):
    """Keeps the first-stage (BM25) order; scores are ``N - position``."""

    def __init__(self, name: str = "identity") -> None:
        self.name = name

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        n = len(candidates)
        return Ranking(np.arange(n), np.arange(n, 0, -1, dtype=np.float64), {"model_calls": 0})


def sliding_windows(n: int, window: int, step: int) -> list[tuple[int, int]]:
    """RankGPT's windows ``[start, end)`` from the bottom of the list to the top."""
    if window < 2 or step < 1 or step > window:
        raise ValueError(f"need window >= 2 and 1 <= step <= window, got {window}/{step}")
    spans, end = [], n
    while True:
        start = max(0, end - window)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= step
