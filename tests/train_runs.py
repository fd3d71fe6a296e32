"""Helpers that run ``train.py`` in subprocesses (kill, SIGTERM, multi-process tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


def metric_lines(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
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
