"""One Orbax CheckpointManager per run: params, optimizer state, step and a JSON record of
stage, stage step, data-iterator position, seed and the resolved config. Saves are async at an
interval with keep-N; Orbax commits atomically (a directory still being written is never
listed as a step, so a half-written checkpoint is never loaded). ``directory`` may be a URL
(``gs://bucket/run/checkpoints``): Orbax writes the arrays through TensorStore's GCS driver and
the rest through ``etils.epath`` (see ``resrank_jax.paths``)."""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
from collections.abc import Iterator

import jax
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from resrank_jax.paths import as_path


class CheckpointUnreadable(Exception):
    """A committed checkpoint that does not restore: ``step``, the file named in the
    storage layer's error (when it names one) and the reason, in one line."""

    def __init__(self, step: int, directory, err: Exception) -> None:
        while isinstance(err, BaseExceptionGroup) or err.__cause__ is not None:
            # the storage layer's own error: under Orbax's asyncio task groups and re-raises
            err = err.exceptions[0] if isinstance(err, BaseExceptionGroup) else err.__cause__
        reason = " ".join(str(err).split())
        files = re.findall(rf"[\w./:-]*/{step}/[\w./-]+", reason)
        where = files[0] if files else f"{directory}/{step}"
        super().__init__(
            f"checkpoint step {step} cannot be restored ({where}): "
            f"{type(err).__name__}: {reason[:300]}"
        )
        self.step = step


class Checkpointer:
    """Save, list, restore and delete the checkpoints of one run directory."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 2,
        async_save: bool = True,
        ocdbt: bool = True,
    ) -> None:
        """``async_save``: write while training goes on (the state is copied to host memory
        first). ``ocdbt``: Orbax's default format, few large files (what object stores want);
        without it each array is its own TensorStore directory and a save needs less host
        memory (measured: 3.2 vs 4.1 GB peak for the SmolLM2 pair). Restoring reads either."""
        self.directory = as_path(directory)
        handler = functools.partial(ocp.StandardCheckpointHandler, use_ocdbt=ocdbt)
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
                cleanup_tmp_directories=True,
            ),
            item_handlers={
                "params": handler(),
                "opt_state": handler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Committed steps, oldest first."""
        return sorted(self.manager.all_steps())

    def set_aside(self, step: int) -> epath.Path:
        """Moves checkpoint ``step`` out of the run's steps (to ``STEP.unreadable-N``), keeping
        its files for inspection; returns where it went. Every process calls it; the first
        moves the files."""
        for n in itertools.count():
            target = self.directory / f"{step}.unreadable-{n}"
            if not target.exists():
                break
        if jax.process_index() == 0:
            (self.directory / str(step)).rename(target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set_aside_{step}")
        self.manager.reload()
        return target

    def save(self, step: int, state: dict, meta: dict, *, force: bool = False) -> None:
        self.manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(state["params"]),
                opt_state=ocp.args.StandardSave(state["opt_state"]),
                meta=ocp.args.JsonSave({**meta, "opt_step": int(state["step"])}),
            ),
            force=force,
        )

    def restore_meta(self, step: int) -> dict:
        with self._readable(step):
            args = ocp.args.Composite(meta=ocp.args.JsonRestore())
            return self.manager.restore(step, args=args)["meta"]

    @contextlib.contextmanager
    def _readable(self, step: int) -> Iterator[None]:
        """Storage and format errors while restoring ``step`` as ``CheckpointUnreadable``."""
        try:
            yield
        except Exception as err:  # the config matched, so what fails is the checkpoint
            raise CheckpointUnreadable(step, self.directory, err) from err

    def restore(self, step: int, target: dict, *, with_opt_state: bool) -> dict:
        """Restores onto ``target`` (abstract arrays carrying the shardings to restore to: any
        mesh or device count). Without ``with_opt_state`` only the params come back (the start
        of a new stage). ``opt_step`` is the optimizer's step count within its stage."""
        items = {
            "params": ocp.args.StandardRestore(target["params"]),
            "meta": ocp.args.JsonRestore(),
        }
        if with_opt_state:
            items["opt_state"] = ocp.args.StandardRestore(target["opt_state"])
        with self._readable(step):
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        out = {k: restored[k] for k in items if k != "meta"}
        out["opt_step"] = restored["meta"]["opt_step"]
        return out

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
