"""Rankers: one interface for BM25/identity, dense, E2Rank, ResRank and generative listwise."""

from resrank_jax.rerank.base import (
    Candidate,
    EmptyCandidatesError,
    Ranker,
    Ranking,
    RerankResult,
)

__all__ = ["Candidate", "EmptyCandidatesError", "Ranker", "Ranking", "RerankResult"]
