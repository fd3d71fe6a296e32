"""The generative listwise baseline (RankGPT / RankZephyr style) on the same backbone: full
passage texts in the prompt, greedy decoding of ``[3] > [1] > ...`` with a KV cache, sliding
window 20/10, and parsing that turns any output into a valid permutation."""

from __future__ import annotations

import re

import numpy as np

from resrank_jax.models.decoder import Decoder
from resrank_jax.models.generation import greedy_generate
from resrank_jax.prompts import (
    SlotPrompt,
    chat,
    pad_slot_prompts,
    rankgpt_user_message,
    truncate_words,
)
from resrank_jax.rerank.base import Candidate, Ranker, Ranking, sliding_windows
from resrank_jax.tokenizer import TextTokenizer, bucket_length


def parse_permutation(text: str, n: int) -> list[int]:
    """0-based permutation of ``n`` items from a model's answer such as ``[2] > [1] > [3]``.

    Numbers outside ``1..n`` and repeats are dropped; items never mentioned follow in their
    original order. Any string yields a valid permutation.
    """
    seen: list[int] = []
    for match in re.findall(r"\d+", text):
        i = int(match) - 1
        if 0 <= i < n and i not in seen:
            seen.append(i)
    return seen + [i for i in range(n) if i not in seen]


class GenerativeRanker(Ranker):
    """Full-text listwise reranking by generated permutations, window/step from the bottom."""

    def __init__(
        self,
        model: Decoder,
        tokenizer: TextTokenizer,
        *,
        window: int = 20,
        step: int = 10,
        passage_words: int = 100,
        max_new_tokens: int | None = None,
    ) -> None:
        sliding_windows(window, window, step)  # validates the sizes
        self.model, self.tokenizer = model, tokenizer
        self.window, self.step, self.passage_words = window, step, passage_words
        self.max_new_tokens = max_new_tokens or 5 * window + 8  # "[20] > " is ~5 tokens
        self.name = f"generative-window{window}/{step}"

    def permute(self, query: str, window: list[Candidate], stats: dict[str, int]) -> list[int]:
        tok = self.tokenizer
        docs = [truncate_words(c.text, self.passage_words) for c in window]
        stats["truncated"] = stats.get("truncated", 0) + sum(
            len(c.text.split()) > self.passage_words for c in window
        )
        prompt = tok.hf(chat(tok, rankgpt_user_message(query, docs)), add_special_tokens=False)
        ids = prompt["input_ids"]
        batch = pad_slot_prompts(
            [SlotPrompt(ids, [])], tok.pad_id, pad_to=bucket_length(len(ids), minimum=64)
        )
        tokens, generated = greedy_generate(
            self.model,
            batch.ids,
            batch.mask,
            max_new_tokens=self.max_new_tokens,
            stop_ids=(tok.eos_id,),
            pad_id=tok.pad_id,
        )
        n_gen = int(generated[0])
        stats["tokens_processed"] = stats.get("tokens_processed", 0) + len(ids) + n_gen
        stats["tokens_generated"] = stats.get("tokens_generated", 0) + n_gen
        stats["model_calls"] += 1
        answer = tok.hf.decode(np.asarray(tokens)[0, :n_gen], skip_special_tokens=True)
        return parse_permutation(answer, len(window))

    def _rank(self, query: str, candidates: list[Candidate]) -> Ranking:
        stats: dict[str, int] = {"model_calls": 0}
        n = len(candidates)
        order = np.arange(n)
        for start, end in sliding_windows(n, self.window, self.step):
            idx = order[start:end]
            perm = self.permute(query, [candidates[i] for i in idx], stats)
            order[start:end] = idx[perm]
        scores = np.empty(n)
        scores[order] = np.arange(n, 0, -1)
        return Ranking(order, scores, stats)
