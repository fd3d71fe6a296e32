"""Pod-shaped runs: 2 ``jax.distributed`` processes on CPU, SIGTERM to one host only, and a
run checkpointing to ``gs://`` (the local GCS emulator) that is killed and resumes exactly."""

import os
import signal
import time

import numpy as np
import pytest

from tests.gcs_emulator import BUCKET, gcs_emulator  # noqa: F401 (fixture)
from tests.train_runs import metric_lines, start_two_processes, trained_params, wait_all

STEPS = ("steps=8", "checkpoint_every=2")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-process run."""
    out = tmp_path_factory.mktemp("reference")
    codes, output = wait_all(start_two_processes(out, *STEPS))
    assert codes == [0, 0], output
    return out


def _wait_until(condition, procs, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        if any(p.poll() is not None for p in procs) or time.time() > deadline:
            for p in procs:
                p.kill()
            raise AssertionError(f"run ended or stalled: {wait_all(procs)}")
        time.sleep(0.1)


def _assert_same_training(a, b):
    assert [m["loss"] for m in metric_lines(a)] == [m["loss"] for m in metric_lines(b)]
    pa, pb = trained_params(a), trained_params(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)


def test_sigterm_to_one_host_stops_both_at_the_same_step(reference, tmp_path):
    procs = start_two_processes(tmp_path, *STEPS, "checkpoint_every=100")
    _wait_until(lambda: len(metric_lines(tmp_path)) >= 3, procs)
    procs[1].send_signal(signal.SIGTERM)  # the non-lead host only
    codes, output = wait_all(procs)
    assert codes == [143, 143], output
    from resrank_jax.train.checkpoint import Checkpointer

    saved = Checkpointer(tmp_path / "checkpoints").latest_step()
    assert saved == len(metric_lines(tmp_path)) < 8  # the step both hosts logged last
    codes, output = wait_all(start_two_processes(tmp_path, *STEPS))
    assert codes == [0, 0], output
    assert f"resumed from step {saved}" in output
    _assert_same_training(reference, tmp_path)


def test_gcs_run_is_killed_and_resumes_exactly(reference, gcs_emulator):  # noqa: F811
    from resrank_jax.paths import as_path

    out = f"gs://{BUCKET}/pod-run"
    env = {**os.environ, **gcs_emulator}
    procs = start_two_processes(out, *STEPS, env=env)
    checkpoints = as_path(out) / "checkpoints"

    def committed_step_4() -> bool:
        return checkpoints.exists() and (checkpoints / "4" / "_CHECKPOINT_METADATA").exists()

    _wait_until(committed_step_4, procs)
    for p in procs:
        p.kill()
    wait_all(procs)
    codes, output = wait_all(start_two_processes(out, *STEPS, env=env))
    assert codes == [0, 0], output
    assert "resumed from step" in output
    _assert_same_training(reference, out)
    assert (as_path(out) / "export" / "reranker" / "model.safetensors").exists()
