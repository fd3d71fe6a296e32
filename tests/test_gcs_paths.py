"""gs:// paths end to end on a loopback GCS emulator (tests/gcs_emulator.py): ``as_path``,
text files through epath/gcsfs, and Orbax checkpoints (arrays through TensorStore)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from resrank_jax.paths import as_path, is_url, staged
from resrank_jax.train.checkpoint import Checkpointer
from tests.gcs_emulator import BUCKET, gcs_emulator  # noqa: F401  (the fixture)

ROOT = Path(__file__).resolve().parent.parent
emulated = pytest.mark.usefixtures("gcs_emulator")


def test_as_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    run = as_path("gs://bucket/run")
    assert str(run) == "gs://bucket/run"
    assert str(run / "checkpoints") == "gs://bucket/run/checkpoints"
    assert str(as_path(run)) == "gs://bucket/run"
    assert is_url(run) and not is_url("runs/x") and not is_url("/abs/gs:/x")
    monkeypatch.chdir(tmp_path)
    assert str(as_path("runs/x")) == str(tmp_path / "runs" / "x")
    assert str(as_path(Path("/abs/y"))) == "/abs/y"


@emulated
def test_text_files_on_gcs():
    run = as_path(f"gs://{BUCKET}/text")
    (run / "config.json").write_text('{"seed": 0}\n')
    assert json.loads(as_path(f"gs://{BUCKET}/text/config.json").read_text()) == {"seed": 0}
    assert [p.name for p in run.iterdir()] == ["config.json"]

    metrics = run / "metrics.jsonl"
    metrics.write_text('{"step": 1}\n')
    with pytest.warns(UserWarning, match="Append mode"), metrics.open("a") as f:
        f.write('{"step": 2}\n')  # gcsfs has no append: "a" becomes "w"
    assert metrics.read_text() == '{"step": 2}\n'
    metrics.write_text(metrics.read_text() + '{"step": 3}\n')  # what works: read + rewrite
    assert [json.loads(ln)["step"] for ln in metrics.read_text().splitlines()] == [2, 3]

    with staged(run / "export") as local:  # local-only writers, uploaded on exit
        (local / "encoder").mkdir()
        (local / "encoder" / "model.safetensors").write_bytes(b"\x00\x01")
    assert (run / "export" / "encoder" / "model.safetensors").read_bytes() == b"\x00\x01"


def _state(scale: float) -> dict:
    """A training state as ``train/loop.py`` checkpoints it: params (one sharded over 8
    devices, one bf16), an AdamW state after one update, and the step."""
    mesh = jax.make_mesh((8,), ("fsdp",))
    params = {
        "encoder": {
            "w": jax.device_put(
                scale * jnp.arange(64.0).reshape(8, 8), NamedSharding(mesh, P("fsdp", None))
            ),
            "b": jnp.full((8,), scale, jnp.bfloat16),
        }
    }
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
    return {
        "params": optax.apply_updates(params, updates),
        "opt_state": opt_state,
        "step": jnp.asarray(1, jnp.int32),
    }


def _meta(step: int) -> dict:
    return {
        "stage": 0,
        "stage_step": step,
        "data": {"epoch": 0, "position": 4 * step},
        "seed": 0,
        "config": json.dumps({"steps": 8}),
    }


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _assert_equal(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


@emulated
def test_checkpointer_roundtrip_on_gcs():
    directory = f"gs://{BUCKET}/roundtrip/checkpoints"
    states = {step: _state(float(step)) for step in (1, 2, 3)}
    ckpt = Checkpointer(directory, keep=2)
    assert str(ckpt.directory) == directory  # not /cwd/gs:/...
    for step, state in states.items():
        ckpt.save(step, state, _meta(step), force=True)
    ckpt.close()

    ckpt = Checkpointer(directory, keep=2)
    assert ckpt.manager.all_steps() == [2, 3]  # keep-N deleted step 1 on the bucket
    assert not as_path(f"{directory}/1").exists()
    assert ckpt.latest_step() == 3
    assert ckpt.restore_meta(3) == {**_meta(3), "opt_step": 1}
    restored = ckpt.restore(3, _abstract(states[3]), with_opt_state=True)
    _assert_equal(restored["params"], states[3]["params"])
    _assert_equal(restored["opt_state"], states[3]["opt_state"])
    assert restored["opt_step"] == 1
    assert (
        restored["params"]["encoder"]["w"].sharding == states[3]["params"]["encoder"]["w"].sharding
    )

    # params only (a new stage), onto another sharding
    target = _abstract(states[2])
    other = NamedSharding(jax.make_mesh((8,), ("fsdp",)), P(None, "fsdp"))
    w = target["params"]["encoder"]["w"]
    target["params"]["encoder"]["w"] = jax.ShapeDtypeStruct(w.shape, w.dtype, sharding=other)
    restored = ckpt.restore(2, target, with_opt_state=False)
    assert set(restored) == {"params", "opt_step"}
    _assert_equal(restored["params"], states[2]["params"])
    assert restored["params"]["encoder"]["w"].sharding == other
    ckpt.close()


# Saves steps 1 and 2, starts the async save of step 3 and is SIGKILLed once array data of
# step 3 is on the bucket, before the save commits.
KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    import gcsfs
    from tests.test_gcs_paths import _meta, _state
    from resrank_jax.train.checkpoint import Checkpointer
    ckpt = Checkpointer({directory!r}, keep=2)
    for step in (1, 2):
        ckpt.save(step, _state(float(step)), _meta(step), force=True)
    ckpt.wait()
    ckpt.save(3, _state(3.0), _meta(3), force=True)
    fs = gcsfs.GCSFileSystem(use_listings_cache=False)
    while not any("/3/params/" in f for f in fs.find({directory!r} + "/3")):
        time.sleep(0.005)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_killed_save_on_gcs_resumes_from_last_commit(gcs_emulator):  # noqa: F811
    """A process killed while its save of step 3 is being written leaves objects of step 3
    but no step a resume would load; the resumed process restores step 2 exactly and saves
    step 3 again."""
    import gcsfs

    directory = f"gs://{BUCKET}/killed/checkpoints"
    script = KILLED_WRITER.format(root=str(ROOT), directory=directory)
    env = {**os.environ, **gcs_emulator}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    left = gcsfs.GCSFileSystem(use_listings_cache=False).find(f"{directory}/3")
    assert any("/3/params/" in f for f in left)  # half-written: some arrays, no commit
    assert not any(f.endswith("/3/commit_success.txt") for f in left)

    ckpt = Checkpointer(directory, keep=2)
    assert ckpt.latest_step() == 2
    restored = ckpt.restore(2, _abstract(_state(2.0)), with_opt_state=True)
    _assert_equal(restored["params"], _state(2.0)["params"])
    ckpt.save(3, _state(30.0), _meta(3), force=True)
    ckpt.wait()
    restored = ckpt.restore(3, _abstract(_state(30.0)), with_opt_state=True)
    _assert_equal(restored["params"], _state(30.0)["params"])
    _assert_equal(restored["opt_state"], _state(30.0)["opt_state"])
    ckpt.close()
