"""Build any ranker by name from model sources (HF directory, hub id, GGUF file, packaged
weights)."""

from __future__ import annotations

from resrank_jax.errors import ConfigError
from resrank_jax.hf.load import load_backbone
from resrank_jax.hf.packaged import PACKAGED, packaged_weights
from resrank_jax.models.bert import Bert
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank.base import IdentityRanker, Ranker
from resrank_jax.rerank.encode import EmbeddingCache
from resrank_jax.rerank.generative import GenerativeRanker
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks import TASKS, Recipe, get_task
from resrank_jax.tasks.dense import DenseTask

RANKERS = ("bm25", "identity", *TASKS, "resrank-window", "generative")
ZERO_SHOT_PASSAGE_LENGTH = 256
DEFAULT_WINDOW = (20, 10)
"""RankGPT's sliding windows (size, step): ``resrank-window`` and ``generative`` by default."""
WINDOWED = ("e2rank", "resrank", "resrank-window", "generative")
"""Rankers that take ``window=(size, step)``; ``resrank`` and ``e2rank`` rank in one pass
unless given one (dense scores passages one by one: windows cannot change its order)."""


def resolve_model(source: str, dtype: str = "float32"):
    """Packaged weight names (``all-minilm-l6-v2``, ``smollm2-135m-instruct``) or any
    ``load_backbone`` source, with params and compute in ``dtype``."""
    path = packaged_weights(source) if source in PACKAGED else source
    return load_backbone(path, dtype=dtype, param_dtype=dtype)


def check_window(name: str, window: tuple[int, int] | None) -> tuple[int, int] | None:
    """``window`` checked for ranker ``name``: ``ConfigError`` for a ranker that takes none
    (``WINDOWED``) or sizes ``sliding_windows`` refuses (size >= 2, 1 <= step <= size)."""
    if window is None:
        return None
    if name not in WINDOWED:
        raise ConfigError(
            f"ranker {name!r} does not rank in windows; windows serve {', '.join(WINDOWED)}"
        )
    size, step = window
    if size < 2 or not 1 <= step <= size:
        raise ConfigError(f"window {size}/{step}: need size >= 2 and 1 <= stride <= size")
    return size, step


def task_and_window(
    name: str, window: tuple[int, int] | None = None
) -> tuple[str, tuple[int, int] | None]:
    """``resrank-window`` is ResRank with sliding windows, ``window`` or RankGPT's 20/10
    (``DEFAULT_WINDOW``); other names are tasks, windowed only when given ``window``."""
    if name == "resrank-window":
        return "resrank", window or DEFAULT_WINDOW
    return name, window


def build_ranker(
    name: str,
    *,
    checkpoint: str | None = None,
    model: str | None = None,
    reranker: str | None = None,
    passage_max_length: int | None = None,
    resrank_config: ResRankConfig | None = None,
    dtype: str = "float32",
    window: tuple[int, int] | None = None,
) -> Ranker:
    """A ranker by name. ``checkpoint``: a training run, ranked with its own recipe (prompt
    settings, lengths, instructions); ``passage_max_length`` overrides the run's. Otherwise
    ``model`` is the encoder (dense, e2rank, resrank) or the generator (generative) and
    ``reranker`` the ResRank Reranker-LLM (default: the same source as ``model``), zero-shot
    (ResRank's fusion untrained); a ``model`` directory holding ``resrank.json`` is an
    exported reranker (``resrank_jax.artifact``), ranked with its trained head, recipe and
    dtype. ``dtype`` (``float32``/``bfloat16``) is the params' and
    compute dtype of ``model``/``reranker``. ``window`` ``(size, step)``: sliding windows for
    the rankers of ``WINDOWED`` (``resrank-window`` and ``generative``: 20/10 without it)."""
    if name not in RANKERS:
        raise ConfigError(f"unknown ranker {name!r}; choose from {', '.join(RANKERS)}")
    window = check_window(name, window)
    if name in ("bm25", "identity"):
        return IdentityRanker(name)
    if checkpoint is not None:
        return ranker_from_run(name, checkpoint, passage_max_length, window=window)
    if model is None:
        raise ConfigError(f"ranker {name!r} needs --model SOURCE or --checkpoint DIR")
    from resrank_jax.artifact import is_artifact, load_ranker

    if is_artifact(model):  # an exported reranker (resrank export): its own weights and recipe
        if reranker not in (None, model) or resrank_config is not None:
            raise ConfigError(f"{model} is an exported reranker: it brings its own reranker")
        return load_ranker(model, name, passage_max_length=passage_max_length, window=window)
    backbone, tokenizer = resolve_model(model, dtype)
    if tokenizer is None:
        raise ConfigError(f"{model}: no tokenizer found next to the weights")
    if name == "generative":
        if isinstance(backbone, Bert):
            raise ConfigError(f"ranker {name!r} needs a decoder LM; {model} is a BERT encoder")
        size, step = window or DEFAULT_WINDOW
        return GenerativeRanker(backbone, tokenizer, window=size, step=step)
    task_name, window = task_and_window(name, window)
    task_cls = get_task(task_name)
    rr_backbone, rr_tokenizer = None, tokenizer
    if task_cls.needs_reranker:
        rr_backbone, rr_tokenizer = (
            (backbone, tokenizer) if reranker in (None, model) else resolve_model(reranker, dtype)
        )
    cfg = resrank_config or ResRankConfig(
        phi="rescale"
        if rr_backbone is None or backbone.cfg.hidden_size == rr_backbone.cfg.hidden_size
        else "linear"
    )
    recipe = Recipe(
        passage_max_length=passage_max_length or ZERO_SHOT_PASSAGE_LENGTH,
        prompt_max_length=min(Recipe.prompt_max_length, backbone.cfg.max_position_embeddings),
    )
    ranker_model = task_cls.make_model(Encoder(backbone), rr_backbone, cfg, 0)
    return ModelRanker(task_cls(recipe, tokenizer, rr_tokenizer), ranker_model, window=window)


def run_rankers(run_dir: str, passage_max_length: int | None = None) -> dict[str, ModelRanker]:
    """The rankers of a training run's latest checkpoint, built with the run's task and recipe
    and sharing one model and one embedding cache: ``dense`` (the trained encoder alone) and
    the run's own model (``resrank``, or ``e2rank``)."""
    from resrank_jax.train.models import load_trained

    model, task, _ = load_trained(run_dir)
    if passage_max_length is not None:
        task = task.with_recipe(passage_max_length=passage_max_length)
    cache = EmbeddingCache()
    dense = DenseTask(task.recipe, task.encoder_tokenizer)
    return {
        "dense": ModelRanker(dense, model, cache=cache),
        task.name: ModelRanker(task, model, cache=cache),
    }


def ranker_from_run(
    name: str,
    run_dir: str,
    passage_max_length: int | None = None,
    *,
    window: tuple[int, int] | None = None,
) -> Ranker:
    """One ranker of ``run_rankers``; ``resrank-window`` is a ResRank run's windowed pass
    (``window``, default 20/10), and ``window`` makes any listwise ranker of the run windowed."""
    task_name, window = task_and_window(name, check_window(name, window))
    rankers = run_rankers(run_dir, passage_max_length)
    if task_name not in rankers:
        raise ConfigError(f"a {'/'.join(rankers)} run cannot serve ranker {name!r}")
    ranker = rankers[task_name]
    return ranker if window is None else ModelRanker(ranker.task, ranker.model, window=window)
