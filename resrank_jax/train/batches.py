"""Static-shape training batches, tokenised once, and a deterministic, checkpointable iterator.

Passages are padded to ``passage_max_length`` and prompts to the bucket (``bucket_length``)
of the longest prompt in the global batch, so the train step compiles once per prompt bucket
it meets in a stage (usually one or two: one long query no longer pads every batch to its
length). Batch fields (B lists, K candidates):
``passage_ids/mask [B, K, Lp]``, ``query_ids/mask [B, Lq]`` (or, with ``data.cached_vectors``,
``passage_emb [B, K, E]`` and ``query_emb [B, E]``), ``labels [B, K]`` (the stage's),
``qrels_labels [B, K]``, ``cand_mask [B, K]``, ``doc_key [B, K]`` (hashed docids),
``positive [B]``, and the task's prompt fields (``prompt_ids/mask [B, L]``, plus ``slot_pos
[B, K]`` for ResRank; none for dense).

Tokenisation gives per-list rows (``ListRows``, n <= K candidates) from ``Task.list_rows``:
``passage_ids/mask [n, Lp]``, ``query_ids/mask [Lq]``, ``prompt_ids [l]`` (the unpadded
ResRank prompt or E2Rank pseudo-query), ``slot_pos [n]`` (empty without slots), plus
``qrels_labels`` / ``teacher_labels [n]`` float32 and ``doc_key [n]``. ``assemble_batch``
pads any B of them to a batch; the rows live in memory (``BatchBuilder``) or in a
random-access store (``resrank_jax.data.array_record``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from resrank_jax.prompts import SlotPrompt
from resrank_jax.tasks import ListRows, Task
from resrank_jax.tasks.base import prompt_bucket
from resrank_jax.train.lists import TrainingList


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """What fixes the batch shapes besides the rows and their prompt bucket: K
    (``list_size``) and Lp."""

    list_size: int
    passage_max_length: int


def assemble_batch(
    rows: Sequence[ListRows], labels: str, task: Task, prompt_length: int
) -> dict[str, np.ndarray]:
    """The batch of ``rows`` (one per list) with ``labels`` ``qrels`` or ``teacher``, prompts
    padded to ``prompt_length`` by ``task.prompt_fields`` (the call ranking makes)."""
    k = task.recipe.list_size
    label_arr = np.zeros((len(rows), k), np.float32)
    cand_mask = np.zeros((len(rows), k), np.int32)
    doc_key = np.zeros((len(rows), k), np.int32)
    for i, row in enumerate(rows):
        n = len(row["doc_key"])
        label_arr[i, :n] = row[f"{labels}_labels"]
        cand_mask[i, :n] = 1
        doc_key[i, :n] = row["doc_key"]
    prompts = [SlotPrompt(row["prompt_ids"].tolist(), row["slot_pos"].tolist()) for row in rows]
    return {
        **encoder_inputs(rows, k, task.recipe.passage_max_length),
        "labels": label_arr,
        "qrels_labels": np.stack([_pad(row["qrels_labels"], k) for row in rows]),
        "cand_mask": cand_mask,
        "doc_key": doc_key,
        "positive": np.argmax(np.where(cand_mask > 0, label_arr, -np.inf), axis=1).astype(np.int32),
        **task.prompt_fields(prompts, n_slots=k, prompt_length=prompt_length),
    }


def encoder_inputs(rows: Sequence[ListRows], k: int, lp: int) -> dict[str, np.ndarray]:
    """What the encoder reads: ``passage_ids/mask [B, K, Lp]`` and ``query_ids/mask [B, Lq]``,
    or, for rows with cached vectors (``train/vectors.py``), ``passage_emb [B, K, E]`` and
    ``query_emb [B, E]``."""
    if "passage_emb" in rows[0]:
        emb = np.zeros((len(rows), k, rows[0]["passage_emb"].shape[1]), np.float32)
        for i, row in enumerate(rows):
            emb[i, : len(row["passage_emb"])] = row["passage_emb"]
        return {"passage_emb": emb, "query_emb": np.stack([row["query_emb"] for row in rows])}
    passage_ids = np.zeros((len(rows), k, lp), np.int32)
    passage_mask = np.zeros((len(rows), k, lp), np.int32)
    for i, row in enumerate(rows):
        n = len(row["passage_ids"])
        passage_ids[i, :n], passage_mask[i, :n] = row["passage_ids"], row["passage_mask"]
    return {
        "passage_ids": passage_ids,
        "passage_mask": passage_mask,
        "query_ids": np.stack([row["query_ids"] for row in rows]),
        "query_mask": np.stack([row["query_mask"] for row in rows]),
    }


def _pad(values: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros(k, np.float32)
    out[: len(values)] = values
    return out


def doc_keys(docids: Sequence[str]) -> np.ndarray:
    """A 31-bit key per docid (InfoNCE masks a query's judged positives wherever they
    reappear in the global batch)."""
    return np.asarray(
        [int.from_bytes(hashlib.blake2b(d.encode(), digest_size=4).digest()) >> 1 for d in docids],
        np.int32,
    )


class ListBatches:
    """Batches of any subset of tokenised lists: ``rows`` is any random-access sequence of
    ``ListRows`` (a list in memory, or an ArrayRecord data source)."""

    def __init__(self, rows: Sequence[ListRows], task: Task, stats: dict[str, int]) -> None:
        self.rows, self.task, self.stats = rows, task, stats

    @property
    def layout(self) -> BatchLayout:
        r = self.task.recipe
        return BatchLayout(r.list_size, r.passage_max_length)

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
        length = prompt_bucket(len(row["prompt_ids"]) for row in read.values())
        return assemble_batch(rows, labels, self.task, length)


class BatchBuilder(ListBatches):
    """Tokenises every list once, with ``task.list_rows`` (what ranking calls), into rows
    held in memory."""

    def __init__(self, lists: list[TrainingList], task: Task) -> None:
        rows = []
        truncated = np.zeros(3, np.int64)
        for tl in lists:
            row = task.list_rows(tl.query, tl.texts)
            truncated += row.pop("truncated")
            row.update(
                qrels_labels=tl.qrels_labels,
                teacher_labels=tl.teacher_labels,
                doc_key=doc_keys(tl.docids),
            )
            rows.append(row)
        names = ("truncated_passages", "truncated_queries", "truncated_prompts")
        super().__init__(rows, task, dict(zip(names, truncated.tolist(), strict=True)))


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
