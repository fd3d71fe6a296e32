"""End-to-end training runs in subprocesses: kill-and-resume exactness, half-written
checkpoints, SIGTERM, resume on another mesh, and a 2-process jax.distributed run."""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.train_runs import (
    ROOT,
    exported_tensors,
    forward_scores,
    ir_ndcg10,
    metric_lines,
    read_trec_run,
    run_train,
    start_and_wait,
    start_two_processes,
    trained_params,
    wait_all,
)

# the tiny preset with a linear projector and the gate (on the slot states and the query):
# every kind of trained parameter ResRank has
GATED = ("model.resrank.phi=linear", "model.resrank.residual=gated")
GATED += ("model.resrank.query_vector=gated",)
STEPS = ("steps=8", "checkpoint_every=2", *GATED)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run_train(out, *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_uninterrupted_run_outputs(uninterrupted):
    lines = metric_lines(uninterrupted)
    assert [m["step"] for m in lines] == list(range(1, 9))
    assert {
        "loss",
        "loss/rank",
        "loss/ret",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "step_time",
        "data_time",
    } <= set(lines[0])
    assert [m["stage"] for m in lines] == ["stage1"] * 4 + ["stage2"] * 4
    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(uninterrupted / "tensorboard"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("loss")] == list(range(1, 9))
    assert [e.value for e in acc.Scalars("loss")] == pytest.approx(
        [m["loss"] for m in lines], rel=1e-6
    )
    summary = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["compiles_per_stage"] == {"stage1": 1, "stage2": 1}
    saved = json.loads((uninterrupted / "config.json").read_text())
    assert saved["steps"] == 8 and saved["checkpoint_every"] == 2
    import transformers

    for part in ("encoder", "reranker"):  # the export loads in transformers
        transformers.AutoModel.from_pretrained(uninterrupted / "export" / part)


def test_sigkill_then_resume_is_exact(uninterrupted, tmp_path):
    proc = start_and_wait(tmp_path, *STEPS, min_steps=5)
    proc.kill()
    proc.wait()
    done = len(metric_lines(tmp_path))
    assert 5 <= done < 8, "the kill must land mid-training"
    resumed = run_train(tmp_path, *STEPS)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout
    assert [m["loss"] for m in metric_lines(tmp_path)] == [
        m["loss"] for m in metric_lines(uninterrupted)
    ]
    a, b = exported_tensors(uninterrupted), exported_tensors(tmp_path)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # every trained parameter of the final checkpoints, not only the exported backbones
    a, b = trained_params(uninterrupted), trained_params(tmp_path)
    assert {"gate", "projector/kernel", "projector/bias"} <= a.keys() == b.keys()
    assert any(k.startswith("encoder/") for k in a) and any(k.startswith("reranker/") for k in a)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert float(a["gate"]) != 0.0, "the gate trained (it starts at 0)"


def test_half_written_checkpoint_is_ignored(uninterrupted, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    partial = out / "checkpoints" / "10.orbax-checkpoint-tmp-1700000000000000"
    shutil.copytree(out / "checkpoints" / "8", partial)
    shutil.rmtree(partial / "params")  # as if killed mid-write
    proc = run_train(out, *STEPS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 8" in proc.stdout
    assert not partial.exists()


def test_sigterm_saves_before_exit(tmp_path):
    proc = start_and_wait(tmp_path, *STEPS, "checkpoint_every=100", min_steps=3)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    from resrank_jax.train.checkpoint import Checkpointer

    steps_logged = len(metric_lines(tmp_path))
    assert Checkpointer(tmp_path / "checkpoints").latest_step() == steps_logged >= 3


@pytest.mark.slow
def test_resume_onto_a_different_mesh(uninterrupted, tmp_path):
    proc = start_and_wait(tmp_path, *STEPS, "mesh=(2,2,2)", min_steps=5)
    proc.kill()
    proc.wait()
    resumed = run_train(tmp_path, *STEPS, "mesh=(1,2,4)")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = [m["loss"] for m in metric_lines(tmp_path)]
    np.testing.assert_allclose(losses, [m["loss"] for m in metric_lines(uninterrupted)], rtol=1e-4)


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path):
    codes, output = wait_all(start_two_processes(tmp_path, "steps=4", "checkpoint_every=2"))
    assert codes == [0, 0], output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["devices"] == 8 and summary["processes"] == 2
    assert [m["step"] for m in metric_lines(tmp_path)] == [1, 2, 3, 4]
    from resrank_jax.train.checkpoint import Checkpointer

    assert Checkpointer(tmp_path / "checkpoints").latest_step() == 4


EVAL_SETS = {  # candidates, qrels (SciFact's texts come from --corpus)
    "trec-dl19": ("data/trec-dl19/candidates.jsonl", "data/trec-dl19/qrels.txt"),
    "scifact/test": ("data/scifact/candidates.test.jsonl", "data/scifact/qrels.test.txt"),
}
CORPUS = "data/scifact/corpus.jsonl"


def test_eval_from_a_training_checkpoint(uninterrupted, tmp_path):
    metrics_path, run_path = tmp_path / "m.json", tmp_path / "resrank.run"
    cmd = [sys.executable, "eval.py", "--corpus", CORPUS]
    for candidates, qrels in EVAL_SETS.values():
        cmd += ["--candidates", candidates, "--qrels", qrels]
    cmd += ["--ranker", "resrank", "--checkpoint", str(uninterrupted), "--max-queries", "2"]
    cmd += ["--passage-max-length", "32", "--metrics-json", str(metrics_path)]
    cmd += ["--run-out", str(run_path), "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(metrics_path.read_text())
    assert list(results) == list(EVAL_SETS)

    from resrank_jax.evaluation import load_dataset
    from resrank_jax.train.models import load_trained

    model, task, _ = load_trained(uninterrupted)
    task = task.with_recipe(passage_max_length=32)
    for i, (name, (candidates, qrels)) in enumerate(EVAL_SETS.items()):
        metrics = results[name]
        assert metrics["queries"] == 2 and metrics["ranked_queries"] == 2
        assert metrics["ranker"] == "resrank" and metrics["model_calls"] == 2
        run = read_trec_run(run_path.with_name(f"{run_path.name}.{i}"))
        # the reported nDCG@10 is ir_measures' on the written run
        reference = ir_ndcg10({qid: [d for d, _, _ in rows] for qid, rows in run.items()}, qrels)
        assert metrics["nDCG@10"] == pytest.approx(reference, abs=1e-9), name
        if name == "trec-dl19":  # graded judgments deep in the list: any ranking scores > 0
            assert reference > 0
        # the run is the trained model's ranking: scores recomputed in-process through the
        # training forward pass (task.list_rows, task.forward), ranks ordered by them
        dataset = load_dataset(ROOT / candidates, ROOT / qrels, ROOT / CORPUS)
        assert list(run) == [q.qid for q in dataset.queries[:2]]
        for qc in dataset.queries[:2]:
            scores = forward_scores(model, task, qc.query, [c.text for c in qc.candidates])
            got = run[qc.qid]
            assert [r for _, r, _ in got] == list(range(1, len(qc.candidates) + 1))
            assert sorted(d for d, _, _ in got) == sorted(c.docid for c in qc.candidates)
            by_docid = {c.docid: s for c, s in zip(qc.candidates, scores, strict=True)}
            in_run_order = np.asarray([by_docid[d] for d, _, _ in got])
            np.testing.assert_allclose([s for _, _, s in got], in_run_order, rtol=0, atol=2e-6)
            # best first by the reference scores (up to rounding between near-ties)
            assert np.diff(in_run_order).max() <= 2e-6, (name, qc.qid)
