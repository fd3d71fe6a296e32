"""``python -m resrank_jax.cli``: the ``resrank`` command without its console script."""

import sys

from resrank_jax.cli import main

sys.exit(main())
