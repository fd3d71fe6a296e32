"""Tokenised lists stored as a tfds ArrayRecord dataset (the ``tfds`` extra) give the same
batches as the in-memory BatchBuilder, bit for bit; a second load reuses the files."""

import dataclasses
import sys

import numpy as np
import pytest

import resrank_jax.data
from resrank_jax.config import resolve_config
from resrank_jax.train import data as train_data
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.models import build_task


def tiny(mode: str, array_record_dir="", *overrides: str):
    encoder = "tiny-bert" if mode == "resrank" else "tiny-decoder"
    return resolve_config(
        "tiny",
        [
            f"model.mode={mode}",
            f"model.encoder={encoder}",
            f"data.array_record_dir={array_record_dir}",
            *overrides,
        ],
    )


@pytest.fixture
def tokenizers(minilm_tokenizer, smollm2_tokenizer):
    """``mode -> (encoder tokenizer, reranker tokenizer)`` of the tiny backbones."""
    return {
        "resrank": (minilm_tokenizer, smollm2_tokenizer),
        "e2rank": (smollm2_tokenizer, smollm2_tokenizer),
    }


def task_of(cfg, tokenizers):
    return build_task(cfg, *tokenizers[cfg.model.mode])


@pytest.mark.parametrize("mode", ["resrank", "e2rank"])
def test_array_record_batches_equal_in_memory_batches(mode, tokenizers, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    memory, memory_counts = train_data.load_batches(tiny(mode), task_of(tiny(mode), tokenizers))
    stored, stored_counts = train_data.load_batches(
        tiny(mode, tmp_path), task_of(tiny(mode), tokenizers)
    )
    assert isinstance(memory, BatchBuilder) and not isinstance(stored.rows, list)
    assert (len(stored), stored.layout, stored.stats, stored_counts) == (
        len(memory),
        memory.layout,
        memory.stats,
        memory_counts,
    )
    for indices in (np.random.default_rng(0).permutation(len(memory)), np.array([3, 0, 3])):
        for labels in ("qrels", "teacher"):
            a, b = memory.batch(indices, labels), stored.batch(indices, labels)
            assert a.keys() == b.keys()
            for key in a:
                assert (b[key].dtype, b[key].shape) == (a[key].dtype, a[key].shape), key
                assert b[key].tobytes() == a[key].tobytes(), key


def test_second_load_reuses_the_files_and_new_settings_get_new_ones(
    tokenizers, tmp_path, monkeypatch
):
    pytest.importorskip("tensorflow_datasets")
    from resrank_jax.data import array_record

    cfg = tiny("resrank", tmp_path)
    first, _ = train_data.load_batches(cfg, task_of(cfg, tokenizers))
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    written = {p: p.stat().st_mtime_ns for p in files}

    def no_tokenising(_):
        raise AssertionError("lists tokenised again")

    monkeypatch.setattr(train_data, "load_lists", no_tokenising)
    again, _ = train_data.load_batches(cfg, task_of(cfg, tokenizers))
    assert {p: p.stat().st_mtime_ns for p in files} == written
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file()) == files
    indices = np.arange(8)
    assert again.batch(indices, "qrels")["passage_ids"].tobytes() == (
        first.batch(indices, "qrels")["passage_ids"].tobytes()
    )
    longer = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, passage_max_length=48))
    same_but_batch = dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, queries_per_step=4)
    )
    assert array_record.dataset_name(longer) != array_record.dataset_name(cfg)
    assert array_record.dataset_name(same_but_batch) == array_record.dataset_name(cfg)


def test_missing_tfds_extra_names_the_install_command(tokenizers, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    monkeypatch.delitem(sys.modules, "resrank_jax.data.array_record", raising=False)
    monkeypatch.delattr(resrank_jax.data, "array_record", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'resrank_jax\[tfds\]'"):
        cfg = tiny("resrank", tmp_path)
        train_data.load_batches(cfg, task_of(cfg, tokenizers))
