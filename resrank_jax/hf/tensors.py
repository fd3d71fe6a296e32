"""Read-only access to the tensors of an HF directory (safetensors only, sharded or not),
and the strict check of their names against a key map."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from safetensors import safe_open

from resrank_jax.hf.key_map import IGNORED_HF_KEYS, KeyRule

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointKeyError(KeyError):
    """Checkpoint tensor names do not match the key map: lists the missing and unexpected keys."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class SafetensorsDir(Mapping[str, np.ndarray]):
    """``{tensor name: numpy array}`` over ``model.safetensors`` or a sharded index; lazy."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index = self.directory / "model.safetensors.index.json"
        single = self.directory / "model.safetensors"
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            self._file_of = {k: self.directory / f for k, f in weight_map.items()}
        elif single.exists():
            with safe_open(single, framework="numpy") as f:
                self._file_of = {k: single for k in f.keys()}  # noqa: SIM118
        else:
            pickles = sorted(
                p.name for p in self.directory.iterdir() if p.suffix in PICKLE_SUFFIXES
            )
            hint = (
                f" It has {pickles}: resrank_jax never unpickles weights; convert them to "
                "safetensors first."
                if pickles
                else ""
            )
            raise FileNotFoundError(f"no model.safetensors(.index.json) in {self.directory}.{hint}")
        missing_files = sorted({str(p) for p in self._file_of.values() if not p.exists()})
        if missing_files:
            raise FileNotFoundError(
                f"safetensors shards listed in the index are missing: {missing_files}"
            )

    def __getitem__(self, key: str) -> np.ndarray:
        with safe_open(self._file_of[key], framework="numpy") as f:
            return f.get_tensor(key)

    def __iter__(self):
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)


def is_ignored(key: str) -> bool:
    return any(key == k or key.endswith("." + k) for k in IGNORED_HF_KEYS)


def check_keys(
    rules: Iterable[KeyRule], present: Iterable[str], *, source: str, tied_head: str | None = None
) -> None:
    """Raises ``CheckpointKeyError`` naming every missing and unexpected tensor.

    ``tied_head`` names an LM-head tensor that may be present although the embeddings are tied
    (some exporters write it); the caller checks that it equals the embeddings.
    """
    expected = {r.hf for r in rules}
    present = {k for k in present if not is_ignored(k)}
    if tied_head is not None:
        present.discard(tied_head)
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_short(unexpected)}")
        raise CheckpointKeyError(f"{source}: " + "; ".join(parts))


def _short(keys: list[str], limit: int = 20) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return str(keys[:limit]) + more
