"""The data shipped with resrank_jax, and how ``data/...`` paths find it from any directory.

The package carries TREC DL19 (BM25 top-100, evaluation only) and BEIR SciFact (train and
test) in ``resrank_jax/data/files/`` (see its README: sources, counts, terms); the
repository's top-level ``data/`` links to that folder and the wheel ships it. ``data_dir()``
is that copy, or the folder ``$RESRANK_DATA`` names (same layout: ``scifact/``,
``trec-dl19/``).

A data path written ``data/<rest>`` (the training defaults ``data/scifact/...``, ``resrank
eval --candidates data/trec-dl19/candidates.jsonl``) means the file in the current directory
when it is there, else ``data_dir() / <rest>``: so the same config trains in a checkout, in
any other directory and from an installed wheel. Other paths (absolute, URLs, relative paths
not under ``data/``) are read as written.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path, PurePosixPath

DATA_ENV = "RESRANK_DATA"
PREFIX = "data"


def packaged_data_dir() -> Path:
    """The copy inside the package (``resrank_jax/data/files``)."""
    return Path(__file__).resolve().parent / "files"


def data_dir() -> Path:
    """``$RESRANK_DATA`` when set, else the packaged copy."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser().absolute() if env else packaged_data_dir()


def _under_prefix(name: str) -> str | None:
    """``rest`` of a relative ``data/rest`` path, else None."""
    parts = PurePosixPath(name.replace(os.sep, "/")).parts
    if len(parts) >= 2 and parts[0] == PREFIX:
        return "/".join(parts[1:])
    return None


def resolve_data_path(name: str | os.PathLike) -> str:
    """The file a data path names (see the module docstring): ``name`` itself unless it is a
    relative ``data/<rest>`` path missing from the current directory, then
    ``data_dir()/<rest>``. Empty stays empty.

    Raises:
        FileNotFoundError: a ``data/<rest>`` path found in neither place (both named).
    """
    name = os.fspath(name)
    rest = _under_prefix(name) if name else None
    if rest is None or Path(name).exists():
        return name
    bundled = data_dir() / rest
    if bundled.exists():
        return str(bundled)
    raise FileNotFoundError(
        errno.ENOENT,
        f"No such file or directory (nor in the data directory: {bundled})",
        str(Path(name).absolute()),
    )


def resolve_flag(path: str | None) -> str | None:
    """A file flag of a command as read: ``data/...`` through ``resolve_data_path``; an
    unset flag and ``irds:`` ids as given."""
    if not path or path.startswith("irds:"):
        return path
    return resolve_data_path(path)
