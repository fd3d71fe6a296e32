"""The transformers tokenizer class of a checkpoint, found without ``AutoTokenizer``.

``transformers.models.auto`` imports ``configuration_utils``, which imports torch whenever torch
is installed (Colab runtimes and this project's test environment have it): about 180 MB of
resident memory and seconds of import for a library that never calls it. The classes
themselves (``BertTokenizer``, ``GemmaTokenizer``, ...) import no torch, so a checkpoint that
names its class in ``tokenizer_config.json``, and a GGUF file whose architecture is one of ours,
load through that class; anything else goes through ``AutoTokenizer`` as before.
"""

from __future__ import annotations

import json
from pathlib import Path

# GGUF architecture -> the class ``TOKENIZER_MAPPING_NAMES`` gives it (transformers 5.x);
# ``llama`` has none there, so AutoTokenizer builds the generic ``TokenizersBackend``.
# ``tests/test_tokenizer_class.py`` checks this table against transformers' own.
GGUF_TOKENIZER_CLASSES = {
    "llama": "TokenizersBackend",
    "qwen2": "Qwen2Tokenizer",
    "qwen3": "Qwen2Tokenizer",
    "gemma3": "GemmaTokenizer",
}


def exported_class(name: str | None):
    """The tokenizer class transformers exports as ``name`` (``None`` when it exports none)."""
    import transformers

    if not name:
        return None
    try:
        return getattr(transformers, name)
    except (AttributeError, ImportError):
        return None


def load_hf_tokenizer(path: Path):
    """``AutoTokenizer.from_pretrained(path)`` for a local checkpoint directory, through the
    class its ``tokenizer_config.json`` names when transformers exports it (no torch import)."""
    config = path / "tokenizer_config.json"
    name = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    cls = exported_class(name)
    if cls is None:
        from transformers import AutoTokenizer

        cls = AutoTokenizer
    return cls.from_pretrained(str(path), trust_remote_code=False)
