"""Pooling conventions: per model, which token is pooled, on which side texts are padded,
how hidden states are pooled and how queries are written. Decided once, here, from the loaded
model directory (``config.json`` family, sentence-transformers files) and the tokenizer.

- **Qwen3 / Qwen3-Embedding / Qwen2 family** (config family ``qwen3``/``qwen2``, or, when no
  family is known, a Qwen tokenizer: ``Qwen2Tokenizer`` or ``<|endoftext|>``,
  ``<|im_start|>``, ``<|im_end|>`` at Qwen's ids 151643-151645): pooling token
  ``<|endoftext|>`` (not the chat EOS ``<|im_end|>``), left padding, last-token pooling, query
  text ``Instruct: {task}\\nQuery:{query}`` (as Qwen3-Embedding and E2Rank).
- **BERT** (sentence-transformers): ``[CLS] ... [SEP]`` from the tokenizer, right padding,
  CLS or mean pooling as ``modules.json`` -> ``1_Pooling/config.json`` says (mean when the
  files are absent); other modes (max, mean_sqrt_len, weightedmean, lasttoken, several at
  once) raise ``UnsupportedPoolingError``. Queries are the raw text.
- **Other decoders** (Llama / SmolLM2): the tokenizer's EOS is the pooling token, left
  padding, last-token pooling, the same instruction query text. (The vocabulary alone cannot
  tell SmolLM2 from Qwen: SmolLM2 also has ``<|endoftext|>``/``<|im_start|>``/``<|im_end|>``,
  at ids 0-2, and pools on its EOS ``<|im_end|>``.)

Decoder directories with a sentence-transformers pooling config must say ``lasttoken``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

Pooling = Literal["last", "mean", "cls"]
PaddingSide = Literal["left", "right"]

INSTRUCT_QUERY = "Instruct: {task}\nQuery:{query}"
RAW_QUERY = "{query}"

QWEN_ENDOFTEXT = "<|endoftext|>"
QWEN_SPECIAL_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}
QWEN_FAMILIES = ("qwen3", "qwen2")
BERT_FAMILIES = ("bert",)

# sentence-transformers 1_Pooling/config.json keys -> resrank_jax pooling (None: unsupported)
ST_POOLING_MODES: dict[str, Pooling | None] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_lasttoken": "last",
    "pooling_mode_max_tokens": None,
    "pooling_mode_mean_sqrt_len_tokens": None,
    "pooling_mode_weightedmean_tokens": None,
}
ST_POOLING_NAMES = {  # the string form (``"pooling_mode": "mean"``)
    "cls": "pooling_mode_cls_token",
    "mean": "pooling_mode_mean_tokens",
    "lasttoken": "pooling_mode_lasttoken",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
}


class UnsupportedPoolingError(ValueError):
    """The model's pooling (sentence-transformers config) is one resrank_jax cannot reproduce."""


@dataclasses.dataclass(frozen=True)
class PoolingConvention:
    """How one model turns a text into one vector.

    Attributes:
        kind: ``qwen`` / ``bert`` / ``decoder`` (which convention applied).
        pooling: ``last``, ``mean`` or ``cls``.
        padding_side: ``left`` for last-token pooling, ``right`` for BERT.
        pooling_token: the token string that ends every text for ``last`` pooling (appended by
            ``TextTokenizer`` unless the tokenizer's post-processor already appends exactly
            it); ``None`` means the tokenizer's EOS (other decoders) or, for BERT, its
            ``[SEP]``.
        query_format: ``str.format`` template with ``{query}`` (and ``{task}``).
        source: where the decision came from, for error messages and logs.
    """

    kind: Literal["qwen", "bert", "decoder"]
    pooling: Pooling
    padding_side: PaddingSide
    pooling_token: str | None
    query_format: str
    source: str

    def query_text(self, query: str, task: str) -> str:
        """The query as this model expects it (``Instruct: {task}\\nQuery:{query}`` for
        decoders; ``task`` comes from ``resrank_jax.instructions``)."""
        return self.query_format.format(query=query, task=task)


def is_qwen_tokenizer(hf_tokenizer) -> bool:
    """A Qwen2/Qwen2.5/Qwen3 tokenizer: its class, or Qwen's three special tokens at their ids
    (the names alone are not enough: SmolLM2 has them too, at ids 0-2)."""
    if type(hf_tokenizer).__name__.startswith("Qwen2Tokenizer"):
        return True
    vocab = hf_tokenizer.get_vocab()
    return all(vocab.get(t) == i for t, i in QWEN_SPECIAL_IDS.items())


def sentence_transformers_pooling(model_dir: str | Path | None) -> tuple[Pooling | None, str]:
    """The pooling a sentence-transformers model directory declares, and the file it is from.

    Reads ``modules.json`` (its ``sentence_transformers.models.Pooling`` module's path, usually
    ``1_Pooling``) and that module's ``config.json``; without ``modules.json`` a
    ``1_Pooling/config.json`` is still read. Returns ``(None, reason)`` when there is nothing
    to read.

    Raises:
        UnsupportedPoolingError: max / mean_sqrt_len / weightedmean pooling, several modes
            combined, or none enabled.
    """
    if model_dir is None:
        return None, "no model directory"
    root = Path(model_dir)
    if root.is_file():
        return None, "not a directory"
    pooling_dir = root / "1_Pooling"
    modules_file = root / "modules.json"
    if modules_file.exists():
        modules = json.loads(modules_file.read_text())
        paths = [m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")]
        if not paths:
            return None, f"{modules_file} has no Pooling module"
        pooling_dir = root / paths[0]
    config_file = pooling_dir / "config.json"
    if not config_file.exists():
        return None, f"no {config_file}"
    config: dict[str, Any] = json.loads(config_file.read_text())
    enabled = [key for key in ST_POOLING_MODES if config.get(key)]
    mode_name = config.get("pooling_mode")
    if isinstance(mode_name, str) and not enabled:
        enabled = [ST_POOLING_NAMES.get(mode_name, f"pooling_mode {mode_name!r}")]
    if len(enabled) != 1 or ST_POOLING_MODES.get(enabled[0]) is None:
        raise UnsupportedPoolingError(
            f"{config_file}: pooling {enabled or 'none'} is not supported; resrank_jax pools "
            "one of pooling_mode_cls_token, pooling_mode_mean_tokens (BERT) or "
            "pooling_mode_lasttoken (decoders)"
        )
    return ST_POOLING_MODES[enabled[0]], str(config_file)


def pooling_convention(
    hf_tokenizer=None,
    *,
    family: str | None = None,
    model_dir: str | Path | None = None,
    pooling: Pooling | None = None,
) -> PoolingConvention:
    """Decides the convention of one model (see the module docstring).

    Args:
        hf_tokenizer: the ``transformers`` tokenizer (used when ``family`` is unknown).
        family: the backbone family from ``config.json``/GGUF (``qwen3``, ``qwen2``,
            ``llama``, ``bert``); ``None`` guesses from ``pooling`` and the tokenizer
            (``mean``/``cls`` -> BERT; a Qwen tokenizer -> Qwen; a tokenizer with ``[CLS]`` and
            no EOS -> BERT; else another decoder).
        model_dir: the model directory, read for sentence-transformers pooling files.
        pooling: an explicit pooling (``mean``/``cls`` for BERT, ``last`` for decoders); the
            sentence-transformers files are then not read.

    Raises:
        UnsupportedPoolingError: unsupported sentence-transformers pooling, last-token pooling
            on BERT, or a decoder asked (explicitly or by its files) to pool other than last.
    """
    origin = f"family {family}"
    if family is None:
        tok = hf_tokenizer
        if pooling in ("mean", "cls"):
            family, origin = "bert", f"pooling={pooling!r}"
        elif tok is not None and is_qwen_tokenizer(tok):
            family, origin = "qwen3", "Qwen tokenizer vocabulary"
        elif (
            pooling is None
            and tok is not None
            and tok.eos_token_id is None
            and tok.cls_token_id is not None
        ):
            family, origin = "bert", "[CLS] tokenizer without EOS"
        else:
            origin = "decoder tokenizer"
    declared, st_source = (
        (None, "explicit pooling")
        if pooling is not None
        else sentence_transformers_pooling(model_dir)
    )
    if family in BERT_FAMILIES:
        if declared == "last" or pooling == "last":
            raise UnsupportedPoolingError(
                f"{st_source if declared == 'last' else 'pooling=last'}: last-token pooling on a "
                "BERT model is not supported (BERT pools cls or mean)"
            )
        if pooling is not None:
            chosen, source = pooling, f"{origin}, explicit pooling={pooling!r}"
        elif declared is not None:
            chosen, source = declared, f"{origin}, {st_source}"
        else:
            chosen, source = "mean", f"{origin}, default mean ({st_source})"
        return PoolingConvention("bert", chosen, "right", None, RAW_QUERY, source)
    if pooling not in (None, "last") or declared not in (None, "last"):
        where = f"pooling={pooling!r}" if pooling not in (None, "last") else st_source
        raise UnsupportedPoolingError(
            f"{where}: {pooling or declared} pooling on a decoder ({origin}) is not supported; "
            "decoders pool the last token"
        )
    if family in QWEN_FAMILIES:
        return PoolingConvention("qwen", "last", "left", QWEN_ENDOFTEXT, INSTRUCT_QUERY, origin)
    return PoolingConvention("decoder", "last", "left", None, INSTRUCT_QUERY, f"{origin}: EOS")
