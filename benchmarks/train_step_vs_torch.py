"""The ResRank joint train step in resrank_jax (jit) against the same step written in PyTorch
with transformers models, same weights, batch and CPU, timed side by side.

    python benchmarks/train_step_vs_torch.py [--repeats 3] [--lists 4] [--override K=V ...]
        [--name train_step_vs_torch]

Both sides: all-MiniLM-L6-v2 encoder (mean pooling) + SmolLM2-135M-Instruct reranker (from
the packaged GGUF), MLP projector, slot splicing, norm-sum residual, cosine scores, RankNet
(kappa 10) + InfoNCE (tau 0.03), AdamW on every parameter. Writes
``benchmarks/results/train_step_vs_torch.json`` with ``speedup_torch_over_jax``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, median_seconds, write_result
from resrank_jax import make_mesh
from resrank_jax.config import resolve_config
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.data import TOKEN_MASKS, load_lists
from resrank_jax.train.models import build_model, build_task
from resrank_jax.train.state import build_stage_step


class TorchResRank(torch.nn.Module):
    """The same joint model in PyTorch (reference implementation for timing)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        from transformers import AutoModel, AutoModelForCausalLM

        self.encoder = AutoModel.from_pretrained(str(packaged_weights("all-minilm-l6-v2")))
        gguf = packaged_weights("smollm2-135m-instruct")
        self.reranker = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        ).model
        self.reranker.embed_tokens.padding_idx = None  # SmolLM2's pad is <|im_end|>: train it
        e, d = self.encoder.config.hidden_size, self.reranker.config.hidden_size
        self.proj = torch.nn.Sequential(
            torch.nn.Linear(e, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, d)
        )

    def encode(self, ids, mask):
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1), dim=-1)

    def forward(self, b):
        n, k, lp = b["passage_ids"].shape
        e = self.encode(b["passage_ids"].view(n * k, lp), b["passage_mask"].view(n * k, lp)).view(
            n, k, -1
        )
        x = self.proj(e)
        tok = self.reranker.embed_tokens(b["prompt_ids"])
        rows = torch.arange(n).unsqueeze(1).expand(n, k)
        valid = b["slot_pos"] < tok.shape[1]
        tok = tok.index_put((rows[valid], b["slot_pos"][valid]), x[valid])
        h = self.reranker(inputs_embeds=tok, attention_mask=b["prompt_mask"]).last_hidden_state
        h_slots = h[rows, b["slot_pos"].clamp(max=h.shape[1] - 1)]
        r = torch.nn.functional.normalize(h_slots, dim=-1) + torch.nn.functional.normalize(
            x, dim=-1
        )
        s = torch.einsum(
            "bd,bkd->bk",
            torch.nn.functional.normalize(h[:, -1], dim=-1),
            torch.nn.functional.normalize(r, dim=-1),
        )
        labels, mask = b["labels"], b["cand_mask"].bool()
        pairs = (labels[:, :, None] > labels[:, None, :]) & mask[:, :, None] & mask[:, None, :]
        rank = torch.nn.functional.softplus(-10.0 * (s[:, :, None] - s[:, None, :]))[pairs].mean()
        q = self.encode(b["query_ids"], b["query_mask"])
        logits = (q @ e.view(n * k, -1).T) / 0.03
        logits = logits.masked_fill(~mask.view(1, -1), -1e9)
        ret = torch.nn.functional.cross_entropy(logits, torch.arange(n) * k + b["positive"])
        return 2.0 * rank + 1.0 * ret


def build_steps(lists: int, overrides: tuple[str, ...] = ()):
    """``(jax_step, torch_step, info)``: one ResRank joint step each (state kept between calls)
    on the same ``lists`` lists; ``overrides`` are extra config overrides (``model.remat=none``);
    ``info`` has the batch shape, token count and JAX compile seconds."""
    cfg = resolve_config(
        "smollm2-135m",
        [
            f"data.queries_per_step={lists}",
            f"data.max_queries={4 * lists}",
            "mesh=(1,1,1)",
            *overrides,
        ],
    )
    mesh = make_mesh(cfg.mesh, jax.devices()[:1])
    model, enc_tok, rr_tok = build_model(cfg.model, mesh, cfg.seed)
    task = build_task(cfg, enc_tok, rr_tok)
    builder = BatchBuilder(load_lists(cfg)[0], task)
    batch_np = builder.batch(np.arange(lists), "qrels")
    tokens = sum(int(v.sum()) for k, v in batch_np.items() if k in TOKEN_MASKS)

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    stage = cfg.stages[0]
    built = build_stage_step(
        graphdef, rest, params, stage, 100, cfg, task, mesh, batch_np, grad_accum=1
    )
    holder = {"state": built.init_state(jax.tree.map(jnp.copy, params))}
    batch = {k: jax.device_put(v, built.batch_shardings[k]) for k, v in batch_np.items()}
    start = time.perf_counter()
    compiled = built.jitted.lower(holder["state"], batch).compile()
    compile_s = time.perf_counter() - start

    def jax_step():
        holder["state"], metrics = compiled(holder["state"], batch)
        jax.block_until_ready(metrics["loss"])

    torch_model = TorchResRank(model.cfg.projector_hidden or model.reranker.cfg.hidden_size)
    opt = torch.optim.AdamW(torch_model.parameters(), lr=1e-5, weight_decay=0.01)
    tb = {
        k: torch.from_numpy(v.astype(np.int64) if v.dtype.kind in "iu" else v)
        for k, v in batch_np.items()
    }

    def torch_step():
        opt.zero_grad()
        torch_model(tb).backward()
        torch.nn.utils.clip_grad_norm_(torch_model.parameters(), 1.0)
        opt.step()

    info = {
        "lists": lists,
        "list_size": cfg.data.list_size,
        "prompt_len": batch_np["prompt_ids"].shape[1],
        "tokens_per_step": tokens,
        "jax_compile_s": compile_s,
    }
    return jax_step, torch_step, info


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lists", type=int, default=4)
    p.add_argument(
        "--override", action="append", default=[], help="extra config override (repeatable)"
    )
    p.add_argument("--name", default="train_step_vs_torch", help="benchmarks/results/NAME.json")
    args = p.parse_args()
    jax_step, torch_step, info = build_steps(args.lists, tuple(args.override))
    jax_s = median_seconds(jax_step, args.repeats)
    torch_s = median_seconds(torch_step, args.repeats)
    tokens = info["tokens_per_step"]
    row = {
        **info,
        **({"overrides": args.override} if args.override else {}),
        "jax_step_s": jax_s,
        "torch_step_s": torch_s,
        "jax_tokens_per_s": tokens / jax_s,
        "torch_tokens_per_s": tokens / torch_s,
        "speedup_torch_over_jax": torch_s / jax_s,
    }
    print(row)
    out = write_result(
        args.name,
        {
            "benchmark": "train_step_vs_torch",
            "device": device_name(),
            "torch_threads": torch.get_num_threads(),
            **row,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
