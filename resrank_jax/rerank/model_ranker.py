"""The ranker of any registered model (``resrank_jax.tasks``): dense, E2Rank and ResRank
(single pass or RankGPT-style sliding windows) all rank through their task's ``prompt`` and
``score``, the very functions training calls. Passage embeddings come from an
``EmbeddingCache``, so the vectors of a dense retrieval run serve the reranker too."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from functools import partial

import jax
import numpy as np

from resrank_jax.rerank.base import Candidate, Ranker, Ranking, order_by_scores, sliding_windows
from resrank_jax.rerank.encode import EmbeddingCache, encode_texts, encoder_fingerprint
from resrank_jax.tasks import Task
from resrank_jax.tokenizer import bucket_length

MIN_SLOTS = 4  # N is padded to a power of two >= this: a handful of compiled shapes
MAX_BATCH = 8  # lists per model call (their count is padded to a power of two)


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
        max_batch: lists (queries, or windows of several queries) per model call in
            ``rank_batch``; ``rank`` makes calls of one.
    """

    def __init__(
        self,
        task: Task,
        model,
        *,
        window: tuple[int, int] | None = None,
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
        max_batch: int = MAX_BATCH,
    ) -> None:
        task.check(model)
        self.task, self.model, self.window = task, model, window
        self.cache = cache if cache is not None else EmbeddingCache()
        self.batch_size, self.max_batch = batch_size, max_batch
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
        sharing its compiled score, and its cache while the encoder is unchanged (a frozen
        encoder's vectors are reused; a trained one starts an empty cache, so evaluations
        never pile up vectors of old encoders)."""
        ranker = copy.copy(self)
        ranker.model, ranker._fingerprint = model, None
        if ranker.encoder_key != self.encoder_key:
            ranker.cache = EmbeddingCache()
        return ranker

    def with_cache(self, cache: EmbeddingCache) -> ModelRanker:
        """This ranker reading and filling ``cache``, which any other ranker may share: its
        keys hold the encoder's fingerprint, so only equal encoders reuse vectors."""
        ranker = copy.copy(self)
        ranker.cache = cache
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

    def embedded(self, query: str, candidates: list[Candidate]) -> _List:
        """One query's list with its passage (and, if the task reads it, query) vectors."""
        stats: dict[str, int] = {"model_calls": 0}
        e_ne = self.passage_embeddings(candidates, stats)
        q_1e = self.query_embedding(query, stats) if self.task.needs_query(self.model) else None
        return _List(query, candidates, e_ne, q_1e, stats)

    def score_lists(self, lists: Sequence[_List]) -> list[np.ndarray]:
        """Scores ``[N_i]`` of each list, ``max_batch`` lists per model call: the task's prompt
        for each list, the number of lists, N and the prompt length padded to buckets (padded
        lists and slots score nothing)."""
        out: list[np.ndarray] = []
        for start in range(0, len(lists), self.max_batch):
            out += self._score_call(lists[start : start + self.max_batch])
        return out

    def call_inputs(
        self, lists: Sequence[_List]
    ) -> tuple[np.ndarray, dict, np.ndarray | None, list]:
        """What one model call over ``lists`` (at most ``max_batch``) reads: passage vectors
        ``[B, N, E]``, the task's prompt fields with ``cand_mask [B, N]`` and query vectors
        ``[B, E]`` (or None), the number of lists, N and the prompt length padded to buckets;
        then each list's prompt."""
        sizes = [len(x.candidates) for x in lists]
        n_pad = bucket_length(max(sizes), minimum=MIN_SLOTS)
        b_pad = bucket_length(len(lists), minimum=1)
        prompts = [self.task.prompt(x.query, [c.text for c in x.candidates]) for x in lists]
        batch = self.task.prompt_fields(prompts + prompts[:1] * (b_pad - len(lists)), n_pad)
        e_bne = np.zeros((b_pad, n_pad, lists[0].e_ne.shape[1]), np.float32)
        batch["cand_mask"] = np.zeros((b_pad, n_pad), np.int32)
        for i, (x, n) in enumerate(zip(lists, sizes, strict=True)):
            e_bne[i, :n] = x.e_ne
            batch["cand_mask"][i, :n] = 1
        q_be = None
        if lists[0].q_1e is not None:
            q_be = np.concatenate([x.q_1e for x in lists] + [lists[0].q_1e] * (b_pad - len(lists)))
        return e_bne, batch, q_be, prompts

    def _score_call(self, lists: Sequence[_List]) -> list[np.ndarray]:
        """One model call over ``lists`` (at most ``max_batch``)."""
        *inputs, prompts = self.call_inputs(lists)
        scores = np.asarray(self._score(self.model, *inputs))
        for x, prompt in zip(lists, prompts, strict=True):
            x.stats["tokens_processed"] = x.stats.get("tokens_processed", 0) + len(prompt.ids)
            x.stats["truncated"] = x.stats.get("truncated", 0) + prompt.truncated
            x.stats["model_calls"] += 1
        return [scores[i, : len(x.candidates)] for i, x in enumerate(lists)]

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        return self._rank_batch([query], [candidates])[0]

    def _rank_batch(
        self, queries: list[str], candidate_lists: list[list[Candidate]]
    ) -> list[Ranking]:
        lists = [self.embedded(q, c) for q, c in zip(queries, candidate_lists, strict=True)]
        if self.window is not None:
            return self._rank_windows(lists)
        scores = self.score_lists(lists)
        return [Ranking(order_by_scores(s), s, x.stats) for s, x in zip(scores, lists, strict=True)]

    def _rank_windows(self, lists: list[_List]) -> list[Ranking]:
        """RankGPT's sliding windows, bottom-up; window ``t`` of every list goes in one batch
        (a list's windows depend on each other, different lists' do not)."""
        orders = [np.arange(len(x.candidates)) for x in lists]
        spans = [sliding_windows(len(x.candidates), *self.window) for x in lists]
        for step in range(max(len(s) for s in spans)):
            active = [i for i, s in enumerate(spans) if step < len(s)]
            windows = [lists[i].subset(orders[i][slice(*spans[i][step])]) for i in active]
            for i, window_scores in zip(active, self.score_lists(windows), strict=True):
                idx = orders[i][slice(*spans[i][step])]
                orders[i][slice(*spans[i][step])] = idx[order_by_scores(window_scores)]
        rankings = []
        for order, x in zip(orders, lists, strict=True):
            scores = np.empty(len(order))
            scores[order] = np.arange(len(order), 0, -1)
            rankings.append(Ranking(order, scores, x.stats))
        return rankings


@dataclasses.dataclass
class _List:
    """One query's candidates with their vectors ``e_ne [N, E]`` (and ``q_1e [1, E]``) and the
    query's counters."""

    query: str
    candidates: list[Candidate]
    e_ne: np.ndarray
    q_1e: np.ndarray | None
    stats: dict[str, int]

    def subset(self, idx: np.ndarray) -> _List:
        """The candidates at ``idx`` (a window), sharing the counters."""
        return _List(
            self.query, [self.candidates[i] for i in idx], self.e_ne[idx], self.q_1e, self.stats
        )
