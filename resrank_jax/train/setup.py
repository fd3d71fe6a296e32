"""Everything a training run needs before its first step, and where it starts.

Start order: this run's newest checkpoint that restores (an unreadable one is reported in one
line, set aside, and the next older one tried), else ``init_from``'s latest params with a fresh
optimizer, else the HF/GGUF/packaged import the config names, else scratch (the ``tiny-*``
random backbones).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import jax
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from resrank_jax.config import TrainConfig, config_to_json
from resrank_jax.errors import ConfigError
from resrank_jax.flops import Tower
from resrank_jax.paths import as_path, is_url
from resrank_jax.sharding import make_mesh
from resrank_jax.tasks import Task
from resrank_jax.train.batches import ListBatches
from resrank_jax.train.checkpoint import Checkpointer, CheckpointUnreadable
from resrank_jax.train.data import load_batches
from resrank_jax.train.models import TINY, build_model, build_task, restore_params
from resrank_jax.train.resume import (
    Position,
    check_same_config,
    check_same_data,
    data_fingerprint,
)
from resrank_jax.train.state import StageStep, build_stage_step, trainable_labels
from resrank_jax.train.vectors import check_encoder_frozen, with_vectors


@dataclasses.dataclass
class Run:
    """One config training into one directory: model parts, data, checkpoints, and the
    position and state training continues from (``state`` is None before the first stage
    of a fresh run)."""

    cfg: TrainConfig
    out: epath.Path
    mesh: Mesh
    graphdef: nnx.GraphDef
    params: nnx.State
    rest: nnx.State
    task: Task
    builder: ListBatches
    list_counts: dict
    ckpt: Checkpointer
    config_json: str
    fingerprint: dict[str, str]
    towers: tuple[Tower, Tower]
    pos: Position
    origin: str
    built: StageStep | None = None
    state: dict | None = None
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def lead(self) -> bool:
        return jax.process_index() == 0

    def build_stage(self, s: int) -> StageStep:
        """Optimizer, shardings and step of stage ``s`` for its planned steps, compiled for
        the shape of a batch of the first lists (before this stage's optimizer state exists;
        another prompt bucket compiles when it comes)."""
        example = self.builder.batch(range(self.cfg.data.queries_per_step), "qrels")
        built = build_stage_step(
            self.graphdef,
            self.rest,
            self.params,
            self.cfg.stages[s],
            self.pos.plan[s],
            self.cfg,
            self.task,
            self.mesh,
            example,
        )
        built.compile(example)
        return built


def setup(cfg: TrainConfig, output_dir: str) -> Run:
    """Validates ``cfg``, builds model, task and data, and restores where training goes on."""
    t0 = time.perf_counter()
    cfg.validate()
    mesh = make_mesh(cfg.mesh)  # a mesh that does not divide the devices fails here
    check_batch_split(cfg, mesh)
    out = as_path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    # patterns naming no parameter fail before any compile
    trainable = {stage.name: trainable_labels(params, stage) for stage in cfg.stages}
    task.check(model)
    builder, list_counts = load_batches(cfg, task)
    if cfg.data.cached_vectors:
        check_encoder_frozen(trainable)
        builder = with_vectors(builder, starting_encoder(cfg, graphdef, params, rest, mesh))
    run = Run(
        cfg,
        out,
        mesh,
        graphdef,
        params,
        rest,
        task,
        builder,
        list_counts,
        checkpointer(out, cfg),
        config_to_json(cfg),
        data_fingerprint(cfg),
        towers(model, task),
        Position.start(cfg),
        origin="",
    )
    run.origin = resume(run) or start_fresh(run)
    if run.lead:
        (out / "config.json").write_text(run.config_json + "\n")
    run.timings["setup_s"] = time.perf_counter() - t0
    return run


def starting_encoder(cfg: TrainConfig, graphdef, params, rest, mesh: Mesh):
    """The encoder training starts from (``init_from``'s, else the imported one): with
    ``data.cached_vectors`` no stage changes it, so a resumed run's encoder is this one."""
    if cfg.init_from:
        params, _ = restore_params(cfg.init_from, params, mesh)
    return nnx.merge(graphdef, params, rest).encoder


def checkpointer(out: epath.Path, cfg: TrainConfig) -> Checkpointer:
    """The run's checkpoints. On accelerators: async OCDBT saves. On CPU the state already
    lives in host memory, where an async save's host copy doubles it beside the next step
    (measured: 7.0 vs 5.1 GB peak for the SmolLM2 pair), so there saves finish before the
    next step; and OCDBT's buffers add 0.9 GB, so local CPU runs write plain TensorStore
    arrays (object stores keep OCDBT's few large files)."""
    on_cpu = jax.default_backend() == "cpu"
    return Checkpointer(
        out / "checkpoints",
        keep=cfg.keep_checkpoints,
        async_save=not on_cpu,
        ocdbt=not on_cpu or is_url(out),
    )


def towers(model, task: Task) -> tuple[Tower, Tower]:
    """The shapes FLOPs are counted on: the encoder, and the tower that reads the prompt (the
    reranker for ResRank, the encoder itself for E2Rank)."""
    encoder = Tower.of(model.encoder.backbone)
    return encoder, Tower.of(model.reranker) if task.needs_reranker else encoder


def check_batch_split(cfg: TrainConfig, mesh: Mesh) -> None:
    """Raises ``ConfigError`` unless a step's lists split evenly over shards and processes."""
    ways = mesh.shape["data"] * mesh.shape["fsdp"]
    n = cfg.data.queries_per_step
    if n % ways:
        raise ConfigError(
            f"data.queries_per_step={n} cannot be split over the {ways} data x fsdp shards of "
            f"mesh {dict(mesh.shape)}"
        )
    if n % jax.process_count():
        raise ConfigError(
            f"data.queries_per_step={n} is not divisible by {jax.process_count()} processes"
        )


def resume(run: Run) -> str | None:
    """Restores the newest readable checkpoint of this run into ``run``; returns the origin
    line, or None when the run has no checkpoint. Config or data mismatches raise
    ``ConfigError``; an unreadable checkpoint is reported, set aside and the next one tried."""
    for step in run.ckpt.all_steps()[::-1]:
        try:
            restore_checkpoint(run, step)
        except CheckpointUnreadable as err:
            aside = run.ckpt.set_aside(step)
            if run.lead:
                print(f"warning: {err}; moved to {aside}, trying an older one", file=sys.stderr)
            continue
        return f"resumed from step {step}"
    return None


def restore_checkpoint(run: Run, step: int) -> None:
    """Sets ``run.pos``, ``run.built`` and ``run.state`` from checkpoint ``step``."""
    meta = run.ckpt.restore_meta(step)
    check_same_config(meta["config"], run.config_json, str(run.out))
    check_same_data(meta.get("data_fingerprint"), run.fingerprint, run.cfg)
    pos = Position.from_meta(meta, step, run.cfg)
    mid_stage = not pos.finished and pos.stage_step > 0
    run.pos = pos  # the plan sizes the stage's schedule
    built = run.build_stage(min(pos.stage, len(run.cfg.stages) - 1))
    try:
        restored = run.ckpt.restore(step, built.abstract_state, with_opt_state=mid_stage)
    except CheckpointUnreadable:
        run.pos = Position.start(run.cfg)
        raise
    run.state = built.init_state(
        restored["params"],
        opt_step=restored["opt_step"] if mid_stage else 0,
        opt_state=restored.get("opt_state"),
    )
    run.built = built if mid_stage else None  # a new stage starts with a fresh optimizer


def start_fresh(run: Run) -> str:
    """A run without checkpoints: ``init_from``'s params, or the weights ``build_model``
    imported (or initialised, for tiny backbones)."""
    if run.cfg.init_from:
        run.params, step = restore_params(run.cfg.init_from, run.params, run.mesh)
        return f"warm-started from {run.cfg.init_from} (step {step}), fresh optimizer"
    if run.cfg.model.encoder in TINY or run.cfg.model.reranker in TINY:
        return "scratch (random tiny backbones)"
    return "imported pretrained weights"
