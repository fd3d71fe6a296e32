"""Inverse-cloze (ICT) training queries from a corpus, with dense hard negatives.

    python -m resrank_jax.apps.ict --output-dir DIR [--corpus PATH] [--exclude-qrels PATH ...]
        [--encoder all-minilm-l6-v2] [--depth 100] [--max-queries N] [--seed 0]
        [--min-words 6] [--remove-prob 0.9] [--max-length 128] [--batch-size 32] [--quiet]
        [--include-train [CANDIDATES QRELS]]

Defaults: the packaged SciFact corpus, with every document judged in SciFact's test qrels
dropped (``--exclude-qrels`` with no path drops none). ``--include-train CANDIDATES QRELS``
appends those training lists (with their judgments and documents) to the output, so ICT and
e.g. SciFact train train in one run; with no path: the packaged SciFact train split
(``scifact/candidates.train.jsonl``, ``scifact/qrels.train.txt``). What it makes and writes:
``resrank_jax.data.ict``. The output trains as it is::

    resrank train --config smollm2-135m-spec --output-dir runs/ict \\
        data.candidates=DIR/candidates.jsonl data.corpus=DIR/corpus.jsonl data.qrels=DIR/qrels.txt

Input, flag and file errors print one line and exit 2 (``--debug``: the traceback).
"""

from __future__ import annotations

import argparse
import sys

from resrank_jax.cli_errors import add_debug_flag, run_parsed
from resrank_jax.data.bundled import data_dir, resolve_flag
from resrank_jax.errors import ConfigError
from resrank_jax.models.encoder import Encoder
from resrank_jax.tokenizer import TextTokenizer


def load_encoder(name: str) -> tuple[Encoder, TextTokenizer]:
    """The encoder and tokenizer ``name`` gives: packaged weights (``all-minilm-l6-v2``), any
    ``load_backbone`` source, or a random test backbone (``tiny-bert``, seed 0)."""
    from resrank_jax.hf.load import load_tokenizer
    from resrank_jax.hf.packaged import packaged_weights
    from resrank_jax.models.build import init_backbone
    from resrank_jax.rerank.factory import resolve_model
    from resrank_jax.train.models import TINY

    if name in TINY:
        arch, tokenizer_source = TINY[name]
        return Encoder(init_backbone(arch, seed=0)), load_tokenizer(
            packaged_weights(tokenizer_source)
        )
    backbone, tokenizer = resolve_model(name)
    if tokenizer is None:
        raise ConfigError(f"{name}: no tokenizer found next to the weights")
    return Encoder(backbone), tokenizer


def include_train_paths(paths: list[str] | None) -> tuple[str, str] | None:
    """``--include-train``'s ``(candidates, qrels)``: None when not given, the packaged
    SciFact train split when given without a path (``data/...`` paths resolved)."""
    if paths is None:
        return None
    if not paths:
        scifact = data_dir() / "scifact"
        return str(scifact / "candidates.train.jsonl"), str(scifact / "qrels.train.txt")
    if len(paths) != 2:
        raise ConfigError(f"--include-train takes CANDIDATES QRELS (or nothing), got {paths}")
    return resolve_flag(paths[0]), resolve_flag(paths[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    scifact = data_dir() / "scifact"
    p.add_argument("--output-dir", required=True)
    p.add_argument("--corpus", default=str(scifact / "corpus.jsonl"), help="default: SciFact")
    p.add_argument(
        "--exclude-qrels",
        nargs="*",
        default=[str(scifact / "qrels.test.txt")],
        help="drop every document judged here (default: SciFact test qrels; no path: none)",
    )
    p.add_argument(
        "--include-train",
        nargs="*",
        default=None,
        metavar="PATH",
        help="CANDIDATES QRELS: training lists written after the ICT ones, with their "
        "judgments and documents (no path: SciFact train; default: none)",
    )
    p.add_argument("--encoder", default="all-minilm-l6-v2", help="packaged name or HF source")
    p.add_argument("--depth", type=int, default=100, help="candidates per query")
    p.add_argument("--max-queries", type=int, default=None, help="default: one per document")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-words", type=int, default=6, help="shortest query sentence")
    p.add_argument("--remove-prob", type=float, default=0.9, help="P(sentence leaves positive)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per passage and query")
    p.add_argument("--batch-size", type=int, default=32, help="texts per encoder call")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_debug_flag(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Generates the ICT set ``args`` describe; prints its counts."""
    from resrank_jax.data.ict import IctSettings, dense_search, generate_ict

    settings = IctSettings(
        depth=args.depth,
        max_queries=args.max_queries,
        seed=args.seed,
        min_words=args.min_words,
        remove_prob=args.remove_prob,
    )
    if args.max_length < 1 or args.batch_size < 1:
        raise ConfigError("--max-length and --batch-size must be >= 1")
    include_train = include_train_paths(args.include_train)

    def make_search(corpus: dict[str, str]):
        encoder, tokenizer = load_encoder(args.encoder)
        return dense_search(
            encoder,
            tokenizer,
            corpus,
            max_length=args.max_length,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )

    provenance = generate_ict(
        args.output_dir,
        resolve_flag(args.corpus),
        [resolve_flag(p) for p in args.exclude_qrels],
        make_search,
        settings,
        search_info={"encoder": args.encoder, "max_length": args.max_length},
        include_train=include_train,
        progress=not args.quiet,
    )
    counts = provenance["counts"]
    print(
        f"wrote {counts['queries']} ICT queries and {counts['included_lists']} included lists "
        f"to {args.output_dir} ({counts['documents']} documents, {counts['excluded']} "
        f"excluded, {counts['without_sentence']} without a usable sentence)",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_parsed(build_parser(), run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
