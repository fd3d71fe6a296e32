"""Model FLOPs of stored train-step results recomputed with ``resrank_jax.flops`` (MaxText's
count) from their step time and batch shapes, for runs that cannot be repeated here (the
GPU runs): adds ``recomputed_model_flops`` to each row, keeps every measured field.

    python benchmarks/recompute_flops.py benchmarks/results/train_step-gpu-xla.json \\
        --backbone qwen3-0.6b

``--backbone``: the ``resrank_jax.models.config.PRESETS`` shape of both towers (what
``benchmarks/random_checkpoint.py`` wrote for the run); query length: the row's preset's
``data.query_max_length``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from resrank_jax.config import resolve_config
from resrank_jax.flops import Tower, step_flops
from resrank_jax.models.build import abstract_backbone
from resrank_jax.models.config import PRESETS

FORMULA = (
    "resrank_jax.flops.step_flops (MaxText calculate_tflops_training_per_device): per tower "
    "6 x non-embedding params x padded tokens + attention 6 (causal) or 12 (bidirectional) x "
    "layers x heads x head_dim x padded_len^2 per sequence; from the stored step_s and batch "
    "shapes by benchmarks/recompute_flops.py, not a new measurement"
)


def recompute(row: dict, tower: Tower, peaks: dict[str, float], devices: int) -> dict:
    """The ``recomputed_model_flops`` entry of one stored row."""
    b, k = row["batch_lists"], row["list_size"]
    query_len = resolve_config(row["preset"]).data.query_max_length  # queries pad to it
    batch = {
        "passage_ids": np.zeros((b, k, row["passage_len"]), np.int32),
        "query_ids": np.zeros((b, query_len), np.int32),
        "prompt_ids": np.zeros((b, row["prompt_len"]), np.int32),
    }
    tflops_per_step = step_flops(batch, tower, tower) / 1e12
    tflops = tflops_per_step / row["step_s"]
    return {
        "recomputed": True,
        "formula": FORMULA,
        "query_len": query_len,
        "encoder_non_embedding_params": tower.params,
        "reranker_non_embedding_params": tower.params,
        "model_tflops_per_step": tflops_per_step,
        "model_tflops_per_s": tflops,
        **{f"mfu_vs_{name}": tflops / (peak * devices) for name, peak in peaks.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--backbone", required=True, choices=sorted(PRESETS))
    args = p.parse_args()
    doc = json.loads(Path(args.path).read_text())
    tower = Tower.of(abstract_backbone(PRESETS[args.backbone]))
    for row in doc["results"]:
        row["recomputed_model_flops"] = recompute(
            row, tower, doc.get("peak_tflops_per_device", {}), doc["devices"]
        )
        print(row["preset"], json.dumps(row["recomputed_model_flops"], indent=1))
    Path(args.path).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
