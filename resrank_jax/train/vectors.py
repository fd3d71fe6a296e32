"""Training on vectors the frozen encoder computed once (``data.cached_vectors``).

When no stage trains the encoder, every passage and query vector of a run is fixed: they are
encoded once, from the same token rows training would feed the encoder, and the rows carry
``passage_emb [n, E]`` and ``query_emb [E]`` in place of their token ids. ``Task.forward``
then scores these vectors (``Task.score``, the call ranking makes on cached vectors), so a
step runs the reranker alone. Shapes: n candidates of one list, Lp passage length, E encoder
width.
"""

from __future__ import annotations

import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from resrank_jax.errors import ConfigError
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.encode import encode_ids
from resrank_jax.tasks import ListRows
from resrank_jax.train.batches import ListBatches
from resrank_jax.train.state import param_path

CHUNK = 64  # token rows per encoder call (one compile per row length)
ID_FIELDS = ("passage_ids", "passage_mask", "query_ids", "query_mask")


def check_encoder_frozen(trainable: dict[str, nnx.State]) -> None:
    """Raises ``ConfigError`` when a stage (``trainable``: stage name -> per-param labels,
    ``train.state.trainable_labels``) trains any encoder parameter."""
    for stage, labels in trainable.items():
        trained = [
            param_path(path)
            for path, label in nnx.to_flat_state(labels)
            if param_path(path).startswith("encoder/") and label != "freeze"
        ]
        if trained:
            raise ConfigError(
                f"data.cached_vectors=true needs the encoder frozen, but stage {stage!r} trains "
                f"{trained[0]} (and {len(trained) - 1} more); set its trainable to "
                "('(?!encoder/).*',)"
            )


def encode_rows(rows: list[ListRows], encoder: Encoder, progress: bool = True) -> np.ndarray:
    """The vectors ``[sum of n + number of lists, E]`` of every row's passages, then every
    row's query, from their token rows (``[.., Lp]`` and ``[.., Lq]``)."""
    passages = [(r["passage_ids"], r["passage_mask"]) for r in rows]
    queries = [(r["query_ids"][None], r["query_mask"][None]) for r in rows]
    out = []
    for parts, desc in ((passages, "encode passages"), (queries, "encode queries")):
        ids = np.concatenate([p[0] for p in parts])
        mask = np.concatenate([p[1] for p in parts])
        starts = range(0, len(ids), CHUNK)
        for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
            chunk_ids, chunk_mask = _filled(ids[start : start + CHUNK], mask[start : start + CHUNK])
            out.append(np.asarray(encode_ids(encoder, chunk_ids, chunk_mask))[: len(ids) - start])
    return np.concatenate(out)


def _filled(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``ids``/``mask`` padded to ``CHUNK`` rows (one compiled shape); pad rows hold a single
    real token so that pooling is defined."""
    pad = CHUNK - len(ids)
    filler = np.zeros((pad, ids.shape[1]), ids.dtype)
    mask_filler = filler.copy()
    mask_filler[:, -1] = 1
    return np.concatenate([ids, filler]), np.concatenate([mask, mask_filler])


def with_vectors(batches: ListBatches, encoder: Encoder, progress: bool = True) -> ListBatches:
    """``batches`` whose rows carry ``passage_emb [n, E]`` and ``query_emb [E]`` (float32)
    from ``encoder`` instead of their token ids."""
    rows = [batches.rows[i] for i in range(len(batches))]
    vectors = encode_rows(rows, encoder, progress)
    sizes = np.cumsum([len(r["passage_ids"]) for r in rows])
    passage_vectors = np.split(vectors[: sizes[-1]], sizes[:-1])
    query_vectors = vectors[sizes[-1] :]
    new_rows = [
        {k: v for k, v in row.items() if k not in ID_FIELDS} | {"passage_emb": p, "query_emb": q}
        for row, p, q in zip(rows, passage_vectors, query_vectors, strict=True)
    ]
    return ListBatches(new_rows, batches.task, batches.stats)
