"""E2Rank's task: the listwise pseudo-query, embedded by the same encoder as the documents;
score = cosine(pseudo-query, document) for every candidate.

The layout follows E2Rank's released code (github Alibaba-NLP/E2Rank). ``released_eval``
(default; ``src/eval.py``, which produced the published numbers): the user message
``{instruction}\\n{Documents}:\\n[1] d1\\n...\\n[K] dK\\nSearch Query: {q}`` in the chat
template with the assistant turn opened and thinking disabled; nothing is appended, so the
pooled (last) token is the template's last token. ``released_train`` (``src/data.py``):
``...\\nQuery: {q}<pad>`` (Qwen's pad ``<|endoftext|>`` inside the user turn; here the
encoder's pooling token, which is that for Qwen tokenizers), same template.
Documents: the first ``list_size`` candidates, each cut to ``prompt_doc_words`` words
(1024 as released); the instruction and the query are never cut: when the prompt exceeds
``prompt_max_length`` tokens the documents share what remains (each cut to the same token
cap, shorter ones keep theirs). BERT encoders (our variant) read the message without a
chat template.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from resrank_jax.instructions import instructions_for
from resrank_jax.models.embedding_model import EmbeddingModel
from resrank_jax.prompts import SlotPrompt, chat, truncate_words
from resrank_jax.tasks.base import Task, masked
from resrank_jax.tokenizer import TextTokenizer


def prompt_token_ids(tok: TextTokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: chat-templated text carries its own special tokens;
    a BERT prompt gets ``[CLS] ... [SEP]``."""
    return tok.hf(text, add_special_tokens=tok.pooling != "last", verbose=False)["input_ids"]


def token_cap(lengths: Sequence[int], budget: int) -> int:
    """The largest per-document cap ``c`` with ``sum(min(l, c)) <= budget``."""
    lo, hi = 0, max(lengths, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(n, mid) for n in lengths) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


class E2RankTask(Task):
    name = "e2rank"

    def user_message(self, query: str, docs: Sequence[str]) -> str:
        """The pseudo-query's user message (``recipe.pseudo_query_layout``)."""
        ins = instructions_for(self.recipe.instructions)
        listed = "\n".join(f"[{i}] {d}" for i, d in enumerate(docs, start=1))
        head = f"{ins.rerank}\n{ins.items}:\n{listed}\n"
        if self.recipe.pseudo_query_layout == "released_train":
            return f"{head}Query: {query}{self.encoder_tokenizer.pooling_token}"
        return f"{head}Search Query: {query}"

    def render(self, query: str, docs: Sequence[str]) -> list[int]:
        tok = self.encoder_tokenizer
        message = self.user_message(query, docs)
        return prompt_token_ids(tok, chat(tok, message) if tok.pooling == "last" else message)

    def prompt(self, query: str, texts: Sequence[str]) -> SlotPrompt:
        r = self.recipe
        docs = [truncate_words(t, r.prompt_doc_words) for t in texts[: r.list_size]]
        ids = self.render(query, docs)
        if len(ids) <= r.prompt_max_length:
            return SlotPrompt(ids, [])
        return SlotPrompt(self.fit(query, docs), [], truncated=1)

    def fit(self, query: str, docs: list[str]) -> list[int]:
        """The prompt within ``prompt_max_length`` tokens: documents cut to a common token cap
        (re-rendered text, so tokens are those of the final string)."""
        tok, limit = self.encoder_tokenizer, self.recipe.prompt_max_length
        fixed = len(self.render(query, [""] * len(docs)))
        if fixed > limit:
            raise ValueError(
                f"the E2Rank prompt without documents takes {fixed} tokens > prompt_max_length="
                f"{limit}; raise it or shorten the query"
            )
        doc_ids = [tok.hf(d, add_special_tokens=False)["input_ids"] for d in docs]
        budget = limit - fixed
        while True:
            cap = token_cap([len(d) for d in doc_ids], budget)
            cut = [tok.hf.decode(d[:cap]).strip() for d in doc_ids]
            ids = self.render(query, cut)
            if len(ids) <= limit or budget <= 0:
                return ids
            budget -= len(ids) - limit  # re-tokenised text came out longer: cap a bit lower

    def length_fields(self) -> tuple[str, ...]:
        return (*super().length_fields(), "prompt_max_length")

    def score(self, model: EmbeddingModel, e_bke, batch, q_be) -> jax.Array:
        pseudo_be = model.encoder(batch["prompt_ids"], batch["prompt_mask"])
        return masked(jnp.einsum("be,bke->bk", pseudo_be, e_bke), batch["cand_mask"])

    @staticmethod
    def make_model(encoder, reranker, cfg, seed: int) -> EmbeddingModel:
        return EmbeddingModel(encoder)
