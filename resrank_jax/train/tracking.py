"""Experiment tracking for training runs: TensorBoard scalars, optional W&B, a profiler window.

``Tracker`` is the one object the training loop talks to. TensorBoard event files are written
by ``tensorboardX``. For a URL such as ``gs://bucket/run/tensorboard`` they (and profiler
traces) are written to a local directory and uploaded through ``etils.epath`` at every
``flush`` (each checkpoint) and at ``close``: one storage layer for the whole run, instead of
tensorboardX's own GCS client. A resumed run purges the steps logged after its checkpoint, so
TensorBoard shows each step once.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from types import TracebackType
from typing import Any

import jax

from resrank_jax.paths import as_path, copy_tree, is_url


class Tracker:
    """Logs scalars to TensorBoard (and W&B) and traces a window of steps with the profiler.

    Args:
        log_dir: TensorBoard directory, a local path or a URL string (passed through as is).
        start_step: the step the run resumes from (0 for a fresh run). Events of later steps
            already in ``log_dir`` (written by a killed run) are purged.
        config: the run's config, recorded in W&B.
        run_name: the W&B run name.
        wandb: also log to Weights & Biases (needs ``pip install resrank_jax[wandb]``).
        wandb_project: the W&B project.
        wandb_dir: local directory for W&B's own files (default: ``log_dir`` when it is local,
            else W&B's default, ``$WANDB_DIR`` or ``./wandb``). The W&B run id is kept in
            ``log_dir/wandb_run_id``, so a resumed run continues the same W&B run.
        profile_steps: ``(A, B)`` traces steps A..B (inclusive) with ``jax.profiler`` into
            ``log_dir``, where TensorBoard's profile plugin finds it.
        enabled: False (every process but the lead) makes every method a no-op.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        start_step: int,
        config: dict[str, Any],
        run_name: str,
        wandb: bool = False,
        wandb_project: str = "resrank_jax",
        wandb_dir: str | os.PathLike | None = None,
        profile_steps: tuple[int, int] | None = None,
        enabled: bool = True,
    ) -> None:
        if profile_steps is not None and profile_steps[0] > profile_steps[1]:
            raise ValueError(f"profile_steps={profile_steps}: the first step comes after the last")
        self._log_dir = os.fspath(log_dir)
        # where the writers write: log_dir itself, or a local directory uploaded to the URL
        self._local_dir = (
            tempfile.mkdtemp(prefix="resrank-tensorboard-")
            if enabled and is_url(self._log_dir)
            else self._log_dir
        )
        self._profile_steps = profile_steps if enabled else None
        self._tracing = False
        self._tensorboard = (
            _tensorboard_writer(self._local_dir, start_step + 1) if enabled else None
        )
        self._writing = enabled  # False once closed
        self._wandb = None
        if enabled and wandb:
            if wandb_dir is None and not is_url(self._log_dir):
                wandb_dir = self._log_dir
            self._wandb = _wandb_run(self._log_dir, wandb_dir, wandb_project, run_name, config)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Logs ``values`` (tag -> number) at ``step``."""
        if self._tensorboard is None and self._writing:  # the next file after a flush
            self._tensorboard = _tensorboard_writer(self._local_dir, purge_step=None)
        if self._tensorboard is not None:
            for tag, value in values.items():
                self._tensorboard.add_scalar(tag, value, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def flush(self) -> None:
        """Writes pending TensorBoard events; call it after each checkpoint save, so the event
        files cover every checkpointed step even if the process is then killed.

        tensorboardX's own ``flush`` leaves events in its writer thread's queue, so the writer
        is closed (which drains the queue) and the next scalars start a new event file."""
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
            self._upload()

    def _upload(self) -> None:
        """Copies the local event files and traces to the URL ``log_dir`` (if it is one)."""
        if self._local_dir != self._log_dir:
            copy_tree(self._local_dir, self._log_dir)

    def step_started(self, step: int) -> None:
        """Starts the profiler trace when ``step`` is the first step of ``profile_steps``."""
        if self._profile_steps is not None and step == self._profile_steps[0]:
            jax.profiler.start_trace(self._local_dir)
            self._tracing = True

    def step_finished(self, step: int) -> None:
        """Stops the profiler trace when ``step`` is the last step of ``profile_steps``."""
        if self._tracing and step == self._profile_steps[1]:
            self._stop_trace()

    def _stop_trace(self) -> None:
        jax.profiler.stop_trace()
        self._tracing = False

    def close(self) -> None:
        """Stops an open trace and flushes and closes the writers (calling it again is a no-op)."""
        if self._tracing:
            self._stop_trace()
        self._writing = False
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
        if self._local_dir != self._log_dir and os.path.isdir(self._local_dir):
            self._upload()
            shutil.rmtree(self._local_dir, ignore_errors=True)
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _tensorboard_writer(log_dir: str, purge_step: int | None) -> Any:
    """A ``tensorboardX.SummaryWriter`` writing a new event file in ``log_dir``.

    ``purge_step`` (the first step of a fresh or resumed run; None for the later files of the
    same run) writes a ``SessionLog.START`` event at that step; TensorBoard's reader then
    drops every event of that step or later read before it (from the killed run's file).
    """
    from tensorboardX import SummaryWriter  # imported here: only the lead process pays for it

    return SummaryWriter(
        log_dir,
        purge_step=purge_step,  # a fresh run purges from 1: one killed before its first save
        flush_secs=30,
        # tensorboardX names files by the second and truncates an existing one: a unique,
        # increasing suffix keeps a quick restart from overwriting the previous file and keeps
        # the files in the order TensorBoard reads them (by name)
        filename_suffix=f".{time.time_ns()}",
    )


def _wandb_run(
    log_dir: str,
    wandb_dir: str | os.PathLike | None,
    project: str,
    name: str,
    config: dict[str, Any],
) -> Any:
    """Starts a W&B run, or continues the one whose id is kept in ``log_dir``."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("wandb=True needs wandb: pip install resrank_jax[wandb]") from e
    if wandb_dir is not None:
        os.makedirs(wandb_dir, exist_ok=True)  # some W&B versions use a temp dir if it is missing
    return wandb.init(
        project=project,
        name=name,
        config=config,
        dir=wandb_dir,
        resume="allow",
        id=_stable_run_id(log_dir),
    )


def _stable_run_id(log_dir: str) -> str:
    """The W&B run id kept in ``log_dir/wandb_run_id`` (which may be a URL), made on first use.
    ``log_dir`` exists already: the TensorBoard writer made it."""
    path = as_path(log_dir) / "wandb_run_id"
    if not path.exists():
        path.write_text(secrets.token_hex(8))
    return path.read_text().strip()
