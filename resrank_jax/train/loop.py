"""The training loop: set up (``train/setup.py``), train every stage from where the run
stands, then finish (export and summary). Rerunning the same command resumes; SIGTERM on any
host saves the same step on all hosts and exits 143 (``train/preemption.py``)."""

from __future__ import annotations

import gc
import json
import os
import time

import jax
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from resrank_jax.artifact import write_artifact
from resrank_jax.config import TrainConfig
from resrank_jax.flops import step_flops
from resrank_jax.paths import is_url
from resrank_jax.rss import PHASES, release_freed_memory
from resrank_jax.train.batches import ListIterator
from resrank_jax.train.data import TOKEN_MASKS
from resrank_jax.train.dev_eval import DevEval
from resrank_jax.train.metrics_log import MetricsLog
from resrank_jax.train.preemption import Preemption
from resrank_jax.train.setup import Run, setup
from resrank_jax.train.state import StageStep
from resrank_jax.train.tracking import Tracker

PREEMPTED_EXIT = 143  # 128 + SIGTERM


def maybe_initialize_distributed() -> None:
    """Multi-process runs: ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` in the environment (any launcher can set them); TPU pods may instead set
    ``RESRANK_DISTRIBUTED=auto`` to let JAX detect the cluster."""
    if jax.distributed.is_initialized():
        return
    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        jax.distributed.initialize(
            coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
            num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=int(os.environ["JAX_PROCESS_ID"]),
        )
    elif os.environ.get("RESRANK_DISTRIBUTED") == "auto":
        jax.distributed.initialize()


def run_training(cfg: TrainConfig, output_dir, *, progress: bool = True) -> dict:
    """Trains all stages of ``cfg`` into ``output_dir`` (a local path or a URL such as
    ``gs://bucket/run``); rerunning resumes. Returns a summary."""
    maybe_initialize_distributed()
    with PHASES.phase("load"):
        run = setup(cfg, str(output_dir))
    tracker = Tracker(
        run.out / "tensorboard",
        start_step=run.pos.global_step,
        config=json.loads(run.config_json),
        run_name=run.out.name,
        wandb=cfg.logging.wandb,
        wandb_project=cfg.logging.wandb_project,
        wandb_dir=None if is_url(run.out) else run.out,
        profile_steps=cfg.profile_window(),
        enabled=run.lead,
    )
    with Preemption() as preemption, tracker:
        compiles = train_stages(run, preemption, tracker, progress)
    with PHASES.phase("export"):
        summary = finish(run, compiles)
    del run  # the model, its state and executables (nnx graphs hold reference cycles)
    gc.collect()
    release_freed_memory()
    return summary


def train_stages(run: Run, preemption: Preemption, tracker: Tracker, progress: bool) -> dict:
    """Runs the remaining steps of every stage; returns compiles per stage."""
    cfg = run.cfg
    iterator = ListIterator(len(run.builder), cfg.data.queries_per_step, cfg.seed, run.pos.data)
    log = MetricsLog(run.out / "metrics.jsonl", run.pos.global_step, enabled=run.lead)
    dev = DevEval(run) if cfg.eval_every else None
    quiet = not (progress and run.lead)
    bar = tqdm(total=cfg.steps, initial=run.pos.global_step, desc="train", disable=quiet)
    compiles: dict[str, int] = {}
    for s in range(run.pos.stage, len(cfg.stages)):
        with PHASES.phase("stage setup + compile"):
            built = run.built or start_stage(run, s)
        for k in range(run.pos.stage_step, run.pos.plan[s]):
            tracker.step_started(run.pos.global_step + 1)
            with PHASES.phase("train steps"):
                record = train_step(run, built, cfg.stages[s].labels, iterator)
            release_freed_memory()
            run.pos.stage, run.pos.stage_step = s, k + 1
            run.pos.global_step += 1
            record = {"step": run.pos.global_step, "stage": cfg.stages[s].name, **record}
            if dev and run.pos.global_step % cfg.eval_every == 0:
                record["dev_ndcg@10"] = dev.evaluate(run, iterator)
            log.write(record)
            tracker.scalars(run.pos.global_step, scalars(record))
            tracker.step_finished(run.pos.global_step)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            stop = preemption.requested()
            if stop or k + 1 == run.pos.plan[s] or run.pos.global_step % cfg.checkpoint_every == 0:
                with PHASES.phase("checkpoint save"):
                    save(run, iterator, log)
                release_freed_memory()
                tracker.flush()  # what the checkpoint covers is on disk (tensorboardX buffers)
            if stop:
                run.ckpt.close()
                if dev:
                    dev.close()
                bar.close()
                raise SystemExit(PREEMPTED_EXIT)
        compiles[cfg.stages[s].name] = built.compiles
        del built  # its executables go before the next stage compiles
        run.built, run.pos.stage, run.pos.stage_step = None, s + 1, 0
    bar.close()
    log.flush()
    if dev:
        dev.close()
    return compiles


def start_stage(run: Run, s: int) -> StageStep:
    """Stage ``s`` compiled, then its state: the previous stage's params (or the run's) with a
    fresh optimizer, whose state replaces the previous one's rather than joining it."""
    built = run.build_stage(s)
    params = run.state["params"] if run.state else run.params
    run.state = None
    release_freed_memory()
    run.state = built.init_state(params)
    return built


def train_step(run: Run, built: StageStep, labels: str, iterator: ListIterator) -> dict:
    """One optimizer step on the next batch (this process's rows of it); returns its metrics,
    timings, tokens/s and model TFLOP/s (all processes)."""
    n = run.cfg.data.queries_per_step
    rows = n // jax.process_count()
    first = jax.process_index() * rows
    t0 = time.perf_counter()
    indices = iterator.next_indices()
    local = run.builder.batch(indices[first : first + rows], labels, batch_indices=indices)
    batch = {
        key: jax.make_array_from_process_local_data(built.batch_shardings[key], value)
        for key, value in local.items()
    }
    t1 = time.perf_counter()
    run.state, metrics = built.step_fn(run.state, batch)
    metrics = jax.device_get(metrics)
    seconds = time.perf_counter() - t1
    run.timings["data_s"] = run.timings.get("data_s", 0.0) + t1 - t0
    run.timings["step_s"] = run.timings.get("step_s", 0.0) + seconds
    tokens = jax.process_count() * sum(int(v.sum()) for m, v in local.items() if m in TOKEN_MASKS)
    flops = step_flops(local, *run.towers) * jax.process_count() / seconds
    record = {
        "loss": float(metrics["loss"]),
        **{key: float(v) for key, v in metrics.items() if key != "loss"},
        "tokens_per_s": tokens / seconds,
        "step_time": seconds,
        "data_time": t1 - t0,
        "model_tflops_per_s": flops / 1e12,
    }
    if run.cfg.peak_tflops_per_device:
        record["mfu"] = flops / 1e12 / (run.cfg.peak_tflops_per_device * jax.device_count())
    return record


def scalars(record: dict) -> dict[str, float]:
    """The numeric fields of a metrics record, for the trackers."""
    return {k: v for k, v in record.items() if k not in ("step", "stage")}


def save(run: Run, iterator: ListIterator, log: MetricsLog) -> None:
    """Checkpoints the state at ``run.pos`` (async) with what resuming needs."""
    t0 = time.perf_counter()
    meta = {
        **run.pos.meta(iterator.state),
        "seed": run.cfg.seed,
        "config": run.config_json,
        "data_fingerprint": run.fingerprint,
    }
    log.flush()
    run.ckpt.save(run.pos.global_step, run.state, meta, force=True)
    run.timings["checkpoint_s"] = run.timings.get("checkpoint_s", 0.0) + time.perf_counter() - t0


def finish(run: Run, compiles: dict) -> dict:
    """Waits for the last save, exports the trained backbones (also on the rerun of a finished
    run that died before its export) and writes ``summary.json``."""
    t0 = time.perf_counter()
    run.ckpt.close()
    run.timings["checkpoint_s"] = run.timings.get("checkpoint_s", 0.0) + time.perf_counter() - t0
    summary = {
        "origin": run.origin,
        "steps": run.pos.global_step,
        "compiles_per_stage": compiles,
        "lists": len(run.builder),
        "list_counts": run.list_counts,
        "tokenizer": run.builder.stats,
        "timings": run.timings,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    summary_path = run.out / "summary.json"
    if run.state is not None and not (compiles == {} and summary_path.exists()):
        params = run.state["params"]
        if jax.process_count() > 1:
            params = multihost_utils.process_allgather(params, tiled=True)
        if run.lead:
            export(nnx.merge(run.graphdef, params, run.rest), run.task, run.out / "export")
    if run.lead:
        summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export(model, task, out) -> None:
    """The trained model at ``out`` (a local path or a URL: written locally, then copied) as
    an artifact that loads without the run (``resrank_jax.artifact``): HF directories of the
    encoder (and reranker) backbones with their tokenizers, ResRank's head
    (``head.safetensors``) and ``resrank.json``; ``resrank export`` adds a model card."""
    write_artifact(model, task, out)
