"""A trained reranker as one directory that loads anywhere, without its Orbax run.

    export_artifact("runs/tiny", "artifacts/tiny")      # or: resrank export RUN_DIR OUT_DIR
    ranker = load_ranker("artifacts/tiny")              # or: --model artifacts/tiny
    ranker.rerank("how long do fleas live", ["text one", "text two"])

Layout (``FORMAT_VERSION`` 1)::

    OUT_DIR/
      resrank.json        format version, task (the run's ``model.mode``), model settings
                          (ResRankConfig, dtypes, encoder pooling, tokenizer conventions),
                          the ranking recipe, the head's tensor names/shapes, provenance
      encoder/            HF directory: config.json, model.safetensors, tokenizer files
      reranker/           HF directory of the Reranker-LLM (ResRank only)
      head.safetensors    every parameter outside the two backbones (ResRank: projector,
                          gate, alpha, slot_scale... as the config has them), by nnx path
      README.md           model card generated from the run (``export_artifact`` only)

E2Rank and dense runs have no reranker and no head: ``encoder/`` and ``resrank.json``. The
head's tensors are found generically (the model's ``nnx.Param`` state minus the backbone
subtrees), so a new head parameter is exported without a change here. Weights are read from
safetensors only (nothing is unpickled); the backbones load through ``load_backbone``, the
head is checked name by name and shape by shape against the model the config rebuilds, and
the tokenizers get the pooling conventions the run trained with, so a loaded artifact scores
exactly as ``ranker_from_run`` on the run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from resrank_jax.errors import ConfigError, UserError
from resrank_jax.model_card import model_card
from resrank_jax.paths import as_path, copy_tree, is_url, staged

FORMAT = "resrank_jax.artifact"
FORMAT_VERSION = 1
MANIFEST = "resrank.json"
HEAD_FILE = "head.safetensors"
CARD_FILE = "README.md"


# ---- the model's parts ----------------------------------------------------------------------
def backbone_paths(model) -> dict[str, tuple]:
    """``{directory name: nnx path}`` of the backbones (BERT / decoder modules) inside
    ``model``: ``{"encoder": ("encoder", "backbone"), "reranker": ("reranker",)}`` for ResRank;
    the directory is the path's first attribute."""
    from resrank_jax.models.bert import Bert
    from resrank_jax.models.decoder import Decoder

    found: dict[str, tuple] = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, Bert | Decoder) and path:
            inside = [p for p in found.values() if path[: len(p)] == p]
            if inside:
                continue  # a module nested in a backbone already found
            name = str(path[0])
            if name in found:
                raise ValueError(f"two backbones under {name!r}: {found[name]} and {path}")
            found[name] = tuple(path)
    return found


def _key(path: tuple) -> str:
    return "/".join(map(str, path))


def head_params(model) -> dict[str, jax.Array]:
    """Every ``nnx.Param`` of ``model`` outside its backbones, by ``/``-joined path
    (ResRank: ``projector/kernel``, ``gate``...; E2Rank/dense: none)."""
    inside = list(backbone_paths(model).values())
    return {
        _key(path): var.get_value()
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
        if not any(tuple(path[: len(p)]) == p for p in inside)
    }


def _numpy_for_safetensors(array) -> np.ndarray:
    """``array`` as numpy that ``safetensors.numpy`` writes; bfloat16 (which it cannot) as
    float32, exact, cast back on load."""
    out = np.asarray(array)
    if out.dtype.name == "bfloat16":
        out = out.astype(np.float32)
    return np.array(out, order="C")  # (not ascontiguousarray: it makes scalars 1-d)


def _convention_json(tokenizer) -> dict:
    return dataclasses.asdict(tokenizer.convention)


def manifest(model, task, *, source: dict | None = None) -> dict:
    """The ``resrank.json`` of ``model`` and its ``task``: everything ``load_artifact`` needs
    to rebuild them besides the weights."""
    from resrank_jax.models.config import ResRankConfig

    backbones = backbone_paths(model)
    encoder_cfg = model.encoder.backbone.cfg
    cfg = getattr(model, "cfg", None)
    head = head_params(model)
    parts: dict[str, Any] = {
        "encoder": {
            "dir": "encoder",
            "pooling": model.encoder.pooling,
            "convention": _convention_json(task.encoder_tokenizer),
        }
    }
    if "reranker" in backbones:
        parts["reranker"] = {
            "dir": "reranker",
            "convention": _convention_json(task.reranker_tokenizer),
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "task": task.name,
        "model": {
            "resrank": dataclasses.asdict(cfg) if isinstance(cfg, ResRankConfig) else None,
            "dtype": encoder_cfg.dtype,
            "param_dtype": encoder_cfg.param_dtype,
            "attention_impl": encoder_cfg.attention_impl,
        },
        **parts,
        "head": {
            "file": HEAD_FILE,
            "params": {
                k: {"shape": list(v.shape), "dtype": str(np.dtype(v.dtype))}
                for k, v in sorted(head.items())
            },
        }
        if head
        else None,
        "recipe": dataclasses.asdict(task.recipe),
        "source": source or {},
    }


def write_artifact(model, task, out, *, source: dict | None = None, card: str | None = None):
    """Writes ``model`` (trained or not) and ``task`` as an artifact at ``out`` (a local path
    or a URL: written locally, then copied): the backbones as HF directories with their
    tokenizers, the head in safetensors, ``resrank.json`` and, when given, the model card.
    Returns ``out`` as a path."""
    from safetensors.numpy import save_file

    from resrank_jax.hf.export import export_hf

    backbones = backbone_paths(model)
    unknown = set(backbones) - {"encoder", "reranker"}
    if unknown or "encoder" not in backbones:
        raise ValueError(f"unexpected backbones {sorted(backbones)}: need encoder (+ reranker)")
    info = manifest(model, task, source=source)
    with staged(out) as local:
        export_hf(model.encoder.backbone, local / "encoder", tokenizer=task.encoder_tokenizer)
        if "reranker" in backbones:
            export_hf(model.reranker, local / "reranker", tokenizer=task.reranker_tokenizer)
        head = head_params(model)
        if head:
            tensors = {k: _numpy_for_safetensors(v) for k, v in head.items()}
            save_file(tensors, str(local / HEAD_FILE), metadata={"format": "np"})
        (local / MANIFEST).write_text(json.dumps(info, indent=2) + "\n")
        if card is not None:
            (local / CARD_FILE).write_text(card)
    return as_path(out)


# ---- export from a run ----------------------------------------------------------------------
def load_run(run_dir, mesh: Mesh | None = None):
    """``(model, task, config, step)`` of a training run's latest committed checkpoint
    (``train.models.load_trained_at_step``), after checks that fail before any model is built."""
    from resrank_jax.config import config_from_json
    from resrank_jax.train.models import load_trained_at_step

    run_dir = as_path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir}: not a training run (no config.json)")
    try:
        config_from_json((run_dir / "config.json").read_text())
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"{run_dir / 'config.json'}: unreadable run config ({err})") from err
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir}: no committed checkpoint (no checkpoints/ directory)")
    return load_trained_at_step(run_dir, mesh)


def export_artifact(run_dir, out_dir, *, overwrite: bool = False):
    """Exports training run ``run_dir`` (its latest committed checkpoint) as an artifact at
    ``out_dir`` (local paths or URLs), with a model card from the run's files. Refuses a
    non-empty ``out_dir`` unless ``overwrite``. Returns ``out_dir`` as a path."""
    out = as_path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file, not a directory")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out}: exists and is not empty (overwrite it with --force)")
    model, task, cfg, step = load_run(run_dir)
    run = as_path(run_dir)
    source = {
        "run_dir": str(run),
        "step": int(step),
        "encoder": cfg.model.encoder,
        "reranker": cfg.model.reranker if task.needs_reranker else None,
        "seed": cfg.seed,
    }
    card = model_card(run, cfg, step, manifest(model, task, source=source))
    return write_artifact(model, task, out, source=source, card=card)


# ---- load -----------------------------------------------------------------------------------
def is_artifact(source) -> bool:
    """Whether ``source`` (a path or URL; anything else is no artifact) is an artifact
    directory (holds ``resrank.json``)."""
    try:
        path = as_path(source)
        return path.is_dir() and (path / MANIFEST).exists()
    except (OSError, ValueError, TypeError):
        return False


def read_manifest(directory) -> dict:
    """The checked ``resrank.json`` of an artifact directory."""
    path = as_path(directory) / MANIFEST
    if not path.exists():
        raise UserError(f"{as_path(directory)}: not a resrank_jax artifact (no {MANIFEST})")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not JSON ({err})") from err
    if info.get("format") != FORMAT:
        raise UserError(f"{path}: format {info.get('format')!r} is not {FORMAT!r}")
    if info.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{path}: format version {info.get('format_version')} is not {FORMAT_VERSION} "
            "(export it again with this version of resrank_jax)"
        )
    return info


class _LocalCopy:
    """A local directory for ``source``: itself, or a temporary download of a URL."""

    def __init__(self, source) -> None:
        self.tmp = None
        if is_url(source):
            self.tmp = Path(tempfile.mkdtemp(prefix="resrank-artifact-"))
            copy_tree(source, self.tmp)
            self.path = self.tmp
        else:
            self.path = Path(as_path(source))

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _tokenizer_with_convention(tokenizer, convention: dict):
    from resrank_jax.pooling_conventions import PoolingConvention
    from resrank_jax.tokenizer import TextTokenizer

    return TextTokenizer(tokenizer.hf, convention=PoolingConvention(**convention))


def _load_part(path: Path, part: dict, dtypes: dict, mesh: Mesh):
    from resrank_jax.hf.load import load_backbone

    backbone, tokenizer = load_backbone(path / part["dir"], mesh=mesh, **dtypes)
    if tokenizer is None:
        raise UserError(f"{path / part['dir']}: no tokenizer files")
    return backbone, _tokenizer_with_convention(tokenizer, part["convention"])


def _set_head(model, path: Path, info: dict) -> None:
    """Loads ``head.safetensors`` into ``model``'s head params (exactly the same names and
    shapes, each onto the sharding of the param it replaces)."""
    from safetensors.numpy import load_file

    expected = head_params(model)
    spec = info.get("head") or {}
    if not expected and not spec:
        return
    file = path / spec.get("file", HEAD_FILE)
    if not file.exists():
        raise UserError(f"{file}: missing (the model has head params {sorted(expected)})")
    tensors = load_file(str(file))
    if set(tensors) != set(expected):
        raise UserError(
            f"{file}: tensors {sorted(tensors)} do not match the model's head params "
            f"{sorted(expected)}"
        )
    params = nnx.state(model, nnx.Param)
    flat = nnx.to_flat_state(params)
    for key_path, var in flat:
        key = _key(key_path)
        if key not in tensors:
            continue
        old = var.get_value()
        new = tensors[key]
        if tuple(new.shape) != tuple(old.shape):
            raise UserError(f"{file}: {key} has shape {new.shape}, the model {old.shape}")
        var.set_value(jax.device_put(new.astype(old.dtype), old.sharding))
    nnx.update(model, nnx.from_flat_state(flat))


def load_artifact(
    directory,
    *,
    mesh: Mesh | None = None,
    dtype: str | None = None,
    attention_impl: str = "xla",
):
    """The model and task of an artifact (``export_artifact``/``write_artifact``).

    Args:
        directory: the artifact directory (a local path or a URL, downloaded first).
        mesh: where to place the params (default: one device).
        dtype: params' and compute dtype (default: the trained ones).
        attention_impl: ``xla`` (any device, default) or ``cudnn``.

    Returns:
        ``(model, task)``: ResRank (or the encoder-only model) and its task with the recipe
        of the run.
    """
    from resrank_jax.models.build import default_mesh
    from resrank_jax.models.config import ResRankConfig
    from resrank_jax.models.encoder import Encoder
    from resrank_jax.tasks import Recipe, get_task

    info = read_manifest(directory)
    task_cls = get_task(info["task"])
    settings = info["model"]
    dtypes = dict(
        dtype=dtype or settings["dtype"],
        param_dtype=dtype or settings["param_dtype"],
        attention_impl=attention_impl,
    )
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    unknown = set(info["recipe"]) - recipe_fields
    if unknown:
        raise UserError(f"{directory}: unknown recipe fields {sorted(unknown)}")
    recipe = Recipe(**info["recipe"])
    mesh = default_mesh(mesh)
    with _LocalCopy(directory) as path:
        enc_backbone, enc_tok = _load_part(path, info["encoder"], dtypes, mesh)
        rr_backbone, rr_tok = None, None
        if task_cls.needs_reranker:
            if not info.get("reranker"):
                raise UserError(f"{directory}: a {task_cls.name} artifact needs reranker/")
            rr_backbone, rr_tok = _load_part(path, info["reranker"], dtypes, mesh)
        resrank_cfg = ResRankConfig(**(settings.get("resrank") or {}))
        encoder = Encoder(enc_backbone, pooling=info["encoder"]["pooling"])
        model = task_cls.make_model(encoder, rr_backbone, resrank_cfg, 0)
        _set_head(model, path, info)
    return model, task_cls(recipe, enc_tok, rr_tok)


def artifact_rankers(directory, passage_max_length: int | None = None, **load_kw) -> dict[str, Any]:
    """The rankers of an artifact, sharing one model and one embedding cache (as
    ``run_rankers`` for a run): ``dense`` (its encoder alone) and its own model."""
    from resrank_jax.rerank.encode import EmbeddingCache
    from resrank_jax.rerank.model_ranker import ModelRanker
    from resrank_jax.tasks.dense import DenseTask

    model, task = load_artifact(directory, **load_kw)
    if passage_max_length is not None:
        task = task.with_recipe(passage_max_length=passage_max_length)
    cache = EmbeddingCache()
    rankers = {
        "dense": ModelRanker(DenseTask(task.recipe, task.encoder_tokenizer), model, cache=cache)
    }
    rankers[task.name] = ModelRanker(task, model, cache=cache)
    return rankers


def load_ranker(
    directory,
    name: str | None = None,
    *,
    passage_max_length: int | None = None,
    window: tuple[int, int] | None = None,
    batch_size: int = 32,
    mesh: Mesh | None = None,
    dtype: str | None = None,
    attention_impl: str = "xla",
):
    """A ``ModelRanker`` of an exported reranker.

    Args:
        directory: the artifact (``resrank export RUN_DIR OUT_DIR``), a local path or URL.
        name: which ranker: the artifact's own model (default: ``resrank`` or ``e2rank``),
            ``dense`` (its encoder alone) or ``resrank-window`` (ResRank in sliding windows).
        passage_max_length: overrides the recipe's passage length.
        window: ``(size, step)`` sliding windows (default: one pass; ``resrank-window``
            20/10).
        batch_size: passages per encoder call.
        mesh, dtype, attention_impl: as ``load_artifact``.
    """
    from resrank_jax.rerank.factory import check_window, task_and_window
    from resrank_jax.rerank.model_ranker import ModelRanker

    rankers = artifact_rankers(
        directory,
        passage_max_length,
        mesh=mesh,
        dtype=dtype,
        attention_impl=attention_impl,
    )
    own = next(n for n in rankers if n != "dense")
    name = name or own
    task_name, window = task_and_window(name, check_window(name, window))
    if task_name not in rankers:
        raise ConfigError(f"a {'/'.join(rankers)} artifact cannot serve ranker {name!r}")
    ranker = rankers[task_name]
    if window is None and batch_size == ranker.batch_size:
        return ranker
    return ModelRanker(ranker.task, ranker.model, window=window, batch_size=batch_size)
