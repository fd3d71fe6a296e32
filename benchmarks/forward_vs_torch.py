"""Jitted Flax forward vs HF PyTorch forward, same config, weights and inputs, on this CPU.

Writes ``benchmarks/results/forward_vs_torch.json`` with median seconds per forward and the
ratio ``torch_s / jax_s`` (> 1 means resrank_jax is faster), measured side by side.

    python benchmarks/forward_vs_torch.py [--repeats 5] [--batch 4] [--length 256]
        [--dtype float32|bfloat16] [--attention-impl xla|reference]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, median_seconds, write_result
from resrank_jax import load_backbone
from resrank_jax.hf.packaged import packaged_weights


def smollm2_shaped(out: Path):
    """A random LlamaForCausalLM with SmolLM2-135M's config, saved as safetensors."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
    )
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out, safe_serialization=True)
    return model.model, cfg.vocab_size


def minilm():
    from transformers import AutoModel

    path = packaged_weights("all-minilm-l6-v2")
    return path, AutoModel.from_pretrained(str(path)).eval(), 30522


def runners(jax_model, torch_model, vocab, batch, length):
    """``(run_jax, run_torch)``: one forward each on the same random ids, returning hidden states
    (blocked until ready; the torch side under ``inference_mode``)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab - 1, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    fwd = jax.jit(lambda m, i, k: m(i, attention_mask_bl=k))
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def run_jax():
        return fwd(jax_model, ids_j, mask_j).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            return torch_model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    return run_jax, run_torch


def max_abs_diff(jax_out, torch_out) -> float:
    """Max ``|jax - torch|`` in fp32 (either side may be bf16)."""
    return float(np.abs(np.asarray(jax_out, np.float32) - torch_out.float().numpy()).max())


def measure(name, jax_model, torch_model, vocab, batch, length, repeats):
    run_jax, run_torch = runners(jax_model, torch_model, vocab, batch, length)
    jax_s = median_seconds(run_jax, repeats)
    torch_s = median_seconds(run_torch, repeats)
    diff = max_abs_diff(run_jax(), run_torch())
    tokens = batch * length
    print(
        f"{name}: jax {jax_s * 1e3:.1f} ms, torch {torch_s * 1e3:.1f} ms, "
        f"torch/jax {torch_s / jax_s:.2f}x, max |diff| {diff:.2e}"
    )
    return {
        "model": name,
        "batch": batch,
        "length": length,
        "jax_s": jax_s,
        "torch_s": torch_s,
        "speedup_torch_over_jax": torch_s / jax_s,
        "jax_tokens_per_s": tokens / jax_s,
        "torch_tokens_per_s": tokens / torch_s,
        "max_abs_diff": diff,
    }


def pairs(dtype: str = "float32", attention_impl: str = "xla", **load_kw):
    """Yields ``(name, jax_model, torch_model, vocab)`` for the SmolLM2-shaped Llama, then
    MiniLM, both sides in ``dtype`` (params and compute), JAX attention ``attention_impl``
    (``load_kw``: more ``load_backbone`` options)."""
    kw = dict(dtype=dtype, param_dtype=dtype, attention_impl=attention_impl, **load_kw)
    torch_dtype = getattr(torch, dtype)
    with tempfile.TemporaryDirectory() as tmp:
        torch_llama, vocab = smollm2_shaped(Path(tmp))
        jax_llama, _ = load_backbone(tmp, **kw)
        name = "smollm2-135m-shaped (llama, 30 layers)"
        yield name, jax_llama, torch_llama.to(torch_dtype), vocab
    path, torch_bert, vocab = minilm()
    jax_bert, _ = load_backbone(path, **kw)
    yield "all-minilm-l6-v2 (bert, 6 layers)", jax_bert, torch_bert.to(torch_dtype), vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--attention-impl", default="xla", choices=["xla", "reference"])
    args = parser.parse_args()
    rows = [
        measure(name, jax_model, torch_model, vocab, args.batch, args.length, args.repeats)
        for name, jax_model, torch_model, vocab in pairs(args.dtype, args.attention_impl)
    ]
    extra = {}
    if (args.dtype, args.attention_impl) != ("float32", "xla"):
        extra = {"dtype": args.dtype, "attention_impl": args.attention_impl}
    out = write_result(
        "forward_vs_torch",
        {
            "benchmark": "forward_vs_torch",
            "device": device_name(),
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "jax": jax.__version__,
            "torch": torch.__version__,
            **extra,
            "results": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
