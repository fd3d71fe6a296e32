"""A journal of finished evaluations, so a killed demo or experiment resumes its evaluation
where it stopped instead of ranking every set again (the ``--full`` demo ranks for hours).

The file is JSON lines: the first line is the fingerprint of what is evaluated (sizes, the
trained runs' configs and steps); every other line is one finished entry ``{"key", "rows",
"points"}``, appended and flushed as soon as it is done. A file whose fingerprint differs
(other sizes, runs trained further) is started over. A line cut short by a kill is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class EvalJournal:
    """Finished entries by key, loaded from and appended to ``path``."""

    def __init__(self, path: str | Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from JSON
        self.entries: dict[str, dict[str, Any]] = {}
        text = self.path.read_text() if self.path.exists() else ""
        lines = text.splitlines()
        if lines and _parse(lines[0]) == {"fingerprint": self.fingerprint}:
            if not text.endswith("\n"):  # a line cut short: end it
                with self.path.open("a") as f:
                    f.write("\n")
            for line in lines[1:]:
                entry = _parse(line)
                if entry is not None and "key" in entry:
                    self.entries[entry["key"]] = entry
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"fingerprint": self.fingerprint}) + "\n")

    def get(self, key: str) -> dict[str, Any] | None:
        """The finished entry ``{"rows": {...}, "points": [...]}`` of ``key``, or None."""
        return self.entries.get(key)

    def put(self, key: str, rows: dict[str, dict], points: list[dict]) -> None:
        """Records a finished entry (written to disk before returning)."""
        entry = {"key": key, "rows": rows, "points": points}
        with self.path.open("a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
        self.entries[key] = json.loads(json.dumps(entry))


def _parse(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
