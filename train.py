"""``resrank train`` (resrank_jax/cli/train.py) as a script: ``python train.py --config PRESET
--output-dir DIR [key=value ...] [--quiet] [--debug]``."""

import sys

from resrank_jax.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
