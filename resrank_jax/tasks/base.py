"""What every ranking model defines once, for training and ranking alike.

A ``Task`` owns, for one model family, how a list of candidates becomes tokens (the prompt and
its slot positions), which batch fields it needs, and how scores are computed from passage
embeddings. ``train/`` (batches, objective) and ``rerank/`` (the rankers) both call it, so
the two cannot drift apart.

Shapes: B lists, K candidates (padded), Lp passage length, Lq query length, L prompt length,
E encoder width.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from resrank_jax.instructions import encoder_query
from resrank_jax.losses import NEG
from resrank_jax.prompts import SlotPrompt, pad_slot_prompts
from resrank_jax.tokenizer import TextTokenizer, bucket_length

ListRows = dict[str, np.ndarray]
PROMPT_MIN_BUCKET = 64


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything ranking needs besides the weights; saved with every run (``config.json``).

    Attributes:
        list_size: candidates per training list; E2Rank: documents in the pseudo-query.
        passage_max_length / query_max_length: encoder tokens per passage / query.
        prompt_max_length: tokens of E2Rank's pseudo-query (its instruction and query are
            never cut; the documents share what remains).
        prompt_doc_words: E2Rank: words kept per document before the token budget.
        pseudo_query_layout: E2Rank: ``released_eval`` or ``released_train`` (``e2rank.py``).
        instructions: the dataset whose instructions the prompts use (``instructions.py``).
    """

    list_size: int = 20
    passage_max_length: int = 128
    query_max_length: int = 64
    prompt_max_length: int = 4096
    prompt_doc_words: int = 1024
    pseudo_query_layout: str = "released_eval"
    instructions: str = "default"


class Task(abc.ABC):
    """One model family's prompt, batch fields and score (see the module docstring).

    Args:
        recipe: prompt and length settings.
        encoder_tokenizer: tokenises passages and queries (and E2Rank's pseudo-query).
        reranker_tokenizer: tokenises the reranker prompt (ResRank); else unused.
    """

    name: ClassVar[str]
    needs_reranker: ClassVar[bool] = False
    has_prompt: ClassVar[bool] = True
    uses_slots: ClassVar[bool] = False

    def __init__(
        self,
        recipe: Recipe,
        encoder_tokenizer: TextTokenizer,
        reranker_tokenizer: TextTokenizer | None = None,
    ) -> None:
        self.recipe = recipe
        self.encoder_tokenizer = encoder_tokenizer
        self.reranker_tokenizer = reranker_tokenizer or encoder_tokenizer

    def with_recipe(self, **changes: Any) -> Task:
        """The same task with some recipe fields changed (e.g. another dataset's instructions)."""
        recipe = dataclasses.replace(self.recipe, **changes)
        return type(self)(recipe, self.encoder_tokenizer, self.reranker_tokenizer)

    # ---- text -> tokens ---------------------------------------------------------------------
    @property
    def prompt_tokenizer(self) -> TextTokenizer:
        """The tokenizer whose pad id pads ``prompt_ids``."""
        return self.encoder_tokenizer

    def query_input(self, query: str) -> str:
        """The encoder's query text (instruction format of its pooling convention)."""
        return encoder_query(self.encoder_tokenizer, query, self.recipe.instructions)

    @abc.abstractmethod
    def prompt(self, query: str, texts: Sequence[str]) -> SlotPrompt:
        """The unpadded prompt the model reads for a list of ``texts`` (best-first order as
        given); for ResRank one slot per text, for E2Rank the pseudo-query."""

    def list_rows(self, query: str, texts: Sequence[str]) -> ListRows:
        """One list tokenised: ``passage_ids/mask [n, Lp]``, ``query_ids/mask [Lq]``,
        ``prompt_ids [l]``, ``slot_pos [n or 0]``, and truncation counts."""
        r, enc = self.recipe, self.encoder_tokenizer
        passages = enc.encode(texts, max_length=r.passage_max_length, pad_to=r.passage_max_length)
        q = enc.encode(
            [self.query_input(query)], max_length=r.query_max_length, pad_to=r.query_max_length
        )
        p = self.prompt(query, texts)
        return {
            "passage_ids": passages.input_ids,
            "passage_mask": passages.attention_mask,
            "query_ids": q.input_ids[0],
            "query_mask": q.attention_mask[0],
            "prompt_ids": np.asarray(p.ids, np.int32),
            "slot_pos": np.asarray(p.slot_positions, np.int32),
            "truncated": np.asarray(
                [passages.num_truncated, q.num_truncated, p.truncated], np.int32
            ),
        }

    def prompt_fields(
        self, prompts: Sequence[SlotPrompt], n_slots: int, prompt_length: int | None = None
    ) -> dict[str, np.ndarray]:
        """``prompt_ids/mask [B, L]`` (left-padded to ``prompt_length``, default the bucket of
        the longest) and, for slot tasks, ``slot_pos [B, K]``; nothing for prompt-less tasks."""
        if not self.has_prompt:
            return {}
        if prompt_length is None:
            prompt_length = prompt_bucket(len(p.ids) for p in prompts)
        padded = pad_slot_prompts(
            prompts, self.prompt_tokenizer.pad_id, pad_to=prompt_length, n_slots=n_slots
        )
        out = {"prompt_ids": padded.ids, "prompt_mask": padded.mask}
        if self.uses_slots:
            out["slot_pos"] = padded.slot_pos
        return out

    # ---- tokens -> scores -------------------------------------------------------------------
    def needs_query(self, model) -> bool:
        """Whether ``score`` reads the encoder's query vector."""
        return False

    @abc.abstractmethod
    def score(
        self, model, e_bke: jax.Array, batch: dict[str, jax.Array], q_be: jax.Array | None
    ) -> jax.Array:
        """Scores ``[B, K]`` from L2-normalised passage embeddings ``e [B, K, E]`` and the
        prompt fields of ``batch`` (``cand_mask [B, K]`` marks real candidates); padded
        candidates get ``losses.NEG``."""

    def forward(
        self, model, batch: dict[str, jax.Array], *, with_query: bool
    ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
        """Training: encodes passages (and the query) and scores them end to end. Returns
        ``(scores [B, K], e [B, K, E], q [B, E] or None)``. A batch with the frozen encoder's
        vectors (``passage_emb``, ``query_emb``: ``train/vectors.py``) is scored as is."""
        if "passage_emb" in batch:
            e_bke, q_be = batch["passage_emb"], batch["query_emb"]
            return self.score(model, e_bke, batch, q_be), e_bke, q_be
        b, k, lp = batch["passage_ids"].shape
        encoder = model.encoder
        e_bke = encoder(
            batch["passage_ids"].reshape(b * k, lp), batch["passage_mask"].reshape(b * k, lp)
        ).reshape(b, k, -1)
        q_be = None
        if with_query or self.needs_query(model):
            q_be = encoder(batch["query_ids"], batch["query_mask"])
        return self.score(model, e_bke, batch, q_be), e_bke, q_be

    # ---- model ------------------------------------------------------------------------------
    def length_fields(self) -> tuple[str, ...]:
        """Recipe lengths the encoder must hold in its positions."""
        return ("passage_max_length", "query_max_length")

    def check(self, model) -> None:
        """Raises if the recipe's lengths exceed the encoder's positions."""
        limit = model.encoder.backbone.cfg.max_position_embeddings
        for field in self.length_fields():
            if getattr(self.recipe, field) > limit:
                raise ValueError(
                    f"{field}={getattr(self.recipe, field)} exceeds the encoder's {limit} "
                    "positions; lower it"
                )

    @staticmethod
    @abc.abstractmethod
    def make_model(encoder, reranker, cfg, seed: int):
        """The trainable module: it has ``.encoder`` (an ``Encoder``), and ``.reranker`` when
        ``needs_reranker``."""


def prompt_bucket(lengths) -> int:
    """The static prompt length for prompts of ``lengths`` tokens."""
    return bucket_length(max(lengths), minimum=PROMPT_MIN_BUCKET)


def masked(scores_bk: jax.Array, cand_mask_bk: jax.Array) -> jax.Array:
    """``scores`` with padded candidates at ``NEG``."""
    return jnp.where(cand_mask_bk.astype(bool), scores_bk, NEG)
