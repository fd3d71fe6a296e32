"""``load_backbone``: an HF directory, an HF hub id or a GGUF file -> sharded NNX backbone +
checked tokenizer. Weights come from safetensors or GGUF only; nothing is unpickled and no
checkpoint code is run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from jax.sharding import Mesh

from resrank_jax.errors import ConfigError
from resrank_jax.hf.config_map import config_from_hf
from resrank_jax.hf.gguf_file import GGUFFile
from resrank_jax.hf.key_map import KeyRule, detect_prefix, rules_for
from resrank_jax.hf.tensors import SafetensorsDir, check_keys
from resrank_jax.hf.tokenizer_class import load_hf_tokenizer
from resrank_jax.models.build import Backbone, backbone_from_arrays
from resrank_jax.models.config import BackboneConfig, BertConfig, with_scan_layers
from resrank_jax.pooling_conventions import pooling_convention
from resrank_jax.tokenizer import Pooling, TextTokenizer

HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*"]


def resolve_source(source: str | Path, revision: str | None = None) -> Path:
    """A local directory or ``.gguf`` file for ``source``; hub ids are downloaded (safetensors,
    configs and tokenizer files only) through ``huggingface_hub``, which honours
    ``HF_HUB_OFFLINE`` and its local cache."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/")) and not text.endswith(".gguf"):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(text, revision=revision, allow_patterns=HUB_PATTERNS))
        except Exception as err:  # offline, unknown repo, auth...: say which source failed
            raise FileNotFoundError(
                f"{text!r} is not a local path and could not be fetched from the HF hub "
                f"({type(err).__name__}: {err})"
            ) from err
    raise FileNotFoundError(f"{text!r}: no such file or directory, and not an HF hub id")


def _state_arrays(cfg: BackboneConfig, tensors: Mapping[str, np.ndarray], source: str) -> Any:
    """``get_array(path)`` for ``backbone_from_arrays``, after the strict key check."""
    prefix = detect_prefix(cfg, set(tensors))
    rules = rules_for(cfg, prefix)
    tied_head = None
    if not isinstance(cfg, BertConfig) and cfg.tie_word_embeddings and "lm_head.weight" in tensors:
        tied_head = "lm_head.weight"
        if not np.array_equal(tensors["lm_head.weight"], tensors[f"{prefix}embed_tokens.weight"]):
            raise ValueError(
                f"{source}: config says tie_word_embeddings but lm_head.weight differs from "
                "embed_tokens.weight"
            )
    check_keys(rules, tensors.keys(), source=source, tied_head=tied_head)
    by_path: dict[tuple, list[KeyRule]] = {}
    for rule in rules:
        by_path.setdefault(rule.path, []).append(rule)

    def hf_array(rule: KeyRule) -> np.ndarray:
        array = tensors[rule.hf]
        return array.T if rule.transpose else array

    def get_array(path: tuple) -> np.ndarray:
        """The param at ``path``; a scanned layer param stacks its layers' tensors ``[L, ...]``."""
        path_rules = by_path[path]
        if path_rules[0].layer is None:
            return hf_array(path_rules[0])
        return np.stack([hf_array(r) for r in sorted(path_rules, key=lambda r: r.layer)])

    return get_array


def _read_source(
    path: Path, overrides: dict[str, Any]
) -> tuple[BackboneConfig, Mapping[str, np.ndarray], Any]:
    """``(config, lazy tensors by HF name, HF tokenizer or None)`` of a ``.gguf`` file or an
    HF directory; no weight is read yet."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ConfigError(f"{path}: only .gguf files or HF directories can be loaded")
        gguf = GGUFFile(path)
        return gguf.config.replace(**overrides), gguf.tensors, gguf.load_tokenizer()
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json")
    tensors = SafetensorsDir(path)
    cfg = config_from_hf(json.loads(config_file.read_text()), **overrides)
    is_bert = isinstance(cfg, BertConfig)
    if not is_bert and "lm_head.weight" not in tensors and not cfg.tie_word_embeddings:
        cfg = cfg.replace(has_lm_head=False)  # embedding checkpoint (e.g. Qwen3-Embedding)
    if is_bert and not any(k.endswith("pooler.dense.weight") for k in tensors):
        cfg = cfg.replace(add_pooler=False)
    hf_tok = None
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        hf_tok = load_hf_tokenizer(path)
    return cfg, tensors, hf_tok


def _checked_tokenizer(hf_tok, cfg: BackboneConfig, path: Path, pooling, pad_token):
    """``(TextTokenizer or None, pooling convention)`` of a source (``load_backbone``)."""
    convention = pooling_convention(
        hf_tok, family=cfg.family, model_dir=None if path.is_file() else path, pooling=pooling
    )
    if hf_tok is None:
        return None, convention
    return TextTokenizer(hf_tok, pad_token=pad_token, convention=convention), convention


def load_tokenizer(
    source: str | Path,
    *,
    pooling: Pooling | None = None,
    pad_token: str | None = None,
    revision: str | None = None,
) -> TextTokenizer | None:
    """The checked tokenizer ``load_backbone(source)`` would return, without reading the
    weights (``None`` when the source ships none)."""
    path = resolve_source(source, revision)
    cfg, _, hf_tok = _read_source(path, {})
    return _checked_tokenizer(hf_tok, cfg, path, pooling, pad_token)[0]


def load_backbone(
    source: str | Path,
    *,
    mesh: Mesh | None = None,
    dtype: str = "float32",
    param_dtype: str = "float32",
    remat: str | bool = "none",
    scan_layers: bool = False,
    attention_impl: str = "xla",
    pooling: Pooling | None = None,
    pad_token: str | None = None,
    revision: str | None = None,
) -> tuple[Backbone, TextTokenizer | None]:
    """Loads a backbone and its tokenizer.

    Args:
        source: local HF directory (``config.json`` + safetensors, sharded or not), HF hub id,
            or ``.gguf`` file.
        mesh: the mesh to place params on (default: one device); shardings follow
            ``resrank_jax.sharding.LOGICAL_AXIS_RULES``.
        dtype / param_dtype: compute and parameter dtypes.
        remat: rematerialisation of each layer (``models.config.REMAT_CHOICES``; the legacy
            ``True`` / ``False`` mean ``full`` / ``none``).
        scan_layers: decoders only: stack the layers' params (leading layer axis) and run
            them under ``jax.lax.scan``; BERT ignores it.
        pooling: overrides the pooling of the model's convention (default: decided by
            ``resrank_jax.pooling_conventions.pooling_convention`` from the family and the
            directory: Qwen pools ``<|endoftext|>``, BERT what its sentence-transformers
            ``1_Pooling/config.json`` says, else mean; other decoders their EOS).
        pad_token: pad token to use when the tokenizer has none.

    Returns:
        ``(model, tokenizer)``; the tokenizer is ``None`` when the source ships none. The
        convention is ``tokenizer.convention`` and ``model.pooling_convention`` (which
        ``Encoder(model)`` pools by).

    Raises:
        CheckpointKeyError: missing or unexpected tensors, all named.
        UnsupportedModelError: an architecture resrank_jax does not implement.
        TokenizerCheckError: EOS/pad/pooling-token problems.
        UnsupportedPoolingError: a sentence-transformers pooling resrank_jax cannot reproduce.
    """
    path = resolve_source(source, revision)
    overrides = dict(
        dtype=dtype, param_dtype=param_dtype, remat=remat, attention_impl=attention_impl
    )
    cfg, tensors, hf_tok = _read_source(path, overrides)
    cfg = with_scan_layers(cfg, scan_layers)
    # checked before the weights load: a wrong tokenizer fails fast
    tokenizer, convention = _checked_tokenizer(hf_tok, cfg, path, pooling, pad_token)
    model = backbone_from_arrays(cfg, _state_arrays(cfg, tensors, str(path)), mesh=mesh)
    model.pooling_convention = convention  # read by Encoder(model)
    return model, tokenizer
