"""Helpers that run ``train.py`` in subprocesses (kill, SIGTERM, multi-process tests) and
independent references for what trained runs rank (params, runs, scores, nDCG@10)."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QRELS = {"DL19": "data/trec-dl19/qrels.txt", "SciFact-test": "data/scifact/qrels.test.txt"}


def train_cmd(out: Path, *overrides: str, preset: str = "tiny") -> list[str]:
    return [
        sys.executable,
        "train.py",
        "--config",
        preset,
        "--output-dir",
        str(out),
        "--quiet",
        *overrides,
    ]


def run_train(out: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(out, *overrides),
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=600,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(out, *overrides: str, env: dict | None = None) -> list[subprocess.Popen]:
    """A 2-process ``jax.distributed`` run of the tiny preset (4 CPU devices each) into
    ``out`` (a local path or a URL)."""
    port, procs = free_port(), []
    for pid in range(2):
        proc_env = dict(
            env or os.environ,
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
        procs.append(
            subprocess.Popen(
                train_cmd(out, *overrides),
                cwd=ROOT,
                env=proc_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def wait_all(procs: list[subprocess.Popen]) -> tuple[list[int], str]:
    """Return codes and the joined output of processes started by ``start_two_processes``."""
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    return [p.returncode for p in procs], "\n".join(o[-3000:] for o in outputs)


def metric_lines(out) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (``out``: a local path or a URL)."""
    from resrank_jax.paths import as_path

    path = as_path(out) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_and_wait(out: Path, *overrides: str, min_steps: int) -> subprocess.Popen:
    """Starts a run and returns once ``metrics.jsonl`` holds ``min_steps`` lines."""
    proc = subprocess.Popen(
        train_cmd(out, *overrides),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while len(metric_lines(out)) < min_steps:
        if proc.poll() is not None:
            raise AssertionError(
                f"run ended early ({proc.returncode}): {proc.stdout.read()[-2000:]}"
            )
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("run did not reach the step in time")
        time.sleep(0.05)
    return proc


def exported_tensors(out: Path) -> dict:
    from safetensors.numpy import load_file

    return {
        f"{part}/{k}": v
        for part in ("encoder", "reranker")
        for k, v in load_file(str(out / "export" / part / "model.safetensors")).items()
    }


def trained_params(out: Path) -> dict[str, np.ndarray]:
    """Every parameter of a run's latest checkpoint (backbones, projector, gate, ...) by
    ``/``-joined path, loaded as ranking loads it (``load_trained``)."""
    from flax import nnx

    from resrank_jax.train.models import load_trained

    model, _, _ = load_trained(out)
    return {
        "/".join(map(str, path)): np.asarray(value[...])
        for path, value in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def read_trec_run(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    """A TREC run file ``qid Q0 docid rank score tag`` as ``qid -> [(docid, rank, score)]``
    in file order (parsed here, independently of ``resrank_jax.data.formats``)."""
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, int(rank), float(score)))
    return run


def ir_ndcg10(ranked: dict[str, list[str]], qrels_path: str | Path) -> float:
    """Reference nDCG@10 of rankings ``qid -> [docid, best first]``: ir_measures (pytrec_eval,
    trec_eval's definition) with qrels it reads itself, over the ranked queries. Scores are
    ``N - position`` so that trec_eval's tie-breaking cannot reorder the rankings."""
    import ir_measures
    from ir_measures import nDCG

    qrels = [q for q in ir_measures.read_trec_qrels(str(ROOT / qrels_path)) if q.query_id in ranked]
    assert {q.query_id for q in qrels} == set(ranked), "every ranked query must be judged"
    run = {q: {d: float(len(docs) - i) for i, d in enumerate(docs)} for q, docs in ranked.items()}
    return ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10]


def forward_scores(model, task, query: str, texts: list[str]) -> np.ndarray:
    """Reference scores ``[N]`` of one list through the training path: ``task.list_rows``
    (what ``BatchBuilder`` tokenises) and ``task.forward`` (what the loss calls), one list of
    exactly ``N`` candidates; no ranker, no embedding cache."""
    from resrank_jax.prompts import SlotPrompt

    rows = task.list_rows(query, texts)
    prompt = SlotPrompt(rows["prompt_ids"].tolist(), rows["slot_pos"].tolist())
    keys = ("passage_ids", "passage_mask", "query_ids", "query_mask")
    batch = {
        **{k: rows[k][None] for k in keys},
        **task.prompt_fields([prompt], n_slots=len(texts)),
        "cand_mask": np.ones((1, len(texts)), np.int32),
    }
    return np.asarray(_forward(task, model, batch))[0]


@functools.partial(jax.jit, static_argnums=0)
def _forward(task, model, batch):
    return task.forward(model, batch, with_query=False)[0]
