"""How alike a ResRank reranker's slot states are within one candidate list: the mean cosine
between the final states at two different slots, the same for the slot inputs ``phi(e)`` the
reranker was given, and the norm of each slot state minus the list's mean state relative to its
own norm (what ``center_slots`` keeps), averaged over queries.

    python -m resrank_jax.apps.slot_states (--run RUN_DIR | --preset NAME) [--set dl19]
        [--queries 5] [--output FILE]

``--preset`` builds the preset's model untrained (pretrained backbones, fresh projector and
gate); ``--run`` loads a training run. Each list is the BM25 top-100 of the set's first
queries, shuffled as ``apps/quality.py`` shuffles it. Prints one JSON object (and writes it to
``--output``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from resrank_jax.apps.experiment import eval_datasets
from resrank_jax.apps.quality import EVAL_SEED
from resrank_jax.evaluation import shuffled

SETS = {"dl19": 0, "scifact": 1}  # index in eval_datasets()


def list_stats(h_nd: np.ndarray, x_nd: np.ndarray) -> dict[str, float]:
    """For one list's slot states ``h [N, D]`` and slot inputs ``x [N, D]`` (N >= 2): the mean
    cosine over pairs of different slots of each, and the mean of ``|h_i - mean(h)| / |h_i|``."""

    def mean_pair_cosine(v_nd: np.ndarray) -> float:
        unit = v_nd / np.linalg.norm(v_nd, axis=-1, keepdims=True)
        n = len(unit)
        return float((np.sum(unit @ unit.T) - n) / (n * (n - 1)))

    h_nd = h_nd.astype(np.float64)
    centred = np.linalg.norm(h_nd - h_nd.mean(axis=0), axis=-1) / np.linalg.norm(h_nd, axis=-1)
    return {
        "slot_state_cosine": mean_pair_cosine(h_nd),
        "slot_input_cosine": mean_pair_cosine(x_nd.astype(np.float64)),
        "centred_norm_ratio": float(centred.mean()),
    }


def slot_states(ranker, query: str, candidates) -> tuple[np.ndarray, np.ndarray]:
    """The reranker's final states at the slots ``[N, D]`` and the slot inputs ``[N, D]`` for
    one list, as ``ranker`` (a ResRank ``ModelRanker``) would score it."""
    e_bne, batch, _, _ = ranker.call_inputs([ranker.embedded(query, candidates)])
    fields = (batch["prompt_ids"], batch["prompt_mask"], batch["slot_pos"])
    h_bnd, x_bnd = _states(ranker.model, e_bne, *fields)
    n = len(candidates)
    return np.asarray(h_bnd[0, :n]), np.asarray(x_bnd[0, :n])


@jax.jit
def _states(model, e_bne, prompt_ids_bl, prompt_mask_bl, slot_pos_bn):
    h_bnd, _ = model.contextualize(e_bne, prompt_ids_bl, prompt_mask_bl, slot_pos_bn)
    return h_bnd, model.slot_inputs(e_bne)


def load_ranker(run: str | None, preset: str | None):
    """A ResRank ``ModelRanker`` of a training run, or of a preset's untrained model."""
    from resrank_jax.config import resolve_config
    from resrank_jax.models.build import default_mesh
    from resrank_jax.rerank.model_ranker import ModelRanker
    from resrank_jax.train.models import build_model, build_task, load_trained

    if run:
        model, task, _ = load_trained(run)
    else:
        cfg = resolve_config(preset)
        model, enc_tok, rr_tok = build_model(cfg.model, default_mesh(None), cfg.seed)
        task = build_task(cfg, enc_tok, rr_tok)
    if task.name != "resrank":
        raise SystemExit(f"slot states need a ResRank model, got {task.name!r}")
    return ModelRanker(task, model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a training run directory")
    source.add_argument("--preset", help="a preset, untrained")
    p.add_argument("--set", default="dl19", choices=sorted(SETS))
    p.add_argument("--queries", type=int, default=5, help="the set's first N queries")
    p.add_argument("--output", help="also write the JSON here")
    args = p.parse_args(argv)
    ranker = load_ranker(args.run, args.preset)
    dataset = shuffled(eval_datasets()[SETS[args.set]][0], EVAL_SEED)
    per_query = {
        qc.qid: list_stats(*slot_states(ranker, qc.query, qc.candidates))
        for qc in dataset.queries[: args.queries]
    }
    keys = next(iter(per_query.values()))
    record = {
        "source": args.run or args.preset,
        "set": args.set,
        "mean": {k: float(np.mean([q[k] for q in per_query.values()])) for k in keys},
        "per_query": per_query,
    }
    text = json.dumps(record, indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
