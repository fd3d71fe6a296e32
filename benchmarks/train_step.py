"""Step time, tokens/s and model TFLOP/s of the jitted joint train step per preset.

    python benchmarks/train_step.py [--presets tiny smollm2-135m] [--repeats 5]
        [--override model.attention_impl=cudnn ...] [--peak-tflops 989] [--measure-peak]
        [--compare-scan]

Writes ``benchmarks/results/train_step.json`` (``--name`` changes the file name).
``--compare-scan`` measures every preset twice, with unrolled and with scanned decoder layers
(``model.scan_layers``), and writes both rows side by side with the ratios scanned / unrolled
of compile and step time. MFU is model
FLOPs (``resrank_jax.flops``: 6 x non-embedding params x padded tokens + attention, as MaxText
counts them; rematerialisation not counted) per second over the device's peak:
``--peak-tflops`` (datasheet dense bf16) and/or ``--measure-peak`` (a bf16 8192^3 matmul
timed on the same device in the same run); on CPU both are left out.
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
from resrank_jax.flops import Tower, param_count, step_flops
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.data import TOKEN_MASKS, load_lists
from resrank_jax.train.models import build_model, build_task
from resrank_jax.train.state import build_stage_step


def matmul_tflops(repeats: int = 10) -> float:
    """Achieved TFLOP/s of a bf16 ``n x n x n`` matmul on the default device (n = 8192; 1024
    on CPU, where the large one takes minutes)."""
    n = 1024 if jax.default_backend() == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    matmul = jax.jit(jnp.matmul)
    seconds = median_seconds(lambda: matmul(a, b).block_until_ready(), repeats, warmup=3)
    return 2 * n**3 / seconds / 1e12


def measure(preset: str, repeats: int, overrides: list[str], peaks: dict[str, float]) -> dict:
    base = resolve_config(preset, overrides)
    cfg = resolve_config(preset, [*overrides, f"data.max_queries={4 * base.data.queries_per_step}"])
    mesh = make_mesh(cfg.mesh)
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    lists, _ = load_lists(cfg)
    d = cfg.data
    task = build_task(cfg, enc_tok, rr_tok)
    builder = BatchBuilder(lists, task)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    stage = cfg.stages[0]
    batch_np = builder.batch(np.arange(d.queries_per_step), stage.labels)
    built = build_stage_step(graphdef, rest, params, stage, 100, cfg, task, mesh, batch_np)
    state = built.init_state(jax.tree.map(jnp.copy, params))
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    start = time.perf_counter()
    compiled = built.jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    step_s = median_seconds(one_step, repeats)
    tokens = sum(int(v.sum()) for k, v in batch_np.items() if k in TOKEN_MASKS)
    enc = model.encoder.backbone
    reranker = model.reranker if task.needs_reranker else None
    enc_tower = Tower.of(enc)
    prompt_tower = enc_tower if reranker is None else Tower.of(reranker)
    tflops_per_step = step_flops(batch_np, enc_tower, prompt_tower) / 1e12
    tflops = tflops_per_step / step_s
    row = {
        "preset": preset,
        "overrides": overrides,
        "dtype": cfg.model.dtype,
        "remat": cfg.model.remat,
        "scan_layers": cfg.model.scan_layers,
        "attention_impl": cfg.model.attention_impl,
        "batch_lists": d.queries_per_step,
        "list_size": d.list_size,
        "passage_len": d.passage_max_length,
        "prompt_len": batch_np["prompt_ids"].shape[1],
        "query_len": batch_np["query_ids"].shape[1],
        "encoder_params": param_count(enc),
        "reranker_params": 0 if reranker is None else param_count(reranker),
        "encoder_non_embedding_params": enc_tower.params,
        "reranker_non_embedding_params": 0 if reranker is None else prompt_tower.params,
        "compile_s": compile_s,
        "step_s": step_s,
        "tokens_per_s": tokens / step_s,
        "model_tflops_per_step": tflops_per_step,
        "model_tflops_per_s": tflops,
    }
    for name, peak in peaks.items():
        row[f"mfu_vs_{name}"] = tflops / (peak * jax.device_count())
    print(row)
    return row


def compare_scan(preset: str, repeats: int, overrides: list[str], peaks: dict[str, float]) -> dict:
    """``preset`` measured with unrolled and with scanned decoder layers (same overrides
    otherwise), and ``scanned_over_unrolled``: the ratios of compile and step time."""
    unrolled = measure(preset, repeats, [*overrides, "model.scan_layers=false"], peaks)
    scanned = measure(preset, repeats, [*overrides, "model.scan_layers=true"], peaks)
    ratios = {key: scanned[key] / unrolled[key] for key in ("compile_s", "step_s")}
    print(f"{preset}: scanned / unrolled {ratios}")
    return {
        "preset": preset,
        "unrolled": unrolled,
        "scanned": scanned,
        "scanned_over_unrolled": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--override", action="append", default=[], help="config KEY=VALUE")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="datasheet, per device")
    parser.add_argument("--measure-peak", action="store_true")
    parser.add_argument("--name", default="train_step", help="benchmarks/results/NAME.json")
    parser.add_argument(
        "--compare-scan", action="store_true", help="each preset unrolled and scanned"
    )
    args = parser.parse_args()
    peaks = {"datasheet_peak": args.peak_tflops} if args.peak_tflops else {}
    if args.measure_peak:
        peaks["measured_matmul"] = matmul_tflops()
        print(f"bf16 matmul: {peaks['measured_matmul']:.1f} TFLOP/s")
    run = compare_scan if args.compare_scan else measure
    rows = [run(p, args.repeats, args.override, peaks) for p in args.presets]
    out = write_result(
        args.name,
        {
            "benchmark": "train_step",
            "device": device_name(),
            "devices": jax.device_count(),
            "peak_tflops_per_device": peaks,
            "results": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
