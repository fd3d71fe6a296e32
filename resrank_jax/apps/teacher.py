"""A teacher file for stage 2: training lists ranked by judged positives, then by RRF of the
first-stage order and a ranker's order (``resrank_jax.train.teacher``).

    python -m resrank_jax.apps.teacher --output FILE [--candidates C --corpus X --qrels Q]
        [--ranker dense] [--model all-minilm-l6-v2 | --checkpoint RUN_DIR]
        [--list-size 8] [--negatives head|sampled] [--seed 0] [--max-queries N]
        [--passage-max-length N] [--rrf-k 60] [--batch-size 8] [--quiet]

Defaults: SciFact's packaged train split, ranked by zero-shot dense all-MiniLM-L6-v2.
``--checkpoint RUN_DIR`` ranks with a trained run instead (``--ranker resrank``: its own
model; ``dense``: its encoder). ``--list-size``, ``--negatives`` and ``--seed`` pick each
list's candidates as ``data.*`` does in training; train with the same list size::

    resrank train --config smollm2-135m-spec --output-dir runs/teacher \\
        data.teacher=FILE data.list_size=8 data.candidate_order=shuffled

Input, flag and file errors print one line and exit 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import sys

from resrank_jax.cli_errors import add_debug_flag, run_parsed
from resrank_jax.data.bundled import data_dir, resolve_flag
from resrank_jax.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scifact = data_dir() / "scifact"
    p.add_argument("--output", required=True, help="teacher JSONL to write")
    p.add_argument("--candidates", default=str(scifact / "candidates.train.jsonl"))
    p.add_argument("--corpus", default=str(scifact / "corpus.jsonl"))
    p.add_argument("--qrels", default=str(scifact / "qrels.train.txt"))
    p.add_argument("--ranker", default="dense", help="dense, resrank or e2rank")
    p.add_argument("--model", default="all-minilm-l6-v2", help="zero-shot encoder source")
    p.add_argument("--checkpoint", help="a training run: rank with its trained model")
    p.add_argument("--list-size", type=int, default=8, help="candidates per list")
    p.add_argument("--negatives", default="head", choices=("head", "sampled"))
    p.add_argument("--seed", type=int, default=0, help="for --negatives sampled")
    p.add_argument("--max-queries", type=int, default=None, help="first N queries only")
    p.add_argument(
        "--passage-max-length",
        type=int,
        default=None,
        help="default: a --checkpoint run's own length, else 128",
    )
    p.add_argument("--rrf-k", type=float, default=60.0, help="RRF's constant")
    p.add_argument("--batch-size", type=int, default=8, help="lists per ranker call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Writes the teacher file ``args`` describe; prints what it wrote."""
    from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
    from resrank_jax.rerank.factory import build_ranker
    from resrank_jax.train.lists import lists_from_qrels
    from resrank_jax.train.teacher import teacher_records, write_teacher

    length = args.passage_max_length or (None if args.checkpoint else 128)
    if args.list_size < 2 or args.batch_size < 1 or (length is not None and length < 1):
        raise ConfigError("--list-size must be >= 2, --batch-size and --passage-max-length >= 1")
    if args.ranker not in ("dense", "resrank", "e2rank"):
        raise ConfigError(f"--ranker must be dense, resrank or e2rank, got {args.ranker!r}")
    if args.ranker != "dense" and args.checkpoint is None:
        raise ConfigError(f"--ranker {args.ranker} needs --checkpoint RUN_DIR (a trained run)")
    corpus = read_corpus(resolve_flag(args.corpus))
    queries = read_candidates(resolve_flag(args.candidates), corpus)[: args.max_queries]
    lists, counts = lists_from_qrels(
        queries,
        read_qrels(resolve_flag(args.qrels)),
        corpus,
        list_size=args.list_size,
        negatives=args.negatives,
        seed=args.seed,
    )
    ranker = build_ranker(
        args.ranker,
        checkpoint=args.checkpoint,
        model=None if args.checkpoint else args.model,
        passage_max_length=length,
    )
    records = teacher_records(
        lists, ranker, rrf_k=args.rrf_k, batch_size=args.batch_size, progress=not args.quiet
    )
    written = write_teacher(args.output, records)
    source = args.checkpoint or args.model
    print(
        f"wrote {written} teacher lists of up to {args.list_size} to {args.output} "
        f"({args.ranker} ranker from {source}; {counts['no_positive']} queries without a "
        "positive skipped)",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
