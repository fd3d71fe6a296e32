"""Typed training configuration, presets derived from one base, and validated overrides.

Presets live in ``resrank_jax/configs/presets.py`` (the repository's ``configs/`` links there).
Overrides are ``key=value`` with dotted paths
(``stages`` and ``mesh`` take Python literals; ``model.resrank.residual=none``) plus two
shortcuts every preset accepts: ``steps`` (total optimizer steps over all stages, split by
each stage's ``fraction``) and ``checkpoint_every``. Unknown keys, wrong types and
impossible values are errors raised before anything is compiled.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import types
import typing
from typing import Any, Literal

from resrank_jax.data.bundled import resolve_data_path
from resrank_jax.errors import ConfigError, ConfigKeyError
from resrank_jax.instructions import instructions_for
from resrank_jax.models.config import ResRankConfig, remat_choice
from resrank_jax.tasks import get_task
from resrank_jax.tasks.base import Recipe


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Encoder and reranker sources: packaged names, HF dirs / hub ids, GGUF files, or
    ``tiny-bert`` / ``tiny-decoder`` (random tiny backbones for tests, using the packaged
    tokenizers). ``attention_impl``: ``xla``, or ``cudnn`` (fused attention on NVIDIA GPUs,
    bf16/fp16 only). ``remat``: rematerialisation of each layer, one of
    ``models.config.REMAT_CHOICES`` (configs saved with ``true`` / ``false`` load as
    ``full`` / ``none``). ``scan_layers``: decoders stack their layers' params and run them
    under ``jax.lax.scan`` (faster compiles; BERT stays unrolled)."""

    mode: str = "resrank"  # a model registered in resrank_jax.tasks.TASKS
    encoder: str = "all-minilm-l6-v2"
    reranker: str = "smollm2-135m-instruct"
    resrank: ResRankConfig = ResRankConfig()  # noqa: RUF009 (frozen, immutable default)
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    attention_impl: Literal["xla", "cudnn"] = "xla"
    scan_layers: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "remat", remat_choice(self.remat))


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Training lists: BEIR-style candidates + corpus + qrels (stage labels from qrels) and,
    optionally, a teacher file ``{query, documents, ranking}`` for teacher stages.
    ``array_record_dir`` (``tfds`` extra): store the tokenised lists there once as an
    ArrayRecord dataset and read them back by random access (empty: keep them in memory).
    ``candidate_order``: ``first_stage`` shows each list's candidates in first-stage order
    (then a judged positive sits in the first slot, or in the last one when it ranked below
    the hard negatives: 73% of SciFact train positives); ``shuffled`` permutes each list once
    with a seeded permutation (``seed``, list index), so slot position carries no label.
    ``negatives``: ``head`` takes each list's highest-ranked non-relevant candidates;
    ``sampled`` draws them uniformly from the whole first-stage list (seeded per list), so
    training lists look like inference's top-100 rather than its head. ``default_teacher``
    (stage labels ``teacher`` without a teacher file): ``first_stage`` ranks judged positives
    first, then the first-stage order (every pair of negatives teaches BM25 order);
    ``judged_only`` ties all unjudged candidates (no negative-vs-negative pairs).
    ``cached_vectors``: encode every training passage and query once with the starting
    encoder and train on those vectors (``train/vectors.py``); needs a reranker model whose
    encoder no stage trains and no ``ret`` loss: a step then runs only the reranker.

    The ranking recipe (``TrainConfig.recipe``, saved with the run and used by ``eval.py
    --checkpoint``): ``list_size``, the max lengths, E2Rank's ``prompt_doc_words`` /
    ``prompt_max_length`` / ``pseudo_query_layout`` and ``instructions`` (a key of
    ``resrank_jax.instructions.INSTRUCTIONS``)."""

    candidates: str = "data/scifact/candidates.train.jsonl"
    corpus: str = "data/scifact/corpus.jsonl"
    qrels: str = "data/scifact/qrels.train.txt"
    teacher: str = ""
    list_size: int = 20
    queries_per_step: int = 8
    max_queries: int = 0  # 0: all
    passage_max_length: int = 128
    query_max_length: int = 64
    prompt_doc_words: int = 1024  # E2Rank pseudo-query: words per document (as released)
    prompt_max_length: int = 4096  # E2Rank pseudo-query tokens (BERT encoders: <= 512)
    pseudo_query_layout: Literal["released_eval", "released_train"] = "released_eval"
    instructions: str = "default"
    array_record_dir: str = ""
    candidate_order: Literal["first_stage", "shuffled"] = "first_stage"
    dev_queries: int = 0  # the last N queries of ``candidates``, held out for eval_every (a
    # teacher file's lists of those qids are dropped too)
    negatives: Literal["head", "sampled"] = "head"
    default_teacher: Literal["first_stage", "judged_only"] = "first_stage"
    cached_vectors: bool = False

    def file(self, key: Literal["candidates", "corpus", "qrels", "teacher"]) -> str:
        """The path data file ``key`` is read from: as configured, except that a ``data/...``
        path missing from the current directory names the packaged data (or
        ``$RESRANK_DATA``'s), so the defaults train from any directory; see
        ``resrank_jax.data.bundled``. Empty (no teacher file) stays empty."""
        return resolve_data_path(getattr(self, key))


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """RankNet's ``kappa`` and pair weighting, InfoNCE's temperature, and whether InfoNCE
    drops a query's judged positives (and copies of its target) from its negatives when they
    reappear elsewhere in the batch (``mask_false_negatives``)."""

    kappa: float = 10.0
    temperature: float = 0.03
    ranknet_weighting: Literal["none", "first"] = "none"
    mask_false_negatives: bool = True


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One training stage: which params train (regexes over ``/``-joined param paths such as
    ``encoder/backbone/layers/0/...``), its losses (``rank``, ``ret``) and weights, its labels
    (``qrels`` or ``teacher``), its share of the total steps, its peak learning rate, and
    ``lr_scale``: ``(regex, multiplier)`` pairs giving matching params a multiple of it (first
    match wins; e.g. a freshly initialised gate or projector beside pretrained weights)."""

    name: str
    fraction: float
    trainable: tuple[str, ...] = (".*",)
    weights: tuple[tuple[str, float], ...] = (("rank", 2.0), ("ret", 1.0))
    labels: Literal["qrels", "teacher"] = "qrels"
    lr: float = 1e-5
    lr_scale: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW settings. ``decay_norms_and_biases=False`` (default) keeps norm scales/biases,
    biases and ResRank's scalars (gate, alpha, slot_scale) out of weight decay, as the HF
    Trainer that E2Rank's recipe runs under does (embeddings and kernels are decayed); True
    decays every trainable param."""

    weight_decay: float = 0.01
    decay_norms_and_biases: bool = False
    warmup_ratio: float = 0.1
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    grad_accum: int = 1


@dataclasses.dataclass(frozen=True)
class LoggingConfig:
    """Tracking besides ``metrics.jsonl`` and TensorBoard: Weights & Biases (``wandb`` extra;
    ``WANDB_MODE=offline`` works without an account)."""

    wandb: bool = False
    wandb_project: str = "resrank_jax"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training run. Besides model, data, losses, optimizer and stages:
    ``init_from`` (another run's directory: start from its latest params with a fresh
    optimizer), ``allow_data_change`` (resume although the data files changed),
    ``profile_steps`` (``A:B``: a ``jax.profiler`` trace of steps A..B into the TensorBoard
    directory), ``eval_every`` (rank the ``data.dev_queries`` held-out queries every N steps
    and log their nDCG@10) and ``keep_best`` (keep the best-dev checkpoint beside the latest)."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    stages: tuple[StageConfig, ...] = (
        StageConfig("stage1", 0.5, labels="qrels"),
        StageConfig("stage2", 0.5, labels="teacher"),
    )
    mesh: tuple[int, int, int] = (-1, 1, 1)
    steps: int = 200
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 1
    seed: int = 0
    peak_tflops_per_device: float = 0.0  # for MFU; 0 = unknown (MFU not reported)
    init_from: str = ""
    allow_data_change: bool = False
    logging: LoggingConfig = LoggingConfig()
    profile_steps: str = ""
    eval_every: int = 0
    keep_best: bool = False

    def recipe(self) -> Recipe:
        """What ranking needs besides the weights (saved with the run as part of the config)."""
        d = self.data
        return Recipe(
            list_size=d.list_size,
            passage_max_length=d.passage_max_length,
            query_max_length=d.query_max_length,
            prompt_max_length=d.prompt_max_length,
            prompt_doc_words=d.prompt_doc_words,
            pseudo_query_layout=d.pseudo_query_layout,
            instructions=d.instructions,
        )

    def _check_cached_vectors(self) -> None:
        """``data.cached_vectors`` trains the reranker on fixed encoder vectors: no stage may
        ask for the contrastive term (it trains the encoder), and the vectors live in memory."""
        if not self.data.cached_vectors:
            return
        with_ret = [s.name for s in self.stages if "ret" in dict(s.weights)]
        if with_ret:
            raise ConfigError(
                f"data.cached_vectors=true: stages {with_ret} have the 'ret' loss, which trains "
                "the encoder; drop it (weights=(('rank', 2.0),))"
            )
        if self.data.array_record_dir:
            raise ConfigError(
                "data.cached_vectors=true keeps the lists in memory: unset data.array_record_dir"
            )
        if not get_task(self.model.mode).needs_reranker:
            raise ConfigError(
                f"data.cached_vectors=true: model.mode={self.model.mode!r} has no reranker to train"
            )

    def stage_steps(self) -> list[int]:
        """Steps of each stage: ``steps`` split by fraction, the last stage takes the rest."""
        counts = [round(self.steps * s.fraction) for s in self.stages[:-1]]
        return [*counts, self.steps - sum(counts)]

    def profile_window(self) -> tuple[int, int] | None:
        """``profile_steps="A:B"`` as ``(A, B)`` (global steps, 1-based, inclusive)."""
        if not self.profile_steps:
            return None
        first, _, last = self.profile_steps.partition(":")
        try:
            window = int(first), int(last or first)
        except ValueError:
            window = (0, 0)
        if not 1 <= window[0] <= window[1]:
            raise ConfigError(
                f"profile_steps={self.profile_steps!r}: expected A:B with 1 <= A <= B"
            )
        return window

    def validate(self) -> TrainConfig:
        if self.steps < 1:
            raise ConfigError(f"steps={self.steps} must be >= 1")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every={self.checkpoint_every} must be >= 1")
        if not self.stages:
            raise ConfigError("at least one stage is required")
        if any(s < 0 for s in self.stage_steps()):
            raise ConfigError(f"stage fractions {[s.fraction for s in self.stages]} exceed 1")
        for stage in self.stages:
            unknown = sorted({k for k, _ in stage.weights} - {"rank", "ret"})
            if unknown:
                raise ConfigError(f"stage {stage.name!r}: unknown loss terms {unknown} (rank, ret)")
            for pattern in stage.trainable:
                try:
                    re.compile(pattern)
                except re.error as err:
                    raise ConfigError(
                        f"stage {stage.name!r}: bad regex {pattern!r}: {err}"
                    ) from None
        if self.eval_every < 0 or (self.eval_every > 0) != (self.data.dev_queries > 0):
            raise ConfigError(
                f"eval_every={self.eval_every} needs data.dev_queries > 0 (and the reverse): "
                "the held-out queries it ranks"
            )
        if self.keep_best and not self.eval_every:
            raise ConfigError("keep_best=true needs eval_every > 0 (the dev score it keeps)")
        self.profile_window()
        if self.data.list_size < 2:
            raise ConfigError(f"data.list_size={self.data.list_size} must be >= 2")
        self._check_cached_vectors()
        get_task(self.model.mode)
        instructions_for(self.data.instructions)
        return self


def _coerce(value: str, annotation: Any, key: str) -> Any:
    """Parses ``value`` into the type ``annotation`` of field ``key``."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in annotation.__args__:
            raise ConfigError(f"{key}={value!r}: choose from {annotation.__args__}")
        return value
    if annotation is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{key}={value!r} is not a boolean")
        return value.lower() in ("true", "1")
    if annotation in (int, float, str):
        try:
            return annotation(value)
        except ValueError:
            article = "an" if annotation is int else "a"
            raise ConfigError(f"{key}={value!r} is not {article} {annotation.__name__}") from None
    if origin in (tuple, types.UnionType) or annotation is None:
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ConfigError(f"{key}={value!r} is not a Python literal") from None
        return tuple(parsed) if isinstance(parsed, list) else parsed
    raise ConfigError(f"{key}: overriding a value of type {annotation} is not supported")


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def apply_override(cfg: Any, key: str, value: str) -> Any:
    """``cfg`` with the dotted field ``key`` set from the string ``value`` (validated)."""
    head, _, rest = key.partition(".")
    fields = {f.name for f in dataclasses.fields(cfg)}
    if head not in fields:
        raise ConfigKeyError(
            f"unknown config key {key!r}; {type(cfg).__name__} has {sorted(fields)}"
        )
    child = getattr(cfg, head)
    index, _, tail = rest.partition(".")
    if rest and isinstance(child, tuple) and index.isdigit():  # stages.1.lr=...
        if int(index) >= len(child) or not tail:
            raise ConfigKeyError(f"unknown config key {key!r}: {head} has {len(child)} entries")
        items = list(child)
        items[int(index)] = apply_override(items[int(index)], tail, value)
        return dataclasses.replace(cfg, **{head: tuple(items)})
    if rest:
        if not dataclasses.is_dataclass(child):
            raise ConfigKeyError(f"unknown config key {key!r}: {head} has no sub-keys")
        return dataclasses.replace(cfg, **{head: apply_override(child, rest, value)})
    return dataclasses.replace(cfg, **{head: _coerce(value, _hints(type(cfg))[head], key)})


def _load_presets() -> dict:
    """``resrank_jax.configs.presets.PRESETS``, imported as a module of the package (a wheel
    ships it; any working directory works). Imported here, not at the top: the presets module
    builds its configs from this one."""
    from resrank_jax.configs.presets import PRESETS

    return PRESETS


def resolve_config(name: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The preset ``name`` (``resrank_jax/configs/presets.py``) with ``key=value`` overrides,
    validated."""
    PRESETS = _load_presets()
    if name not in PRESETS:
        raise ConfigKeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[name]
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not key=value")
        cfg = apply_override(cfg, key.strip(), value.strip())
    return cfg.validate()


def config_to_json(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)


def _from_dict(cls, data: dict) -> Any:
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value, hint = data[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            args = typing.get_args(hint)
            if args and dataclasses.is_dataclass(args[0]):
                value = tuple(_from_dict(args[0], v) for v in value)
            else:
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)


def config_from_json(text: str) -> TrainConfig:
    """Inverse of ``config_to_json`` (the resolved config saved with every run)."""
    return _from_dict(TrainConfig, json.loads(text)).validate()
