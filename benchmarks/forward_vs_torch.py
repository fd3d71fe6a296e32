"""Jitted Flax forward vs HF PyTorch forward, same config, weights and inputs, on this CPU.

Writes ``benchmarks/results/forward_vs_torch.json`` with median seconds per forward and the
ratio ``torch_s / jax_s`` (> 1 means resrank_jax is faster), measured side by side.

    python benchmarks/forward_vs_torch.py [--repeats 5] [--batch 4] [--length 256]
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


def measure(name, jax_model, torch_model, vocab, batch, length, repeats):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab - 1, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    fwd = jax.jit(lambda m, i, k: m(i, attention_mask_bl=k))
    jax_s = median_seconds(lambda: fwd(jax_model, ids_j, mask_j).block_until_ready(), repeats)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def run_torch():
        with torch.inference_mode():
            return torch_model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    torch_s = median_seconds(run_torch, repeats)
    diff = float(np.abs(np.asarray(fwd(jax_model, ids_j, mask_j)) - run_torch().numpy()).max())
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch_llama, vocab = smollm2_shaped(Path(tmp))
        jax_llama, _ = load_backbone(tmp)
        rows.append(
            measure(
                "smollm2-135m-shaped (llama, 30 layers)",
                jax_llama,
                torch_llama,
                vocab,
                args.batch,
                args.length,
                args.repeats,
            )
        )
    path, torch_bert, vocab = minilm()
    jax_bert, _ = load_backbone(path)
    rows.append(
        measure(
            "all-minilm-l6-v2 (bert, 6 layers)",
            jax_bert,
            torch_bert,
            vocab,
            args.batch,
            args.length,
            args.repeats,
        )
    )
    out = write_result(
        "forward_vs_torch",
        {
            "benchmark": "forward_vs_torch",
            "device": device_name(),
            "torch_threads": torch.get_num_threads(),
            "repeats": args.repeats,
            "jax": jax.__version__,
            "torch": torch.__version__,
            "results": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
