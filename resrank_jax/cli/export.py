"""Export a trained run as one directory that loads anywhere (no Orbax run needed).

    resrank export RUN_DIR OUT_DIR [--force]

Writes ``OUT_DIR/``: ``encoder/`` and ``reranker/`` (HF format, with their tokenizers),
``head.safetensors`` (ResRank's projector, gate and scalars), ``resrank.json`` (task, model
config, ranking recipe) and a model card ``README.md`` (training config, data, losses and
the evaluation numbers recorded with the run). E2Rank/dense runs have ``encoder/`` only.
Load it with ``resrank_jax.load_ranker(OUT_DIR)`` or ``--model OUT_DIR``. Both directories
may be URLs (``gs://bucket/run``).
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run (train --output-dir)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where to write the artifact")
    p.add_argument(
        "--force", action="store_true", help="write into OUT_DIR even if it is not empty"
    )


def run(args: argparse.Namespace) -> int:
    from resrank_jax.artifact import export_artifact, read_manifest

    out = export_artifact(args.run_dir, args.out_dir, overwrite=args.force)
    info = read_manifest(out)
    parts = ["encoder/", *(["reranker/"] if info.get("reranker") else [])]
    if info.get("head"):
        parts.append(f"head.safetensors ({len(info['head']['params'])} tensors)")
    print(
        f"exported {info['task']} (step {info['source'].get('step')}) to {out}: "
        f"{', '.join(parts)}, resrank.json, README.md"
    )
    return 0
