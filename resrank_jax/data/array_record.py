"""Tokenised training lists stored once as a tensorflow-datasets ArrayRecord dataset and read
back by random access (``tfds.data_source``), so a run need not tokenise or hold every list.

One example per list holds its ``ListRows`` (``resrank_jax.train.batches``): ``passage_ids``
/ ``passage_mask [n, Lp]``, ``query_ids`` / ``query_mask [Lq]``, ``prompt_ids [l]``,
``slot_pos [n]`` (empty without slots), ``qrels_labels`` / ``teacher_labels [n]``,
``doc_key [n]``; the ``BatchLayout``, tokenizer stats and list counts go to the dataset's
metadata. Examples keep the list order (shuffling disabled), so index ``i`` is list ``i``
and batches equal the in-memory ``BatchBuilder``'s bit for bit.

Neither writing nor reading needs TensorFlow: a ``GeneratorBasedBuilder`` encodes examples
with tfds' own protobuf serializer (``tfds.dataset_builders.store_as_tfds_dataset`` does not
work without TensorFlow: it tests ``isinstance(data, tf.data.Dataset)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from resrank_jax.config import TrainConfig
from resrank_jax.tasks import Task
from resrank_jax.train.batches import ListBatches, ListRows

try:
    import tensorflow_datasets as tfds
except ImportError as err:
    raise ImportError(
        "data.array_record_dir needs tensorflow-datasets: pip install 'resrank_jax[tfds]'"
    ) from err


class TokenisedLists(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes ``ListRows`` as one ArrayRecord split ``train`` under
    ``data_dir/tokenised_lists/<config>/<VERSION>``."""

    VERSION = tfds.core.Version("1.2.0")  # 1.2.0: doc_key; layout of K and Lp only

    def __init__(
        self, rows: Sequence[ListRows], metadata: dict, *, data_dir: Path, config: str
    ) -> None:
        self._rows, self._metadata = rows, metadata
        self._lp = metadata["layout"]["passage_max_length"]
        super().__init__(
            data_dir=data_dir,
            config=tfds.core.BuilderConfig(name=config),
            file_format="array_record",
        )

    def _info(self) -> tfds.core.DatasetInfo:
        def tensor(*shape: int | None, dtype=np.int32) -> tfds.features.Tensor:
            return tfds.features.Tensor(shape=shape, dtype=dtype)

        features = {
            "passage_ids": tensor(None, self._lp),
            "passage_mask": tensor(None, self._lp),
            "query_ids": tensor(None),
            "query_mask": tensor(None),
            "prompt_ids": tensor(None),
            "slot_pos": tensor(None),
            "qrels_labels": tensor(None, dtype=np.float32),
            "teacher_labels": tensor(None, dtype=np.float32),
            "doc_key": tensor(None),
        }
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(features),
            metadata=tfds.core.MetadataDict(self._metadata),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager) -> dict[str, Iterator[tuple[int, ListRows]]]:
        return {"train": self._generate_examples()}

    def _generate_examples(self) -> Iterator[tuple[int, ListRows]]:
        yield from enumerate(self._rows)


def dataset_name(cfg: TrainConfig) -> str:
    """``tokenised_lists/<fingerprint>`` of everything the rows depend on: the data settings
    (``queries_per_step`` aside), the size and mtime of each data file, the mode, the
    encoder / reranker sources (whose tokenizers are used) and the seed (``shuffled`` order).
    Changed inputs get a new dataset beside the old one; unchanged inputs reuse it."""
    data = dataclasses.asdict(cfg.data)
    for key in ("queries_per_step", "array_record_dir"):
        data.pop(key)
    files = {
        path: [Path(path).stat().st_size, Path(path).stat().st_mtime_ns]
        for path in (data["candidates"], data["corpus"], data["qrels"], data["teacher"])
        if path and Path(path).exists()
    }
    model = [cfg.model.mode, cfg.model.encoder, cfg.model.reranker, cfg.seed]  # seed: shuffles
    key = json.dumps([data, files, model], sort_keys=True)
    return f"{TokenisedLists.name}/{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def is_written(data_dir: str | Path, name: str) -> bool:
    """Whether ``name`` is complete under ``data_dir`` (tfds writes to a temporary folder and
    renames it when done)."""
    return (Path(data_dir) / name / str(TokenisedLists.VERSION) / "dataset_info.json").exists()


def write(batches: ListBatches, list_counts: dict, data_dir: str | Path, name: str) -> None:
    """Stores the rows of ``batches`` as the ArrayRecord dataset ``name`` under ``data_dir``."""
    metadata = {
        "layout": dataclasses.asdict(batches.layout),
        "stats": batches.stats,
        "list_counts": list_counts,
    }
    config = name.split("/", 1)[1]
    builder = TokenisedLists(batches.rows, metadata, data_dir=Path(data_dir), config=config)
    builder.download_and_prepare()


def read(data_dir: str | Path, name: str, task: Task) -> tuple[ListBatches, dict]:
    """``(batches drawing rows from the dataset by random access, list counts)``; ``task``
    pads the prompts (the dataset name fingerprints the recipe the rows were made with)."""
    source = tfds.data_source(name, split="train", data_dir=str(data_dir), download=False)
    metadata = source.dataset_info.metadata
    return ListBatches(source, task, dict(metadata["stats"])), dict(metadata["list_counts"])
