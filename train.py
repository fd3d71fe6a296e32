"""Train a ResRank / E2Rank model. Thin wrapper over resrank_jax.train.loop.

    python train.py --config PRESET --output-dir DIR [key=value ...] [--debug]

Rerunning the same command resumes from the last committed checkpoint. Config, data and file
errors print one line and exit 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import sys

from resrank_jax.cli_errors import add_debug_flag, run_cli
from resrank_jax.config import resolve_config
from resrank_jax.train.loop import run_training


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="preset name (configs/presets.py)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. steps=100")
    add_debug_flag(p)
    args = p.parse_args(argv)
    return run_cli(lambda: run(args), debug=args.debug)


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args.config, args.overrides)
    summary = run_training(cfg, args.output_dir, progress=not args.quiet)
    print(
        f"done: {summary['steps']} steps ({summary['origin']}); compiles per stage "
        f"{summary['compiles_per_stage']}; outputs in {args.output_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
