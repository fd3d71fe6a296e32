"""SIGTERM on any host stops every host at the same step.

A pod's scheduler may preempt one host; each host only sees its own signal. While training,
``Preemption`` records SIGTERM locally, and ``requested()`` (called by every process after
every step) all-gathers the flags, so all processes agree on the step to save at and exit
143 together; the collective save cannot hang on a host that did not stop. The previous
SIGTERM handler is restored when training returns or raises.
"""

from __future__ import annotations

import signal

import jax
import numpy as np
from jax.experimental import multihost_utils


class Preemption:
    """Context manager: SIGTERM sets a flag instead of killing the process."""

    def __init__(self) -> None:
        self.local = False
        self._previous = None

    def __enter__(self) -> Preemption:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, *_) -> None:
        self.local = True

    def requested(self) -> bool:
        """Whether any process got SIGTERM; a collective: every process calls it each step."""
        if jax.process_count() == 1:
            return self.local
        flags = multihost_utils.process_allgather(np.int32(self.local))
        return bool(np.asarray(flags).any())
