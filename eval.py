"""``resrank eval`` (resrank_jax/cli/eval.py) as a script: ``python eval.py --candidates FILE
--qrels FILE --ranker NAME [...]``; ``main`` and ``parse_args`` for ``import eval``."""

import sys

from resrank_jax.cli.eval import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
