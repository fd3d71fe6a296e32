"""Runs that change or break between calls: a corrupted checkpoint, more steps, a warm start
from another run, changed data, a crash before the export, the SIGTERM handler after
training, and evaluation on held-out queries during training."""

import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.train_runs import (
    ROOT,
    exported_tensors,
    forward_scores,
    ir_ndcg10,
    metric_lines,
    run_train,
    trained_params,
)

STEPS = ("steps=6", "checkpoint_every=2")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    proc = run_train(out, *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def _largest_data_file(checkpoint_dir):
    files = [p for p in (checkpoint_dir / "params").rglob("*") if p.is_file()]
    return max(files, key=lambda p: p.stat().st_size)


def test_truncated_checkpoint_falls_back_to_the_previous_one(finished, tmp_path):
    out = _copy(finished, tmp_path)
    shutil.rmtree(out / "export")
    (out / "summary.json").unlink()
    data = _largest_data_file(out / "checkpoints" / "6")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # bit rot, a bad disk
    proc = run_train(out, *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [ln for ln in proc.stderr.splitlines() if "checkpoint" in ln and "step 6" in ln]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "resumed from step 4" in proc.stdout
    assert [m["loss"] for m in metric_lines(out)] == [m["loss"] for m in metric_lines(finished)]
    a, b = trained_params(finished), trained_params(out)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_steps_may_grow_on_resume_but_not_shrink(finished, tmp_path):
    out = _copy(finished, tmp_path)
    proc = run_train(out, "steps=8", "checkpoint_every=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = metric_lines(out)
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert lines[:6] == metric_lines(finished)
    # stage1 ran 3 steps and keeps them; the 5 other steps all go to stage2
    assert [m["stage"] for m in lines] == ["stage1"] * 3 + ["stage2"] * 5
    shrink = run_train(out, "steps=4", "checkpoint_every=2")
    assert shrink.returncode == 2
    assert "steps may only grow" in shrink.stderr and "Traceback" not in shrink.stderr


def test_init_from_starts_from_another_runs_params_with_a_fresh_optimizer(finished, tmp_path):
    from resrank_jax.config import resolve_config
    from resrank_jax.train.setup import setup

    run = setup(resolve_config("tiny", [*STEPS, f"init_from={finished}"]), str(tmp_path / "b"))
    assert run.origin.startswith(f"warm-started from {finished} (step 6)")
    assert run.state is None and run.pos.global_step == 0
    source = trained_params(finished)
    from flax import nnx

    for path, value in nnx.to_flat_state(run.params):
        key = "/".join(map(str, path))
        np.testing.assert_array_equal(np.asarray(value[...]), source[key], err_msg=key)
    run.ckpt.close()


def test_changed_data_on_resume_is_refused_unless_allowed(tmp_path):
    qrels = tmp_path / "qrels.txt"
    shutil.copy(ROOT / "data/scifact/qrels.train.txt", qrels)
    out, data = tmp_path / "run", f"data.qrels={qrels}"
    first = run_train(out, "steps=2", "checkpoint_every=2", data)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = qrels.read_text().splitlines()
    qrels.write_text("\n".join(lines[:-1]) + "\n")  # one judgment fewer, same path
    refused = run_train(out, "steps=4", "checkpoint_every=2", data)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "data.qrels" in refused.stderr and "allow_data_change=true" in refused.stderr
    allowed = run_train(out, "steps=4", "checkpoint_every=2", data, "allow_data_change=true")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "resumed from step 2" in allowed.stdout


def test_a_finished_run_without_its_export_exports_on_rerun(finished, tmp_path):
    out = _copy(finished, tmp_path)
    shutil.rmtree(out / "export")
    (out / "summary.json").unlink()  # the crash came between the final save and the export
    proc = run_train(out, *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = exported_tensors(finished), exported_tensors(out)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sigterm_after_training_returns_terminates_the_process(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, time
        from resrank_jax.config import resolve_config
        from resrank_jax.train.loop import run_training
        run_training(resolve_config("tiny", ["steps=2"]), {str(tmp_path)!r}, progress=False)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        print("still alive")
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == -15, proc.stdout + proc.stderr[-2000:]
    assert "still alive" not in proc.stdout


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["keep_best=true"], "keep_best=true needs eval_every"),
        (["eval_every=2"], "needs data.dev_queries"),
        (["profile_steps=3:1"], "expected A:B"),
    ],
)
def test_tracking_settings_are_checked(overrides, message):
    from resrank_jax.config import resolve_config
    from resrank_jax.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        resolve_config("tiny", overrides).validate()


def test_dev_evaluation_best_checkpoint_and_profile_trace(tmp_path):
    extra = ("eval_every=2", "data.dev_queries=4", "keep_best=true", "profile_steps=2:3")
    proc = run_train(tmp_path, *STEPS, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    traces = list((tmp_path / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0
    lines = metric_lines(tmp_path)
    dev = {m["step"]: m["dev_ndcg@10"] for m in lines if "dev_ndcg@10" in m}
    assert sorted(dev) == [2, 4, 6]
    from resrank_jax.train.checkpoint import Checkpointer

    best = Checkpointer(tmp_path / "checkpoints_best", async_save=False)
    step = best.latest_step()
    assert dev[step] == max(dev.values())
    assert best.restore_meta(step)["dev_ndcg@10"] == dev[step]
    best.close()
    # the last dev score, recomputed independently from the final checkpoint: the held-out
    # queries (the candidates file's last 4) scored through the training forward pass,
    # nDCG@10 from ir_measures
    from resrank_jax.config import resolve_config
    from resrank_jax.data.formats import read_candidates, read_corpus
    from resrank_jax.train.models import load_trained

    data = resolve_config("tiny").data
    dev_queries = read_candidates(ROOT / data.candidates, read_corpus(ROOT / data.corpus))[-4:]
    model, task, _ = load_trained(tmp_path)
    ranked = {}
    for qc in dev_queries:
        scores = forward_scores(model, task, qc.query, [c.text for c in qc.candidates])
        ranked[qc.qid] = [qc.candidates[i].docid for i in np.argsort(-scores, kind="stable")]
    assert dev[6] == pytest.approx(ir_ndcg10(ranked, data.qrels), abs=1e-6)


def test_dev_lists_are_shuffled_like_the_training_lists():
    """A run trained on shuffled lists is scored on shuffled dev lists (the same candidates,
    another order, the same for every run), in first-stage order otherwise."""
    import dataclasses

    from resrank_jax.config import resolve_config
    from resrank_jax.train.dev_eval import dev_dataset

    data = dataclasses.replace(resolve_config("tiny").data, dev_queries=4)
    first_stage = dev_dataset(data)
    mixed = dev_dataset(dataclasses.replace(data, candidate_order="shuffled"))
    again = dev_dataset(dataclasses.replace(data, candidate_order="shuffled"))
    ids = [[[c.docid for c in qc.candidates] for qc in d.queries] for d in (first_stage, mixed)]
    assert [sorted(q) for q in ids[0]] == [sorted(q) for q in ids[1]]
    assert all(a != b for a, b in zip(*ids, strict=True))
    assert ids[1] == [[c.docid for c in qc.candidates] for qc in again.queries]
    assert mixed.qrels == first_stage.qrels
