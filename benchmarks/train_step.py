"""Step time, tokens/s and model TFLOP/s of the jitted joint train step per preset.

    python benchmarks/train_step.py [--presets tiny smollm2-135m] [--repeats 5]

Writes ``benchmarks/results/train_step.json``. MFU needs the device's peak TFLOP/s
(``--peak-tflops``); on CPU it is left out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, median_seconds, write_result
from resrank_jax import make_mesh
from resrank_jax.config import resolve_config
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.loop import TOKEN_MASKS, load_lists, step_flops
from resrank_jax.train.models import build_model
from resrank_jax.train.state import build_stage_step


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def measure(preset: str, repeats: int, peak_tflops: float) -> dict:
    cfg = resolve_config(
        preset, [f"data.max_queries={4 * resolve_config(preset).data.queries_per_step}"]
    )
    mesh = make_mesh(cfg.mesh)
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    lists, _ = load_lists(cfg)
    d = cfg.data
    builder = BatchBuilder.from_config(lists, enc_tok, rr_tok, cfg)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    stage = cfg.stages[0]
    batch_np = builder.batch(np.arange(d.queries_per_step), stage.labels)
    built = build_stage_step(graphdef, rest, params, stage, 100, cfg, mesh, batch_np)
    state = built.init_state(jax.tree.map(jnp.copy, params))
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    start = time.perf_counter()
    compiled = built.step_fn.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    step_s = median_seconds(one_step, repeats)
    tokens = sum(int(v.sum()) for k, v in batch_np.items() if k in TOKEN_MASKS)
    enc = model.encoder if cfg.model.mode == "resrank" else model
    enc_params = count(nnx.state(enc, nnx.Param))
    rr_params = count(nnx.state(model.reranker, nnx.Param)) if cfg.model.mode == "resrank" else 0
    tflops = step_flops(batch_np, enc_params, rr_params) / step_s / 1e12
    row = {
        "preset": preset,
        "batch_lists": d.queries_per_step,
        "list_size": d.list_size,
        "passage_len": d.passage_max_length,
        "prompt_len": batch_np["prompt_ids" if "prompt_ids" in batch_np else "pseudo_ids"].shape[1],
        "encoder_params": enc_params,
        "reranker_params": rr_params,
        "compile_s": compile_s,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "model_tflops_per_s": tflops,
    }
    if peak_tflops:
        row["mfu"] = tflops / (peak_tflops * jax.device_count())
    print(row)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=0.0)
    args = parser.parse_args()
    rows = [measure(p, args.repeats, args.peak_tflops) for p in args.presets]
    out = write_result(
        "train_step",
        {
            "benchmark": "train_step",
            "device": device_name(),
            "devices": jax.device_count(),
            "results": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
