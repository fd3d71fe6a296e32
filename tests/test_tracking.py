"""The Tracker: TensorBoard scalars read back with tensorboard's own reader (a resumed run
purges re-run steps), W&B offline runs read back from their log, the profiler window."""

import struct
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from tensorboard.backend.event_processing import event_accumulator  # test extra

from resrank_jax.train.tracking import Tracker
from tests.gcs_emulator import BUCKET, gcs_emulator  # noqa: F401 (fixture)


def tracker(log_dir, start_step=0, **kwargs) -> Tracker:
    return Tracker(log_dir, start_step=start_step, config={"lr": 0.1}, run_name="t", **kwargs)


def tensorboard_scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(log_dir))
    acc.Reload()
    return {
        tag: [(e.step, round(e.value, 6)) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
    }


def test_scalars_read_back_with_tensorboard(tmp_path):
    with tracker(tmp_path) as t:
        for step in range(1, 4):
            t.scalars(step, {"loss": 1.0 / step, "loss/rank": 0.5 * step})
    assert tensorboard_scalars(tmp_path) == {
        "loss": [(1, 1.0), (2, 0.5), (3, round(1 / 3, 6))],
        "loss/rank": [(1, 0.5), (2, 1.0), (3, 1.5)],
    }


# the killed run logged up to step 5; its last checkpoint was at step 3 or 4, or it had none.
# Without purge_step the reader shows the re-run steps twice (it checks for steps going back
# only in pre-v2 event files).
@pytest.mark.parametrize("start_step", [0, 3, 4])
def test_resume_purges_steps_after_the_checkpoint(tmp_path, start_step):
    with tracker(tmp_path) as t:
        for step in range(1, 6):
            t.scalars(step, {"loss": 10.0 + step})
    with tracker(tmp_path, start_step=start_step) as t:  # likely within the same second
        for step in range(start_step + 1, 7):
            t.scalars(step, {"loss": 20.0 + step})
    first, resumed = range(1, start_step + 1), range(start_step + 1, 7)
    expected = [(s, 10.0 + s) for s in first] + [(s, 20.0 + s) for s in resumed]
    assert tensorboard_scalars(tmp_path) == {"loss": expected}


def test_url_log_dir_is_uploaded_at_each_flush(tmp_path, gcs_emulator):  # noqa: F811
    from resrank_jax.paths import as_path, copy_tree

    url = f"gs://{BUCKET}/tracking/tensorboard"
    with tracker(url) as t:
        t.scalars(1, {"loss": 1.0})
        t.flush()  # what a checkpoint save does
        copy_tree(url, tmp_path / "after_flush")
        t.scalars(2, {"loss": 0.5})
    copy_tree(url, tmp_path / "after_close")
    assert tensorboard_scalars(tmp_path / "after_flush") == {"loss": [(1, 1.0)]}
    assert tensorboard_scalars(tmp_path / "after_close") == {"loss": [(1, 1.0), (2, 0.5)]}
    assert not list(as_path(url).glob("*.tmp"))


def test_disabled_tracker_does_nothing(tmp_path):
    log_dir = tmp_path / "tb"
    with tracker(log_dir, wandb=True, profile_steps=(1, 1), enabled=False) as t:
        t.step_started(1)
        t.scalars(1, {"loss": 1.0})
        t.flush()
        t.step_finished(1)
    assert not log_dir.exists()


@jax.jit
def tiny_step(x):
    return jnp.tanh(x @ x).sum()


# (2, 3): stopped after step 3 finishes; (2, 100): the run ends first, close() stops it
@pytest.mark.parametrize("profile_steps", [(2, 3), (2, 100)])
def test_profiler_traces_the_window(tmp_path, profile_steps):
    x = jnp.ones((32, 32))
    with tracker(tmp_path, profile_steps=profile_steps) as t:
        for step in range(1, 5):
            t.step_started(step)
            tiny_step(x).block_until_ready()
            t.step_finished(step)
        traces = list(tmp_path.glob("plugins/profile/*/*.xplane.pb"))
        assert len(traces) == (1 if profile_steps == (2, 3) else 0)  # written when stopped
    [trace] = tmp_path.glob("plugins/profile/*/*.xplane.pb")
    assert b"jit_tiny_step" in trace.read_bytes()  # the traced computation is in it


def wandb_records(run_file: Path):
    """The protobuf records of a ``.wandb`` file (wandb >= 0.2x has no Python reader): a
    7-byte ``:W&B`` header, then leveldb-log records (crc32, length, type) in 32 KiB blocks."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunks = run_file.read_bytes(), 7, []
    assert data.startswith(b":W&B")
    while len(data) - pos >= 7:
        if -pos % 32768 < 7:  # too little left in the block for a header: padding
            pos += -pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def wandb_history(run_file: Path) -> dict[int, dict[str, float]]:
    return {
        r.history.step.num: {
            name: float(i.value_json)
            for i in r.history.item
            if not (name := i.key or "/".join(i.nested_key)).startswith("_")
        }
        for r in wandb_records(run_file)
        if r.WhichOneof("record_type") == "history"
    }


def test_wandb_offline_logs_the_scalars(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    for key, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONSOLE": "off",
    }.items():
        monkeypatch.setenv(key, value)
    for run in range(2):  # the second run continues the first's W&B run id
        with tracker(tmp_path, 2 * run, wandb=True) as t:  # W&B files: tmp_path/wandb
            for step in range(1, 3):
                t.scalars(step + 2 * run, {"loss": 1.0 / step, "loss/rank": float(run)})
    wandb.teardown()  # offline, finish() may return before the run's file is written
    run_id = (tmp_path / "wandb_run_id").read_text()
    # offline, each run gets its own directory (offline-run-<time>-<id>[-<n>]), the same id
    run_files = list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}*/run-{run_id}.wandb"))
    assert sorted((wandb_history(f) for f in run_files), key=min) == [
        {1: {"loss": 1.0, "loss/rank": 0.0}, 2: {"loss": 0.5, "loss/rank": 0.0}},
        {3: {"loss": 1.0, "loss/rank": 1.0}, 4: {"loss": 0.5, "loss/rank": 1.0}},
    ]
    [run] = [r.run for r in wandb_records(run_files[0]) if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "t"
    assert {i.key: i.value_json for i in run.config.update}["lr"] == "0.1"
    assert tensorboard_scalars(tmp_path)["loss"] == [(1, 1.0), (2, 0.5), (3, 1.0), (4, 0.5)]


def test_wandb_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ImportError, match=r"pip install resrank_jax\[wandb\]"):
        tracker(tmp_path, wandb=True)
