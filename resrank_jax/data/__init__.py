"""Readers and validation for the formats rerankers use (rank_llm / RankGPT JSON(L), TREC,
BEIR, E2Rank listwise lists), and training-list construction."""
