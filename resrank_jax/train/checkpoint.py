"""One Orbax CheckpointManager per run: params, optimizer state, step and a JSON record of
stage, stage step, data-iterator position, seed and the resolved config. Saves are async at an
interval with keep-N; Orbax commits atomically (a directory still being written is never
listed as a step, so a half-written checkpoint is never loaded)."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


class Checkpointer:
    def __init__(self, directory: str | Path, *, keep: int = 2, async_save: bool = True) -> None:
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=async_save,
                create=True,
                cleanup_tmp_directories=True,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

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
        return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))[
            "meta"
        ]

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
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        out = {k: restored[k] for k in items if k != "meta"}
        out["opt_step"] = restored["meta"]["opt_step"]
        return out

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
