"""Export a backbone to an HF directory (``config.json`` + ``model.safetensors``) that
transformers loads, through the same key map as import."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from resrank_jax.hf.config_map import config_to_hf
from resrank_jax.hf.key_map import rules_for
from resrank_jax.models.build import Backbone, flat_params
from resrank_jax.models.config import BertConfig


def export_hf(model: Backbone, out_dir: str | Path, *, tokenizer=None) -> Path:
    """Writes ``model`` (and the HF tokenizer of ``tokenizer`` if given) to ``out_dir``.

    Decoders are written as ``*ForCausalLM`` files (``model.`` prefix), BERT as ``BertModel``.
    """
    cfg = model.cfg
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prefix = "" if isinstance(cfg, BertConfig) else "model."
    params = flat_params(model)
    rules = rules_for(cfg, prefix)
    if {r.path for r in rules} != set(params):
        raise KeyError(
            f"key map and model disagree: {sorted(set(params) ^ {r.path for r in rules})}"
        )
    tensors = {}
    for rule in rules:
        array = np.asarray(params[rule.path])
        if rule.layer is not None:  # one layer of a scanned (stacked) param
            array = array[rule.layer]
        tensors[rule.hf] = np.ascontiguousarray(array.T if rule.transpose else array)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2) + "\n")
    if tokenizer is not None:
        getattr(tokenizer, "hf", tokenizer).save_pretrained(str(out))
    return out
