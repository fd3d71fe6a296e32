"""``metrics.jsonl``: one JSON record per training step, in step order, each step once."""

from __future__ import annotations

import json

from etils import epath

from resrank_jax.paths import is_url


class MetricsLog:
    """Writes the step records of the lead process.

    Opening drops the lines after ``start_step`` (steps logged before a kill or preemption
    that the resumed run trains again). Local files get each line as it comes; object stores
    (``gs://``) cannot append, so there the lines are kept and the whole file is rewritten at
    every ``flush`` (each checkpoint save and the end of training).
    """

    def __init__(self, path: epath.Path, start_step: int, *, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        self.local = not is_url(path)
        self.lines: list[str] = []
        if enabled:
            old = path.read_text().splitlines() if path.exists() else []
            self.lines = [ln for ln in old if json.loads(ln)["step"] <= start_step]
            self._rewrite()

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        line = json.dumps(record)
        self.lines.append(line)
        if self.local:
            with self.path.open("a") as f:
                f.write(line + "\n")

    def flush(self) -> None:
        """Writes the lines so far where they are not written as they come (object stores)."""
        if self.enabled and not self.local:
            self._rewrite()

    def _rewrite(self) -> None:
        self.path.write_text("".join(f"{ln}\n" for ln in self.lines))
