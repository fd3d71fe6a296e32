"""Train a ResRank / E2Rank model from a preset; rerunning the same command resumes.

    resrank train --config PRESET --output-dir DIR [key=value ...] [--quiet] [--debug]

``python train.py ...`` in a checkout is the same command. Presets are in
``resrank_jax/configs/presets.py`` (the repository's ``configs/presets.py``); ``key=value``
overrides as ``resrank_jax.config`` describes. The default data paths (``data/scifact/...``)
read the packaged SciFact copy from any directory (``resrank_jax.data.bundled``). Config, data
and file errors print one line and exit 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="preset name (resrank_jax/configs/presets.py)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100")


def run(args: argparse.Namespace) -> int:
    from resrank_jax.config import resolve_config
    from resrank_jax.train.loop import run_training

    cfg = resolve_config(args.config, args.overrides)
    summary = run_training(cfg, args.output_dir, progress=not args.quiet)
    print(
        f"done: {summary['steps']} steps ({summary['origin']}); compiles per stage "
        f"{summary['compiles_per_stage']}; outputs in {args.output_dir}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``resrank train`` without the prefix (``train.py``)."""
    from resrank_jax.cli import run_subcommand

    return run_subcommand("train", argv)
