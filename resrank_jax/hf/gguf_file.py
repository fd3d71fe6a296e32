"""GGUF import (llama.cpp files): config from metadata, dequantised tensors under HF names, and
the tokenizer the file describes.

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` of Llama-architecture
models (interleaved RoPE pairs); ``unpermute_qk`` undoes it so the HF rotate-half RoPE applies.
For Gemma 3 it stores every RMSNorm weight as ``1 + w`` (its graph multiplies by the stored
weight); import subtracts the 1 again, as transformers' GGUF loader does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from resrank_jax.hf.config_map import UnsupportedModelError, config_from_hf
from resrank_jax.hf.tokenizer_class import GGUF_TOKENIZER_CLASSES, exported_class
from resrank_jax.models.config import DecoderConfig

_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# Gemma 3's four norms per layer: ``ffn_norm`` is the MLP's input norm there.
_GEMMA3_LAYER_NAMES = _LAYER_NAMES | {
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_norm.weight": "pre_feedforward_layernorm.weight",
    "post_ffw_norm.weight": "post_feedforward_layernorm.weight",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
# GGUF special-token ids -> the tokenizer attributes they name.
_SPECIAL_TOKEN_ATTRS = {
    "bos": "bos_token",
    "eos": "eos_token",
    "unknown": "unk_token",
    "padding": "pad_token",
}


def hf_name(gguf_name: str, arch: str = "llama") -> str:
    """HF tensor name of a GGUF tensor name of architecture ``arch``; unknown names raise."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    layer_names = _GEMMA3_LAYER_NAMES if arch == "gemma3" else _LAYER_NAMES
    m = re.fullmatch(r"blk\.(\d+)\.(.+)", gguf_name)
    if m and m.group(2) in layer_names:
        return f"model.layers.{m.group(1)}.{layer_names[m.group(2)]}"
    raise KeyError(f"GGUF tensor {gguf_name!r} has no HF counterpart in resrank_jax's key map")


def unpermute_qk(w_out_in: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's ``permute``: rows ``[n_head, H/2, 2]`` -> ``[n_head, 2, H/2]``."""
    rows = w_out_in.shape[0]
    return (
        w_out_in.reshape(n_head, rows // n_head // 2, 2, *w_out_in.shape[1:])
        .swapaxes(1, 2)
        .reshape(w_out_in.shape)
    )


class GGUFFile:
    """A GGUF checkpoint: ``config``, lazy ``tensors`` (HF names, fp32) and tokenizer metadata."""

    def __init__(self, path: str | Path) -> None:
        from resrank_jax.hf.gguf_reader import read_gguf  # imports gguf: only GGUF users pay

        self.path = Path(path)
        self.contents = read_gguf(self.path)
        self.arch = self.meta("general.architecture")
        if self.arch not in _ARCHS:
            raise UnsupportedModelError(
                f"{self.path}: GGUF architecture {self.arch!r} is not supported "
                f"({', '.join(_ARCHS)})"
            )
        self._refuse_rope_scaling()
        self._by_hf = {hf_name(t.name, self.arch): t for t in self.contents.tensors}
        self.config = self._config()

    def _refuse_rope_scaling(self) -> None:
        """llama.cpp stores Llama 3.x RoPE scaling as a ``rope_freqs`` tensor (and Llama-arch
        metadata); resrank_jax reads scaled RoPE from HF configs only."""
        scaling = self.meta(f"{self.arch}.rope.scaling.type")
        has_freqs = any(t.name == "rope_freqs.weight" for t in self.contents.tensors)
        if self.arch != "gemma3" and (scaling not in (None, "none") or has_freqs):
            raise UnsupportedModelError(
                f"{self.path}: GGUF with RoPE scaling ({scaling or 'rope_freqs tensor'}) is not "
                "supported; load the model's HF safetensors checkpoint instead"
            )

    def meta(self, key: str, default: Any = None) -> Any:
        return self.contents.fields.get(key, default)

    def _config(self) -> DecoderConfig:
        a = self.arch
        d, n = self.meta(f"{a}.embedding_length"), self.meta(f"{a}.attention.head_count")
        vocab = self.meta(f"{a}.vocab_size") or len(self.meta("tokenizer.ggml.tokens"))
        if a == "gemma3":
            return self._gemma3_config(int(vocab), int(d), int(n))
        return DecoderConfig(
            family=a,
            vocab_size=int(vocab),
            hidden_size=int(d),
            intermediate_size=int(self.meta(f"{a}.feed_forward_length")),
            num_layers=int(self.meta(f"{a}.block_count")),
            num_heads=int(n),
            num_kv_heads=int(self.meta(f"{a}.attention.head_count_kv", n)),
            head_dim=int(self.meta(f"{a}.attention.key_length", d // n)),
            rope_theta=float(self.meta(f"{a}.rope.freq_base", 10000.0)),
            rms_norm_eps=float(self.meta(f"{a}.attention.layer_norm_rms_epsilon")),
            tie_word_embeddings="lm_head.weight" not in self._by_hf,
            qk_norm=a == "qwen3",
            qkv_bias="model.layers.0.self_attn.q_proj.bias" in self._by_hf,
            max_position_embeddings=int(self.meta(f"{a}.context_length", 32768)),
        )

    def _gemma3_config(self, vocab: int, d: int, n: int) -> DecoderConfig:
        """Gemma 3 from its GGUF keys through the HF config reader (llama.cpp fixes the local
        RoPE base at 10000 and every 6th layer global, as transformers' defaults do)."""
        a = "gemma3"
        scaling = self.meta(f"{a}.rope.scaling.type")
        hf = {
            "model_type": "gemma3_text",
            "vocab_size": vocab,
            "hidden_size": d,
            "intermediate_size": int(self.meta(f"{a}.feed_forward_length")),
            "num_hidden_layers": int(self.meta(f"{a}.block_count")),
            "num_attention_heads": n,
            "num_key_value_heads": int(self.meta(f"{a}.attention.head_count_kv", n)),
            "head_dim": int(self.meta(f"{a}.attention.key_length", d // n)),
            "query_pre_attn_scalar": int(self.meta(f"{a}.attention.key_length", d // n)),
            "rope_theta": float(self.meta(f"{a}.rope.freq_base", 1e6)),
            "rope_scaling": None
            if scaling in (None, "none")
            else {"rope_type": scaling, "factor": float(self.meta(f"{a}.rope.scaling.factor"))},
            "rms_norm_eps": float(self.meta(f"{a}.attention.layer_norm_rms_epsilon")),
            "sliding_window": int(self.meta(f"{a}.attention.sliding_window")),
            "max_position_embeddings": int(self.meta(f"{a}.context_length", 32768)),
        }
        return config_from_hf(hf)

    @property
    def tensors(self) -> Mapping[str, np.ndarray]:
        return _DequantisedTensors(self)

    def tensor(self, name: str) -> np.ndarray:
        """The dequantised fp32 tensor with HF name ``name``, in HF layout ``[out, in]``."""
        t = self._by_hf[name]
        from gguf.quants import dequantize

        array = dequantize(t.data, t.tensor_type).astype(np.float32)
        array = array.reshape(tuple(int(s) for s in reversed(t.shape)))
        if self.arch == "llama" and name.endswith("self_attn.q_proj.weight"):
            array = unpermute_qk(array, self.config.num_heads)
        elif self.arch == "llama" and name.endswith("self_attn.k_proj.weight"):
            array = unpermute_qk(array, self.config.num_kv_heads)
        elif self.arch == "gemma3" and name.endswith("norm.weight"):
            array = array - 1.0
        return array

    def special_token_ids(self) -> dict[str, int | None]:
        return {
            name: self.meta(f"tokenizer.ggml.{name}_token_id")
            for name in ("bos", "eos", "padding", "unknown")
        }

    def load_tokenizer(self):
        """The HF tokenizer the file describes, built as ``AutoTokenizer.from_pretrained(dir,
        gguf_file=...)`` builds it (transformers' GGUF tokenizer builders, and the tokenizer
        class transformers maps the architecture to) from the metadata read here, because
        transformers' own GGUF reader imports torch, which resrank_jax does not depend on."""
        from transformers.integrations.gguf import convert_gguf_tokenizer

        vocab, settings = self._tokenizer_metadata()
        backend, extra = convert_gguf_tokenizer(self.arch, vocab)
        cls = exported_class(GGUF_TOKENIZER_CLASSES[self.arch])
        if cls is None:  # a transformers release without the class our table names
            raise UnsupportedModelError(
                f"{self.path}: this transformers has no {GGUF_TOKENIZER_CLASSES[self.arch]}"
            )
        directory = str(self.path.parent)  # the name AutoTokenizer gives it
        return cls(tokenizer_object=backend, name_or_path=directory, **settings, **extra)

    def _tokenizer_metadata(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(vocabulary fields, tokenizer settings)`` under transformers' GGUF field names;
        the settings hold BOS/EOS/unknown/pad and the add-BOS/EOS flags exactly as the
        metadata says (a flag it lacks is off)."""
        from transformers.integrations.gguf import GGUF_TOKENIZER_MAPPING

        fields = {
            group: {
                name: self.meta(f"tokenizer.{key}")
                for key, name in renames.items()
                if f"tokenizer.{key}" in self.contents.fields
            }
            for group, renames in GGUF_TOKENIZER_MAPPING.items()
        }
        vocab, settings = fields["tokenizer"], fields["tokenizer_config"]
        for key, token_id in self.special_token_ids().items():
            if token_id is not None:
                settings[_SPECIAL_TOKEN_ATTRS[key]] = vocab["tokens"][int(token_id)]
        for flag in ("add_bos_token", "add_eos_token"):
            settings[flag] = bool(self.meta(f"tokenizer.ggml.{flag}", False))
        return vocab, settings


class _DequantisedTensors(Mapping[str, np.ndarray]):
    def __init__(self, file: GGUFFile) -> None:
        self._file = file

    def __getitem__(self, key: str) -> np.ndarray:
        return self._file.tensor(key)

    def __iter__(self):
        return iter(self._file._by_hf)

    def __len__(self) -> int:
        return len(self._file._by_hf)
