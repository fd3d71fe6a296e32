"""Rankers that score by cosine with passage embeddings: dense (encoder), E2Rank and ResRank
(single pass or sliding window). Passage embeddings come from an ``EmbeddingCache``, so the
vectors of a dense retrieval run serve the reranker too."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from resrank_jax.models.encoder import Encoder
from resrank_jax.models.resrank import ResRank
from resrank_jax.prompts import (
    SlotPrompt,
    chat,
    e2rank_user_message,
    pad_slot_prompts,
    query_text,
    resrank_user_message,
    tokenize_with_slots,
    truncate_words,
)
from resrank_jax.rerank.base import Candidate, Ranker, Ranking, order_by_scores, sliding_windows
from resrank_jax.rerank.encode import EmbeddingCache, encode_texts
from resrank_jax.tokenizer import TextTokenizer, bucket_length


class _EmbeddingRanker(Ranker):
    """Shared plumbing: cached, bucketed passage and query encoding, and stats."""

    def __init__(
        self,
        encoder: Encoder,
        tokenizer: TextTokenizer,
        *,
        passage_max_length: int = 256,
        query_max_length: int = 64,
        cache: EmbeddingCache | None = None,
        batch_size: int = 32,
    ) -> None:
        self.encoder, self.tokenizer = encoder, tokenizer
        self.passage_max_length, self.query_max_length = passage_max_length, query_max_length
        self.cache = cache if cache is not None else EmbeddingCache()
        self.batch_size = batch_size

    def passage_embeddings(self, candidates: list[Candidate], stats: dict[str, int]) -> np.ndarray:
        encode = partial(
            encode_texts,
            self.encoder,
            self.tokenizer,
            max_length=self.passage_max_length,
            batch_size=self.batch_size,
            stats=stats,
        )
        vectors, encoded = self.cache.get_or_encode(
            [c.docid for c in candidates], [c.text for c in candidates], encode
        )
        stats["passages_encoded"] = stats.get("passages_encoded", 0) + encoded
        return vectors

    def query_embedding(
        self, text: str, stats: dict[str, int], max_length: int | None = None
    ) -> np.ndarray:
        return encode_texts(
            self.encoder,
            self.tokenizer,
            [text],
            max_length=max_length or self.query_max_length,
            batch_size=1,
            stats=stats,
        )[0]

    def query_input(self, query: str) -> str:
        """Decoders get the Qwen3-Embedding instruction; BERT encoders the raw query."""
        return query_text(query) if self.encoder.pooling == "last" else query


class DenseRanker(_EmbeddingRanker):
    """Zero-shot dense reranking: ``cos(encoder(query), encoder(passage))``."""

    name = "dense"

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        stats: dict[str, int] = {"model_calls": 0}
        docs = self.passage_embeddings(candidates, stats)
        scores = docs @ self.query_embedding(self.query_input(query), stats)
        return Ranking(order_by_scores(scores), scores, stats)


class E2RankRanker(_EmbeddingRanker):
    """E2Rank: the listwise prompt (top-``top_k`` first-stage documents + query, chat template)
    is embedded as a pseudo-query; score = cosine with every candidate's embedding."""

    name = "e2rank"

    def __init__(
        self,
        encoder,
        tokenizer,
        *,
        top_k: int = 20,
        prompt_doc_words: int = 100,
        prompt_max_length: int = 4096,
        **kw,
    ) -> None:
        super().__init__(encoder, tokenizer, **kw)
        self.top_k, self.prompt_doc_words = top_k, prompt_doc_words
        self.prompt_max_length = prompt_max_length

    def pseudo_query(self, query: str, candidates: list[Candidate]) -> str:
        docs = [truncate_words(c.text, self.prompt_doc_words) for c in candidates[: self.top_k]]
        return chat(self.tokenizer, e2rank_user_message(query, docs))

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        stats: dict[str, int] = {"model_calls": 0}
        docs = self.passage_embeddings(candidates, stats)
        pq = self.query_embedding(
            self.pseudo_query(query, candidates), stats, self.prompt_max_length
        )
        scores = docs @ pq
        return Ranking(order_by_scores(scores), scores, stats)


@jax.jit
def _resrank_score(model, e, ids, mask, pos, slot_mask, query_emb):
    return model.score(e, ids, mask, pos, slot_mask, query_emb)


class ResRankRanker(_EmbeddingRanker):
    """ResRank: one reranker pass over all candidates (``window=None``) or RankGPT-style
    sliding windows (``window=(20, 10)``), each window one pass.

    Args:
        model: the ResRank model (its encoder embeds passages).
        tokenizer: the encoder's tokenizer; ``reranker_tokenizer``: the reranker's.
    """

    name = "resrank"

    def __init__(
        self,
        model: ResRank,
        tokenizer: TextTokenizer,
        reranker_tokenizer: TextTokenizer,
        *,
        window: tuple[int, int] | None = None,
        **kw,
    ) -> None:
        super().__init__(model.encoder, tokenizer, **kw)
        self.model, self.reranker_tokenizer, self.window = model, reranker_tokenizer, window
        if window is not None:
            sliding_windows(window[0], *window)  # validates the sizes
            self.name = f"resrank-window{window[0]}/{window[1]}"

    def slot_prompt(self, query: str, n: int) -> SlotPrompt:
        tok = self.reranker_tokenizer
        return tokenize_with_slots(tok, chat(tok, resrank_user_message(query, n)), tok.pad_id)

    def score_window(self, query: str, e_nd: np.ndarray, query_emb, stats) -> np.ndarray:
        n = len(e_nd)
        prompt = self.slot_prompt(query, n)
        n_pad = bucket_length(n, minimum=4)
        batch = pad_slot_prompts(
            [prompt],
            self.reranker_tokenizer.pad_id,
            pad_to=bucket_length(len(prompt.ids), minimum=64),
            n_slots=n_pad,
        )
        e_pad = np.zeros((1, n_pad, e_nd.shape[1]), np.float32)
        e_pad[0, :n] = e_nd
        scores = _resrank_score(
            self.model, e_pad, batch.ids, batch.mask, batch.slot_pos, batch.slot_mask, query_emb
        )
        stats["tokens_processed"] = stats.get("tokens_processed", 0) + len(prompt.ids)
        stats["model_calls"] += 1
        return np.asarray(scores)[0, :n]

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        stats: dict[str, int] = {"model_calls": 0}
        e_nd = self.passage_embeddings(candidates, stats)
        query_emb = None
        if self.model.cfg.needs_query_vector:
            query_emb = self.query_embedding(self.query_input(query), stats)[None]
        n = len(candidates)
        if self.window is None:
            scores = self.score_window(query, e_nd, query_emb, stats)
            return Ranking(order_by_scores(scores), scores, stats)
        order = np.arange(n)
        for start, end in sliding_windows(n, *self.window):
            idx = order[start:end]
            window_scores = self.score_window(query, e_nd[idx], query_emb, stats)
            order[start:end] = idx[order_by_scores(window_scores)]
        scores = np.empty(n)
        scores[order] = np.arange(n, 0, -1)
        return Ranking(order, scores, stats)
