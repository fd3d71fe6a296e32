"""The registry of ranking models by name: ``TASKS["resrank"]``, ``TASKS["e2rank"]``,
``TASKS["dense"]``. Training configs (``model.mode``), ``build_ranker`` and ``eval.py`` look
models up here; nothing else branches on a model's name."""

from __future__ import annotations

from resrank_jax.errors import ConfigError
from resrank_jax.tasks.base import ListRows, Recipe, Task
from resrank_jax.tasks.dense import DenseTask
from resrank_jax.tasks.e2rank import E2RankTask
from resrank_jax.tasks.resrank import ResRankTask

TASKS: dict[str, type[Task]] = {t.name: t for t in (ResRankTask, E2RankTask, DenseTask)}


def get_task(name: str) -> type[Task]:
    """The task class registered as ``name``."""
    if name not in TASKS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


__all__ = ["TASKS", "ListRows", "Recipe", "Task", "get_task"]
