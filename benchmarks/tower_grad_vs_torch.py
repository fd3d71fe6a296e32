"""Forward and forward+backward of one tower (MiniLM or SmolLM2) in JAX against PyTorch, same
weights, inputs and CPU, side by side: where the joint train step loses to PyTorch.

    python benchmarks/tower_grad_vs_torch.py --tower smollm2 [--variant library]
        [--batch 4] [--length 256] [--repeats 5]

The loss is ``sum(hidden * probe)`` over the final hidden states (every param gets a
gradient; no LM head). ``--variant`` changes the JAX side only: ``library`` (as shipped),
``linear3d`` (``nnx.Linear`` on the 3-D activations, the behaviour before ``layers.Dense``
flattened them), ``no_attention`` (attention replaced by ``v + q``: what attention costs
JAX), ``one_call`` (causal attention as one masked call, the library before
``layers.causal_attention_in_blocks``), ``reference`` (the einsum attention path),
``headmajor`` (``cpu_tuning``'s head-major attention) or ``merged_groups`` (GQA groups merged
into the query length). ``XLA_FLAGS`` from the environment are recorded in the row and its
key. Rows merge by
``tower/variant/BxL[/flags]`` into ``benchmarks/results/tower_grad_vs_torch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, median_seconds
from resrank_jax import load_backbone
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models import bert, decoder, layers

OUT = Path(__file__).resolve().parent / "results" / "tower_grad_vs_torch.json"


def apply_variant(variant: str) -> None:
    """Patches the JAX modules for ``variant`` (before any model is built or traced)."""
    if variant == "linear3d":
        layers.Dense.__call__ = nnx.Linear.__call__
    elif variant == "no_attention":

        def stand_in(q_btnh, k_bskh, v_bskh, *_, **__):
            return jnp.repeat(v_bskh, q_btnh.shape[2] // k_bskh.shape[2], axis=2) + q_btnh

        bert.attend = stand_in
        decoder.DecoderAttention._attend = lambda self, q, k, v, inputs: stand_in(q, k, v)
    elif variant == "headmajor":
        from benchmarks.cpu_tuning import headmajor_attend

        bert.attend = decoder.attend = headmajor_attend
    elif variant == "merged_groups":
        bert.attend = decoder.attend = merged_groups_attend
    elif variant == "one_call":

        def one_call(q_btnh, k_bskh, v_bskh, key_mask_bs, *, scale=None, **_):
            mask = key_mask_bs.astype(bool)[:, None, None, :]
            return jax.nn.dot_product_attention(
                q_btnh, k_bskh, v_bskh, mask=mask, is_causal=True, scale=scale
            )

        layers.causal_attention_in_blocks = one_call
    elif variant not in ("library", "reference"):
        raise SystemExit(f"unknown variant {variant!r}")


def merged_groups_attend(q_btnh, k_bskh, v_bskh, key_mask_bs, *, causal, impl, scale=None):
    """``layers.attend`` with the G query heads of each kv head merged into the query length
    (``[B, K, G*T, H]``): every contraction of the backward is over one dimension."""
    b, t, n, h = q_btnh.shape
    kv = k_bskh.shape[2]
    g = n // kv
    q = q_btnh.reshape(b, t, kv, g, h).transpose(0, 2, 3, 1, 4).reshape(b, kv, g * t, h)
    keys, values = k_bskh.transpose(0, 2, 1, 3), v_bskh.transpose(0, 2, 1, 3)
    logits = jnp.einsum("bkrh,bksh->bkrs", q, keys).astype(jnp.float32)
    logits = logits * (h**-0.5 if scale is None else scale)
    mask = layers.attention_mask(key_mask_bs, causal)[:, :, None]  # [B, 1, 1, T, S]
    mask = jnp.broadcast_to(mask, (b, 1, g, t, mask.shape[-1])).reshape(b, 1, g * t, -1)
    probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min), axis=-1)
    out = jnp.einsum("bkrs,bksh->bkrh", probs.astype(values.dtype), values)
    return out.reshape(b, kv, g, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def load_pair(tower: str, variant: str):
    """``(jax_model, torch_model)`` with the same weights (torch in eval mode: no dropout)."""
    kw = {"attention_impl": "reference"} if variant == "reference" else {}
    if tower == "minilm":
        from transformers import AutoModel

        path = packaged_weights("all-minilm-l6-v2")
        return load_backbone(path, **kw)[0], AutoModel.from_pretrained(str(path)).eval()
    from transformers import AutoModelForCausalLM

    path = packaged_weights("smollm2-135m-instruct")
    torch_model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32
    )
    return load_backbone(path, **kw)[0], torch_model.model.eval()


def timings(tower: str, variant: str, batch: int, length: int, repeats: int) -> dict:
    model, torch_model = load_pair(tower, variant)
    rng = np.random.default_rng(0)
    ids = rng.integers(100, 30000, (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    probe = rng.standard_normal((batch, length, model.cfg.hidden_size)).astype(np.float32)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p, ids_bl, mask_bl, probe_bld):
        hidden = nnx.merge(graphdef, p, rest)(ids_bl, attention_mask_bl=mask_bl)
        return jnp.sum(hidden * probe_bld)

    args = (params, jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(probe))
    forward, grad = jax.jit(loss), jax.jit(jax.grad(loss))
    jax_fwd = median_seconds(lambda: jax.block_until_ready(forward(*args)), repeats)
    jax_grad = median_seconds(lambda: jax.block_until_ready(grad(*args)), repeats)
    t_ids, t_mask = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask)
    t_probe = torch.from_numpy(probe)

    def torch_loss():
        out = torch_model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
        return (out * t_probe).sum()

    def torch_forward():
        with torch.no_grad():
            torch_loss()

    def torch_grad():
        torch_model.zero_grad(set_to_none=True)
        torch_loss().backward()

    torch_fwd = median_seconds(torch_forward, repeats)
    torch_grad_s = median_seconds(torch_grad, repeats)
    return {
        "jax_forward_s": jax_fwd,
        "torch_forward_s": torch_fwd,
        "jax_forward_backward_s": jax_grad,
        "torch_forward_backward_s": torch_grad_s,
        "torch_over_jax_forward": torch_fwd / jax_fwd,
        "torch_over_jax_forward_backward": torch_grad_s / jax_grad,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tower", choices=("minilm", "smollm2"), required=True)
    p.add_argument("--variant", default="library")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    apply_variant(args.variant)
    row = timings(args.tower, args.variant, args.batch, args.length, args.repeats)
    flags = os.environ.get("XLA_FLAGS", "")
    row["xla_flags"] = flags
    results = json.loads(OUT.read_text()) if OUT.exists() else {"rows": {}}
    key = f"{args.tower}/{args.variant}/{args.batch}x{args.length}" + (f"/{flags}" if flags else "")
    results["rows"][key] = row
    results |= {"device": device_name(), "torch_threads": torch.get_num_threads()}
    OUT.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(key, json.dumps(row))


if __name__ == "__main__":
    main()
