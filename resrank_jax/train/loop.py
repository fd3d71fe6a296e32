"""The training loop: stages, restore order, logging, checkpoints and preemption.

Restore order (``initial_state``): resume this run's latest committed checkpoint, else (at a
stage boundary) the previous stage's params, else the HF/GGUF/packaged import the config
names, else scratch (the ``tiny-*`` random backbones).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from resrank_jax.config import TrainConfig, config_from_json, config_to_json
from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
from resrank_jax.flops import Tower, step_flops
from resrank_jax.hf.export import export_hf
from resrank_jax.sharding import make_mesh
from resrank_jax.tasks import Task
from resrank_jax.train.batches import BatchBuilder, IteratorState, ListBatches, ListIterator
from resrank_jax.train.checkpoint import Checkpointer
from resrank_jax.train.lists import (
    TrainingList,
    lists_from_qrels,
    lists_from_teacher_file,
    shuffle_candidates,
)
from resrank_jax.train.models import TINY, build_model, build_task
from resrank_jax.train.state import batch_shardings, build_stage_step, trainable_labels
from resrank_jax.train.tensorboard import ScalarWriter

TOKEN_MASKS = ("passage_mask", "query_mask", "prompt_mask")


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


class Preemption:
    """Records SIGTERM so the loop can save and exit cleanly after the current step."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_):
        self.requested = True


def load_lists(cfg: TrainConfig) -> tuple[list[TrainingList], dict[str, int]]:
    """The training lists ``cfg.data`` describes, in ``data.candidate_order``, and counts."""
    d = cfg.data
    if d.teacher:
        lists, counts = lists_from_teacher_file(d.teacher, list_size=d.list_size), {}
    else:
        corpus = read_corpus(d.corpus)
        queries = read_candidates(d.candidates, corpus)
        if d.max_queries:
            queries = queries[: d.max_queries]
        lists, counts = lists_from_qrels(
            queries, read_qrels(d.qrels), corpus, list_size=d.list_size
        )
    if d.candidate_order == "shuffled":
        lists = shuffle_candidates(lists, cfg.seed)
    return lists, counts


def load_batches(cfg: TrainConfig, task: Task) -> tuple[ListBatches, dict]:
    """The tokenised training lists and their counts: tokenised into memory or, with
    ``data.array_record_dir`` (the ``tfds`` extra), written there once by process 0 (on a
    filesystem every process sees) and then read back by random access."""

    def tokenise() -> tuple[ListBatches, dict]:
        lists, counts = load_lists(cfg)
        return BatchBuilder(lists, task), counts

    directory = cfg.data.array_record_dir
    if not directory:
        return tokenise()
    from resrank_jax.data import array_record  # the optional tfds extra

    name = array_record.dataset_name(cfg)
    if jax.process_index() == 0 and not array_record.is_written(directory, name):
        array_record.write(*tokenise(), directory, name)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("array_record")
    return array_record.read(directory, name, task)


# Keys a resumed run may change: the mesh (restore onto another device layout) and logging.
RESUMABLE_CHANGES = ("mesh", "log_every", "peak_tflops_per_device")


def _check_same_config(saved: str, current: str, path: Path) -> None:
    """Raises unless ``current`` equals the ``saved`` config up to ``RESUMABLE_CHANGES``;
    fields added to the code after the run was saved count at their defaults."""
    a, b = json.loads(config_to_json(config_from_json(saved))), json.loads(current)
    for key in RESUMABLE_CHANGES:
        a.pop(key, None)
        b.pop(key, None)
    if a != b:
        diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ValueError(
            f"{path} holds a run with a different config (differs in {diff}); resume with the "
            "same command or use a new --output-dir"
        )


def run_training(cfg: TrainConfig, output_dir: str | Path, *, progress: bool = True) -> dict:
    """Trains all stages of ``cfg`` into ``output_dir``; rerunning resumes. Returns a summary."""
    maybe_initialize_distributed()
    cfg.validate()
    mesh = make_mesh(cfg.mesh)  # a mesh that does not divide the devices fails here
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.data.queries_per_step % batch_ways:
        raise ValueError(
            f"data.queries_per_step={cfg.data.queries_per_step} cannot be split over the "
            f"{batch_ways} data x fsdp shards of mesh {dict(mesh.shape)}"
        )
    out = Path(output_dir).absolute()
    lead = jax.process_index() == 0
    out.mkdir(parents=True, exist_ok=True)
    timings = {"data_s": 0.0, "step_s": 0.0, "checkpoint_s": 0.0, "setup_s": 0.0}
    t_setup = time.perf_counter()

    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    for stage in cfg.stages:  # patterns naming no parameter fail before any compile
        trainable_labels(params, stage)
    d = cfg.data
    task.check(model)
    builder, list_counts = load_batches(cfg, task)
    if d.queries_per_step % jax.process_count():
        raise ValueError(
            f"queries_per_step={d.queries_per_step} is not divisible by "
            f"{jax.process_count()} processes"
        )

    config_json = config_to_json(cfg)
    ckpt = Checkpointer(out / "checkpoints", keep=cfg.keep_checkpoints)
    latest = ckpt.latest_step()
    stage_steps = cfg.stage_steps()
    stage_idx, stage_step, global_step, it_state = 0, 0, 0, IteratorState()
    meta = None
    if latest is not None:  # 1. resume this run
        meta = ckpt.restore_meta(latest)
        _check_same_config(meta["config"], config_json, out)
        stage_idx, stage_step, global_step = meta["stage"], meta["stage_step"], latest
        it_state = IteratorState(**meta["data"])
        if stage_step >= stage_steps[stage_idx]:  # 2. a finished stage: next one from its params
            stage_idx, stage_step = stage_idx + 1, 0
        origin = f"resumed from step {latest}"
    else:  # 3. HF import (params already loaded by build_model) or 4. scratch
        tiny = cfg.model.encoder in TINY or cfg.model.reranker in TINY
        origin = "scratch (random tiny backbones)" if tiny else "imported pretrained weights"
    if lead:
        (out / "config.json").write_text(config_json + "\n")
    iterator = ListIterator(len(builder), d.queries_per_step, cfg.seed, it_state)
    metrics_path = out / "metrics.jsonl"
    if lead:
        kept = (
            [
                ln
                for ln in metrics_path.read_text().splitlines()
                if json.loads(ln)["step"] <= global_step
            ]
            if metrics_path.exists()
            else []
        )
        metrics_path.write_text("".join(f"{ln}\n" for ln in kept))
    enc_tower = Tower.of(model.encoder.backbone)
    prompt_tower = Tower.of(model.reranker) if task.needs_reranker else enc_tower
    preemption = Preemption()
    tensorboard = ScalarWriter(out / "tensorboard") if lead else None
    timings["setup_s"] = time.perf_counter() - t_setup
    compiles: dict[str, int] = {}
    bar = tqdm(
        total=cfg.steps,
        initial=global_step,
        desc="train",
        unit="step",
        disable=not (progress and lead),
    )
    example = builder.batch(np.arange(d.queries_per_step), "qrels")
    batch_sh = batch_shardings(example, mesh)  # the same for every stage
    local_rows = d.queries_per_step // jax.process_count()
    row0 = jax.process_index() * local_rows
    state = None

    for s in range(stage_idx, len(cfg.stages)):
        stage, n_steps = cfg.stages[s], stage_steps[s]
        built = build_stage_step(graphdef, rest, params, stage, n_steps, cfg, task, mesh, example)
        if state is None and latest is not None:
            mid_stage = stage_step > 0  # then the stage's optimizer state and step come back too
            restored = ckpt.restore(latest, built.restore_target(params), with_opt_state=mid_stage)
            state = built.init_state(
                restored["params"],
                opt_step=restored["opt_step"] if mid_stage else 0,
                opt_state=restored.get("opt_state"),
            )
        else:  # a new stage starts from the previous stage's params with a fresh optimizer
            state = built.init_state(state["params"] if state else params)
        step_fn = built.step_fn
        start = stage_step if s == stage_idx else 0
        for k in range(start, n_steps):
            t0 = time.perf_counter()
            indices = iterator.next_indices()
            local = builder.batch(
                indices[row0 : row0 + local_rows], stage.labels, batch_indices=indices
            )
            batch = {
                key: jax.make_array_from_process_local_data(batch_sh[key], v)
                for key, v in local.items()
            }
            t1 = time.perf_counter()
            state, metrics = step_fn(state, batch)
            metrics = jax.device_get(metrics)
            t2 = time.perf_counter()
            global_step += 1
            timings["data_s"] += t1 - t0
            timings["step_s"] += t2 - t1
            # real (unpadded) tokens of every tower, all processes
            tokens = jax.process_count() * sum(
                int(v.sum()) for m, v in local.items() if m in TOKEN_MASKS
            )
            record = {
                "step": global_step,
                "stage": stage.name,
                "loss": float(metrics["loss"]),
                **{key: float(v) for key, v in metrics.items() if key != "loss"},
                "tokens_per_s": tokens / (t2 - t1),
                "step_time": t2 - t1,
                "data_time": t1 - t0,
            }
            flops = step_flops(local, enc_tower, prompt_tower) * jax.process_count() / (t2 - t1)
            record["model_tflops_per_s"] = flops / 1e12
            if cfg.peak_tflops_per_device:
                record["mfu"] = flops / 1e12 / (cfg.peak_tflops_per_device * jax.device_count())
            if lead:
                with metrics_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
                tensorboard.scalars(
                    global_step, {k: v for k, v in record.items() if k not in ("step", "stage")}
                )
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tokens_per_s']:.0f}")
            done = k + 1 == n_steps
            if global_step % cfg.checkpoint_every == 0 or done or preemption.requested:
                t3 = time.perf_counter()
                meta = {
                    "stage": s,
                    "stage_step": k + 1,
                    "data": dataclasses.asdict(iterator.state),
                    "seed": cfg.seed,
                    "config": config_json,
                }
                ckpt.save(global_step, state, meta, force=True)
                if preemption.requested:
                    if tensorboard:
                        tensorboard.close()
                    ckpt.close()
                    bar.close()
                    raise SystemExit(143)
                timings["checkpoint_s"] += time.perf_counter() - t3
        compiles[stage.name] = step_fn._cache_size()
    bar.close()
    if tensorboard:
        tensorboard.close()
    t3 = time.perf_counter()
    ckpt.close()
    timings["checkpoint_s"] += time.perf_counter() - t3
    summary = {
        "origin": origin,
        "steps": global_step,
        "compiles_per_stage": compiles,
        "lists": len(builder),
        "list_counts": list_counts,
        "tokenizer": builder.stats,
        "timings": timings,
        "devices": jax.device_count(),
        "processes": jax.process_count(),
    }
    if state is not None:
        final = nnx.merge(
            graphdef,
            multihost_utils.process_allgather(state["params"], tiled=True)
            if jax.process_count() > 1
            else state["params"],
            rest,
        )
        if lead:
            export(final, task, out / "export")
    if lead:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def export(model, task: Task, out: Path) -> None:
    """HF directories of the trained encoder (and reranker) backbones."""
    export_hf(model.encoder.backbone, out / "encoder", tokenizer=task.encoder_tokenizer)
    if task.needs_reranker:
        export_hf(model.reranker, out / "reranker", tokenizer=task.reranker_tokenizer)
