"""Build the model pair a config names (random tiny backbones, packaged weights, HF sources)
with its tokenizers, already placed on the mesh."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx
from jax.sharding import Mesh

from resrank_jax.config import ModelConfig
from resrank_jax.errors import ConfigError, UserError
from resrank_jax.hf.load import load_backbone, load_tokenizer
from resrank_jax.hf.packaged import PACKAGED, packaged_weights
from resrank_jax.models.build import Backbone, default_mesh, init_backbone, state_shardings
from resrank_jax.models.config import BertConfig, DecoderConfig, with_scan_layers
from resrank_jax.models.encoder import Encoder
from resrank_jax.paths import as_path
from resrank_jax.tasks import Task, get_task
from resrank_jax.tokenizer import TextTokenizer

# Random tiny backbones that use the packaged tokenizers (their vocabularies).
TINY = {
    "tiny-bert": (
        BertConfig(
            vocab_size=30522, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2
        ),
        "all-minilm-l6-v2",
    ),
    "tiny-decoder": (
        DecoderConfig(
            family="llama",
            vocab_size=49152,
            hidden_size=32,
            intermediate_size=64,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            rope_theta=100000.0,
        ),
        "smollm2-135m-instruct",
    ),
}


def backbone_and_tokenizer(
    source: str, cfg: ModelConfig, mesh: Mesh, seed: int
) -> tuple[Backbone, TextTokenizer]:
    """``(backbone on mesh, checked tokenizer)`` for a source name."""
    overrides = dict(
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        remat=cfg.remat,
        attention_impl=cfg.attention_impl,
    )
    if source in TINY:
        arch, tokenizer_source = TINY[source]
        tokenizer = load_tokenizer(packaged_weights(tokenizer_source))
        arch = with_scan_layers(arch.replace(**overrides), cfg.scan_layers)
        return init_backbone(arch, mesh=mesh, seed=seed), tokenizer
    path = packaged_weights(source) if source in PACKAGED else source
    model, tokenizer = load_backbone(path, mesh=mesh, scan_layers=cfg.scan_layers, **overrides)
    if tokenizer is None:
        raise ConfigError(f"{source}: no tokenizer found next to the weights")
    return model, tokenizer


def build_model(cfg: ModelConfig, mesh: Mesh, seed: int):
    """Returns ``(model, encoder_tokenizer, reranker_tokenizer)``: the model the registered
    task ``cfg.mode`` makes (``.encoder``, and ``.reranker`` for ResRank); BERT encoders pool
    as they were trained (mean), decoders on their last token."""
    task = get_task(cfg.mode)
    encoder, enc_tok = backbone_and_tokenizer(cfg.encoder, cfg, mesh, seed)
    reranker, rr_tok = None, enc_tok
    if task.needs_reranker:
        reranker, rr_tok = backbone_and_tokenizer(cfg.reranker, cfg, mesh, seed + 1)
    return task.make_model(Encoder(encoder), reranker, cfg.resrank, seed), enc_tok, rr_tok


def build_task(cfg, enc_tok: TextTokenizer, rr_tok: TextTokenizer) -> Task:
    """The task (prompt, batch fields, score) of a ``TrainConfig``, with its recipe."""
    return get_task(cfg.model.mode)(cfg.recipe(), enc_tok, rr_tok)


def load_trained(run_dir: str | Path, mesh: Mesh | None = None):
    """The model of a training run at its latest committed checkpoint (all params, ResRank's
    projector/scale/gate included), with its task (the run's recipe) and config.

    Returns ``(model, task, config)``; ``load_trained_at_step`` also gives the step.
    """
    return load_trained_at_step(run_dir, mesh)[:3]


def load_trained_at_step(run_dir: str | Path, mesh: Mesh | None = None):
    """``(model, task, config, step)`` of a training run's latest committed checkpoint."""
    from resrank_jax.config import config_from_json

    run_dir = as_path(run_dir)
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir}: not a training run (no config.json)")
    cfg = config_from_json((run_dir / "config.json").read_text())
    mesh = default_mesh(mesh)
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    params, step = restore_params(run_dir, params, mesh)
    return nnx.merge(graphdef, params, rest), build_task(cfg, enc_tok, rr_tok), cfg, step


def restore_params(run_dir, params: nnx.State, mesh: Mesh) -> tuple[nnx.State, int]:
    """The params of ``run_dir``'s latest committed checkpoint, restored onto the structure,
    shapes and shardings of ``params`` (another model of the same shape: ``init_from``).

    Returns ``(params, step)``."""
    from resrank_jax.train.checkpoint import Checkpointer

    ckpt = Checkpointer(as_path(run_dir) / "checkpoints", async_save=False)
    step = ckpt.latest_step()
    if step is None:
        ckpt.close()
        raise UserError(f"{run_dir}: no committed checkpoint")
    target = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh),
        params,
        state_shardings(params, mesh),
    )
    params = ckpt.restore(step, {"params": target}, with_opt_state=False)["params"]
    ckpt.close()
    return params, step
