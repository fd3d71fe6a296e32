"""The one path type for everything training, evaluation and export read or write.

``as_path`` turns a string into an ``etils.epath.Path`` (what Orbax uses): a local path is made
absolute, a URL (``gs://bucket/run``) stays a URL (``pathlib.Path`` would make it
``/cwd/gs:/bucket/run``). epath serves ``gs://`` through fsspec's gcsfs (the ``gcs`` extra),
or through ``tf.io.gfile`` when TensorFlow is installed and ``EPATH_USE_TF`` is not ``false``.

Object stores write whole objects: there is no append (gcsfs silently turns mode ``"a"`` into
``"w"``, keeping only what that handle wrote) and no in-place update: a growing file
(``metrics.jsonl``) must be kept in memory and rewritten whole, and writers that only know local
files write into ``staged`` and are uploaded from there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from etils import epath

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]+://")


def is_url(p: str | os.PathLike) -> bool:
    """Whether ``p`` is a URL such as ``gs://bucket/x`` (not a local path)."""
    return bool(_URL.match(os.fspath(p)))


def as_path(p: str | os.PathLike) -> epath.Path:
    """``p`` as an ``epath.Path``: URLs kept as they are, local paths made absolute."""
    if is_url(p):
        return epath.Path(os.fspath(p))
    return epath.Path(Path(p).absolute())


def copy_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copies the files under ``src`` to ``dst`` (either may be a URL), overwriting."""
    src, dst = as_path(src), as_path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for child in src.iterdir():  # (epath's walk yields URL roots without their scheme)
        if child.is_dir():
            copy_tree(child, dst / child.name)
        else:
            child.copy(dst / child.name, overwrite=True)


@contextlib.contextmanager
def staged(dst: str | os.PathLike) -> Iterator[Path]:
    """A local directory for writers that only know local files (safetensors, HF
    ``save_pretrained``): ``dst`` itself when local, else a temporary directory whose files
    are uploaded to ``dst`` on a clean exit."""
    if not is_url(dst):
        local = Path(dst).absolute()
        local.mkdir(parents=True, exist_ok=True)
        yield local
        return
    tmp = Path(tempfile.mkdtemp(prefix="resrank-stage-"))
    try:
        yield tmp
        copy_tree(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
