"""What a rerun may change and where it continues.

A run's position (stage, step within it, global step, data-iterator state) and its stage plan
(steps per stage) are saved with every checkpoint. A rerun must use the same config except
``RESUMABLE_CHANGES``; ``steps`` may only grow: stages already finished keep the steps they
ran, and the rest of the new total is split over the current and later stages by their
fractions (the current stage's learning-rate schedule is recomputed for its new length). The
data files are fingerprinted (SHA-256) into every checkpoint; a rerun on changed data is an
error unless ``allow_data_change=true``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from resrank_jax.config import TrainConfig, config_from_json, config_to_json
from resrank_jax.errors import ConfigError
from resrank_jax.paths import as_path
from resrank_jax.train.batches import IteratorState

# Keys a rerun may change: the mesh (restore onto another device layout), how often and how
# many checkpoints are kept, logging and tracking, the total steps (only upwards) and the
# permission to resume on changed data.
RESUMABLE_CHANGES = (
    "mesh",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
    "peak_tflops_per_device",
    "steps",
    "allow_data_change",
    "logging",
    "profile_steps",
)
DATA_FILES = ("candidates", "corpus", "qrels", "teacher")


@dataclasses.dataclass
class Position:
    """Where training continues: ``stage`` index, ``stage_step`` steps done in it,
    ``global_step`` steps done in all, the data iterator's state and the steps per stage."""

    stage: int
    stage_step: int
    global_step: int
    data: IteratorState
    plan: list[int]

    @classmethod
    def start(cls, cfg: TrainConfig) -> Position:
        return cls(0, 0, 0, IteratorState(), cfg.stage_steps())

    @classmethod
    def from_meta(cls, meta: dict, step: int, cfg: TrainConfig) -> Position:
        """The position a checkpoint's metadata records, with its plan grown to ``cfg.steps``
        and moved past a stage that had finished."""
        saved = config_from_json(meta["config"])
        plan = grow_plan(meta.get("plan") or saved.stage_steps(), meta["stage"], cfg)
        pos = cls(meta["stage"], meta["stage_step"], step, IteratorState(**meta["data"]), plan)
        if pos.stage_step >= plan[pos.stage]:
            pos.stage, pos.stage_step = pos.stage + 1, 0
        return pos

    @property
    def finished(self) -> bool:
        return self.stage >= len(self.plan)

    def meta(self, iterator_state: IteratorState) -> dict:
        """The JSON record saved with a checkpoint at this position."""
        return {
            "stage": self.stage,
            "stage_step": self.stage_step,
            "data": dataclasses.asdict(iterator_state),
            "plan": list(self.plan),
        }


def grow_plan(plan: list[int], stage: int, cfg: TrainConfig) -> list[int]:
    """``plan`` (steps per stage of the saved run) for a rerun with ``cfg.steps`` total steps:
    stages before ``stage`` keep their counts; the rest of ``cfg.steps`` is split over
    ``stage`` and later ones by fraction, the last taking the remainder.

    Raises:
        ConfigError: ``cfg.steps`` is smaller than the saved total.
    """
    if cfg.steps < sum(plan):
        raise ConfigError(
            f"steps={cfg.steps} is below the {sum(plan)} steps this run was started with; "
            "steps may only grow on resume"
        )
    if cfg.steps == sum(plan):
        return list(plan)
    kept, later = plan[:stage], cfg.stages[stage:]
    left = cfg.steps - sum(kept)
    total_fraction = sum(s.fraction for s in later)
    counts = [round(left * s.fraction / total_fraction) for s in later[:-1]]
    grown = [*kept, *counts, left - sum(counts)]
    if any(new < old for new, old in zip(grown[stage:], plan[stage:], strict=True)):
        raise ConfigError(f"steps={cfg.steps} would shorten a stage of the plan {plan}")
    return grown


def check_same_config(saved: str, current: str, where: str) -> None:
    """Raises ``ConfigError`` unless ``current`` equals the ``saved`` config up to
    ``RESUMABLE_CHANGES``; fields added to the code after the run was saved count at their
    defaults."""
    a, b = json.loads(config_to_json(config_from_json(saved))), json.loads(current)
    for key in RESUMABLE_CHANGES:
        a.pop(key, None)
        b.pop(key, None)
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ConfigError(
            f"{where} holds a run with a different config (differs in {diff}); resume with the "
            "same command or use a new --output-dir"
        )


def data_fingerprint(cfg: TrainConfig) -> dict[str, str]:
    """SHA-256 of each training data file the config names (local paths or URLs)."""
    prints = {}
    for key in DATA_FILES:
        name = cfg.data.file(key)
        if name:
            digest = hashlib.sha256()
            with as_path(name).open("rb") as f:
                for block in iter(lambda f=f: f.read(1 << 20), b""):
                    digest.update(block)
            prints[key] = digest.hexdigest()
    return prints


def check_same_data(saved: dict | None, current: dict[str, str], cfg: TrainConfig) -> None:
    """Raises ``ConfigError`` when the data files changed since the checkpoint was saved,
    unless ``cfg.allow_data_change`` (checkpoints without a fingerprint are not checked)."""
    if saved is None or saved == current or cfg.allow_data_change:
        return
    changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise ConfigError(
        f"the training data changed since this run's checkpoint (data.{', data.'.join(changed)}); "
        "the data order would silently differ. Rerun with allow_data_change=true to continue "
        "on the new data anyway"
    )
