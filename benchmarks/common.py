"""Shared helpers for benchmarks: timing by median of repeats and JSON results."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import flax
import jax

RESULTS = Path(__file__).resolve().parent / "results"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def device_name() -> str:
    d = jax.devices()[0]
    cpu = platform.processor() or platform.machine()
    return f"{d.platform}:{getattr(d, 'device_kind', '')} ({cpu})"


def write_result(name: str, payload: dict) -> Path:
    """Writes ``benchmarks/results/<name>.json`` with the jax/flax versions that produced it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    versions = {"jax": jax.__version__, "flax": flax.__version__}
    path.write_text(json.dumps({**payload, "versions": versions}, indent=2) + "\n")
    return path
