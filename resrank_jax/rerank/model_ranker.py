"""The ranker of any registered model (``resrank_jax.tasks``): dense, E2Rank and ResRank
(single pass or RankGPT-style sliding windows) all rank through their task's ``prompt`` and
``score``, the very functions training calls. Passage embeddings come from an
``EmbeddingCache``, so the vectors of a dense retrieval run serve the reranker too."""

from __future__ import annotations

import copy
from functools import partial

import jax
import numpy as np

from resrank_jax.rerank.base import Candidate, Ranker, Ranking, order_by_scores, sliding_windows
from resrank_jax.rerank.encode import EmbeddingCache, encode_texts, encoder_fingerprint
from resrank_jax.tasks import Task
from resrank_jax.tokenizer import bucket_length

MIN_SLOTS = 4  # N is padded to a power of two >= this: a handful of compiled shapes


class ModelRanker(Ranker):
    """Ranks with ``task`` and ``model`` (a module with ``.encoder``, and ``.reranker`` for
    ResRank).

    Args:
        task: the model's task (prompt, batch fields, score) and its recipe.
        model: the trained or zero-shot model.
        window: ``None`` for one pass over all candidates, or ``(size, step)`` sliding windows
            from the bottom of the list to the top, one pass each.
        cache: shared passage vectors (keyed by encoder, length and text).
        batch_size: passages per encoder call.
    """

    def __init__(
        self,
        task: Task,
        model,
        *,
        window: tuple[int, int] | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
    ) -> None:
        task.check(model)
        self.task, self.model, self.window = task, model, window
        self.cache = cache if cache is not None else EmbeddingCache()
        self.batch_size = batch_size
        self.name = task.name
        if window is not None:
            sliding_windows(window[0], *window)  # validates the sizes
            self.name = f"{task.name}-window{window[0]}/{window[1]}"
        self._score = jax.jit(task.score)
        self._fingerprint: str | None = None

    def for_dataset(self, instructions: str) -> ModelRanker:
        """This ranker with another dataset's instructions, sharing its model, cache, window
        and compiled score (scores do not depend on the instructions)."""
        ranker = copy.copy(self)
        ranker.task = self.task.with_recipe(instructions=instructions)
        return ranker

    def with_model(self, model) -> ModelRanker:
        """This ranker with other weights of the same model (training's dev evaluation),
        sharing its compiled score; passage vectors start from an empty cache."""
        ranker = copy.copy(self)
        ranker.model, ranker.cache, ranker._fingerprint = model, EmbeddingCache(), None
        return ranker

    @property
    def encoder_key(self) -> tuple[str, int]:
        """``(encoder fingerprint, passage max length)``: the cache key of this ranker's
        passage vectors."""
        if self._fingerprint is None:
            self._fingerprint = encoder_fingerprint(self.model.encoder, self.task.encoder_tokenizer)
        return self._fingerprint, self.task.recipe.passage_max_length

    def passage_embeddings(self, candidates: list[Candidate], stats: dict[str, int]) -> np.ndarray:
        """L2-normalised vectors ``[N, E]`` (cached or encoded now)."""
        encode = partial(
            encode_texts,
            self.model.encoder,
            self.task.encoder_tokenizer,
            max_length=self.task.recipe.passage_max_length,
            batch_size=self.batch_size,
            stats=stats,
        )
        vectors, encoded = self.cache.get_or_encode(
            self.encoder_key, [c.text for c in candidates], encode
        )
        stats["passages_encoded"] = stats.get("passages_encoded", 0) + encoded
        return vectors

    def query_embedding(self, query: str, stats: dict[str, int]) -> np.ndarray:
        """The encoder's query vector ``[1, E]`` (the task's query format)."""
        return encode_texts(
            self.model.encoder,
            self.task.encoder_tokenizer,
            [self.task.query_input(query)],
            max_length=self.task.recipe.query_max_length,
            batch_size=1,
            stats=stats,
        )

    def score_list(
        self,
        query: str,
        candidates: list[Candidate],
        e_ne: np.ndarray,
        q_1e: np.ndarray | None,
        stats: dict[str, int],
    ) -> np.ndarray:
        """Scores ``[N]`` of one list in one model call: the task's prompt for these
        candidates, N padded to a bucket (padded slots score nothing)."""
        n = len(candidates)
        n_pad = bucket_length(n, minimum=MIN_SLOTS)
        prompt = self.task.prompt(query, [c.text for c in candidates])
        batch = self.task.prompt_fields([prompt], n_slots=n_pad)
        batch["cand_mask"] = (np.arange(n_pad) < n).astype(np.int32)[None]
        e_pad = np.zeros((1, n_pad, e_ne.shape[1]), np.float32)
        e_pad[0, :n] = e_ne
        scores = self._score(self.model, e_pad, batch, q_1e)
        stats["tokens_processed"] = stats.get("tokens_processed", 0) + len(prompt.ids)
        stats["truncated"] = stats.get("truncated", 0) + prompt.truncated
        stats["model_calls"] += 1
        return np.asarray(scores)[0, :n]

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        stats: dict[str, int] = {"model_calls": 0}
        e_ne = self.passage_embeddings(candidates, stats)
        q_1e = self.query_embedding(query, stats) if self.task.needs_query(self.model) else None
        n = len(candidates)
        if self.window is None:
            scores = self.score_list(query, candidates, e_ne, q_1e, stats)
            return Ranking(order_by_scores(scores), scores, stats)
        order = np.arange(n)
        for start, end in sliding_windows(n, *self.window):
            idx = order[start:end]
            window = [candidates[i] for i in idx]
            window_scores = self.score_list(query, window, e_ne[idx], q_1e, stats)
            order[start:end] = idx[order_by_scores(window_scores)]
        scores = np.empty(n)
        scores[order] = np.arange(n, 0, -1)
        return Ranking(order, scores, stats)
