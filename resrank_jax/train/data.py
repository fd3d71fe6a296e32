"""Training lists from the configured files, tokenised into memory or an ArrayRecord store."""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils

from resrank_jax.config import TrainConfig
from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
from resrank_jax.tasks import Task
from resrank_jax.train.batches import BatchBuilder, ListBatches
from resrank_jax.train.dev_eval import dev_dataset
from resrank_jax.train.lists import (
    TrainingList,
    lists_from_qrels,
    lists_from_teacher_file,
    shuffle_candidates,
)

# Batch fields that mark real (unpadded) tokens of each tower.
TOKEN_MASKS = ("passage_mask", "query_mask", "prompt_mask")


def load_lists(cfg: TrainConfig) -> tuple[list[TrainingList], dict[str, int]]:
    """The training lists ``cfg.data`` describes, in ``data.candidate_order``, and counts."""
    d = cfg.data
    if d.teacher:
        lists, counts = lists_from_teacher_file(d.file("teacher"), list_size=d.list_size), {}
        if d.dev_queries:  # the held-out queries, matched by the teacher records' qid
            dev = {q.qid for q in dev_dataset(d).queries}
            kept = [tl for tl in lists if tl.qid not in dev]
            counts["dev_held_out"], lists = len(lists) - len(kept), kept
    else:
        corpus = read_corpus(d.file("corpus"))
        queries = read_candidates(d.file("candidates"), corpus)
        if d.dev_queries:  # held out for eval_every (train/dev_eval.py)
            queries = queries[: -d.dev_queries]
        if d.max_queries:
            queries = queries[: d.max_queries]
        lists, counts = lists_from_qrels(
            queries,
            read_qrels(d.file("qrels")),
            corpus,
            list_size=d.list_size,
            negatives=d.negatives,
            teacher=d.default_teacher,
            seed=cfg.seed,
        )
    if d.candidate_order == "shuffled":
        lists = shuffle_candidates(lists, cfg.seed)
    return lists, counts


def load_batches(cfg: TrainConfig, task: Task) -> tuple[ListBatches, dict]:
    """The tokenised training lists and their counts: tokenised into memory or, with
    ``data.array_record_dir`` (the ``tfds`` extra), written there once by process 0 (on a
    filesystem every process sees) and then read back by random access."""

    def tokenise() -> tuple[ListBatches, dict]:
        lists, counts = load_lists(cfg)
        return BatchBuilder(lists, task), counts

    directory = cfg.data.array_record_dir
    if not directory:
        return tokenise()
    from resrank_jax.data import array_record  # the optional tfds extra

    name = array_record.dataset_name(cfg)
    if jax.process_index() == 0 and not array_record.is_written(directory, name):
        array_record.write(*tokenise(), directory, name)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("array_record")
    return array_record.read(directory, name, task)
