"""Static-shape training batches, tokenised once, and a deterministic, checkpointable iterator.

Passages are padded to ``passage_max_length`` and prompts to the bucket (``bucket_length``)
of the longest prompt in the global batch, so the train step compiles once per prompt bucket
it meets in a stage (usually one or two: one long query no longer pads every batch to its
length). Batch fields (B lists, K candidates):
``passage_ids/mask [B, K, Lp]``, ``query_ids/mask [B, Lq]``, ``prompt_ids/mask [B, Lr]``,
``slot_pos [B, K]`` (ResRank) or ``pseudo_ids/mask [B, Lr]`` (E2Rank), ``labels [B, K]``,
``cand_mask [B, K]``, ``positive [B]``.

Tokenisation gives per-list rows (``ListRows``, n <= K candidates): ``passage_ids/mask
[n, Lp]``, ``query_ids/mask [Lq]``, ``prompt_ids [l]`` (the unpadded reranker prompt, or the
E2Rank pseudo-query), ``slot_pos [n]`` (ResRank; empty for E2Rank) and ``qrels_labels`` /
``teacher_labels [n]`` float32. ``assemble_batch`` pads any B of them to a batch; the rows
live in memory (``BatchBuilder``) or in a random-access store (``resrank_jax.data.array_record``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

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
from resrank_jax.tokenizer import TextTokenizer, bucket_length
from resrank_jax.train.lists import TrainingList

ListRows = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """What fixes the batch shapes besides the rows and their prompt bucket: the mode, K
    (``list_size``), Lp and the id that pads prompts."""

    mode: str
    list_size: int
    passage_max_length: int
    prompt_pad_id: int


def prompt_bucket(rows: Sequence[ListRows]) -> int:
    """Lr for a batch of ``rows``: the bucket of its longest prompt."""
    return bucket_length(max(len(row["prompt_ids"]) for row in rows), minimum=64)


def assemble_batch(
    rows: Sequence[ListRows], labels: str, layout: BatchLayout, prompt_length: int
) -> dict[str, np.ndarray]:
    """The batch of ``rows`` (one per list) with ``labels`` ``qrels`` or ``teacher``, prompts
    padded to ``prompt_length``."""
    b, k, lp = len(rows), layout.list_size, layout.passage_max_length
    passage_ids = np.zeros((b, k, lp), np.int32)
    passage_mask = np.zeros((b, k, lp), np.int32)
    label_arr = np.zeros((b, k), np.float32)
    cand_mask = np.zeros((b, k), np.int32)
    for i, row in enumerate(rows):
        n = len(row["passage_ids"])
        passage_ids[i, :n], passage_mask[i, :n] = row["passage_ids"], row["passage_mask"]
        label_arr[i, :n] = row[f"{labels}_labels"]
        cand_mask[i, :n] = 1
    slots = pad_slot_prompts(
        [SlotPrompt(row["prompt_ids"], row["slot_pos"]) for row in rows],
        layout.prompt_pad_id,
        pad_to=prompt_length,
        n_slots=k,
    )
    out = {
        "passage_ids": passage_ids,
        "passage_mask": passage_mask,
        "query_ids": np.stack([row["query_ids"] for row in rows]),
        "query_mask": np.stack([row["query_mask"] for row in rows]),
        "labels": label_arr,
        "cand_mask": cand_mask,
        "positive": np.argmax(np.where(cand_mask > 0, label_arr, -np.inf), axis=1).astype(np.int32),
    }
    if layout.mode == "resrank":
        out.update(prompt_ids=slots.ids, prompt_mask=slots.mask, slot_pos=slots.slot_pos)
    else:
        out.update(pseudo_ids=slots.ids, pseudo_mask=slots.mask)
    return out


class ListBatches:
    """Batches of any subset of tokenised lists: ``rows`` is any random-access sequence of
    ``ListRows`` (a list in memory, or an ArrayRecord data source)."""

    def __init__(
        self, rows: Sequence[ListRows], layout: BatchLayout, stats: dict[str, int]
    ) -> None:
        self.rows, self.layout, self.stats = rows, layout, stats

    def __len__(self) -> int:
        return len(self.rows)

    def batch(
        self, indices: np.ndarray, labels: str, *, batch_indices: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """The lists ``indices`` with ``labels`` ``qrels`` or ``teacher``. Prompts are padded to
        the bucket of the longest prompt among ``batch_indices`` (default ``indices``): each
        process passes the whole global batch there, so all local shards get one shape."""
        read = {
            int(i): self.rows[int(i)] for i in (indices if batch_indices is None else batch_indices)
        }
        rows = [read[int(i)] for i in indices]  # each row is read once (local within global)
        return assemble_batch(rows, labels, self.layout, prompt_bucket(list(read.values())))


class BatchBuilder(ListBatches):
    """Tokenises every list once into rows held in memory."""

    def __init__(
        self,
        lists: list[TrainingList],
        encoder_tokenizer: TextTokenizer,
        reranker_tokenizer: TextTokenizer,
        *,
        mode: str,
        list_size: int,
        passage_max_length: int,
        query_max_length: int,
        prompt_doc_words: int = 40,
        prompt_max_length: int = 1024,
    ) -> None:
        enc = encoder_tokenizer
        stats = {"truncated_passages": 0, "truncated_queries": 0}
        passages = []
        for tl in lists:
            e = enc.encode(tl.texts, max_length=passage_max_length, pad_to=passage_max_length)
            stats["truncated_passages"] += e.num_truncated
            passages.append(e)
        q_texts = [query_text(tl.query) if enc.pooling == "last" else tl.query for tl in lists]
        queries = enc.encode(q_texts, max_length=query_max_length, pad_to=query_max_length)
        stats["truncated_queries"] = queries.num_truncated
        rr = reranker_tokenizer
        if mode == "resrank":
            prompts = [
                tokenize_with_slots(
                    rr, chat(rr, resrank_user_message(tl.query, len(tl.docids))), rr.pad_id
                )
                for tl in lists
            ]
        else:  # e2rank: the encoder embeds the pseudo-query, tokenised as at inference
            texts = [
                chat(
                    enc,
                    e2rank_user_message(
                        tl.query, [truncate_words(t, prompt_doc_words) for t in tl.texts]
                    ),
                )
                for tl in lists
            ]
            rows_ids, stats["truncated_prompts"] = enc.token_rows(
                texts, max_length=prompt_max_length
            )
            prompts = [SlotPrompt(ids, []) for ids in rows_ids]
        layout = BatchLayout(
            mode=mode,
            list_size=list_size,
            passage_max_length=passage_max_length,
            prompt_pad_id=(rr if mode == "resrank" else enc).pad_id,
        )
        rows = [
            {
                "passage_ids": e.input_ids,
                "passage_mask": e.attention_mask,
                "query_ids": queries.input_ids[i],
                "query_mask": queries.attention_mask[i],
                "prompt_ids": np.asarray(p.ids, np.int32),
                "slot_pos": np.asarray(p.slot_positions, np.int32),
                "qrels_labels": tl.qrels_labels,
                "teacher_labels": tl.teacher_labels,
            }
            for i, (tl, e, p) in enumerate(zip(lists, passages, prompts, strict=True))
        ]
        super().__init__(rows, layout, stats)

    @classmethod
    def from_config(cls, lists, encoder_tokenizer, reranker_tokenizer, cfg) -> BatchBuilder:
        """The builder a ``TrainConfig`` describes."""
        d = cfg.data
        return cls(
            lists,
            encoder_tokenizer,
            reranker_tokenizer,
            mode=cfg.model.mode,
            list_size=d.list_size,
            passage_max_length=d.passage_max_length,
            query_max_length=d.query_max_length,
            prompt_doc_words=d.prompt_doc_words,
            prompt_max_length=d.prompt_max_length,
        )


@dataclasses.dataclass
class IteratorState:
    """Where the iterator is: epoch and the next list within that epoch's permutation."""

    epoch: int = 0
    cursor: int = 0


class ListIterator:
    """Batches of ``batch_size`` lists in a seeded permutation per epoch (remainder dropped).

    ``state`` is plain data saved with every checkpoint; the same seed and state always give
    the same next batch. ``process_slice`` selects this process's contiguous rows.
    """

    def __init__(
        self, num_lists: int, batch_size: int, seed: int, state: IteratorState | None = None
    ):
        if num_lists < batch_size:
            raise ValueError(f"{num_lists} training lists cannot fill a batch of {batch_size}")
        self.num_lists, self.batch_size, self.seed = num_lists, batch_size, seed
        self.state = state or IteratorState()

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_lists)

    def next_indices(self) -> np.ndarray:
        s = self.state
        if s.cursor + self.batch_size > self.num_lists:
            s.epoch, s.cursor = s.epoch + 1, 0
        indices = self._order(s.epoch)[s.cursor : s.cursor + self.batch_size]
        s.cursor += self.batch_size
        return indices
