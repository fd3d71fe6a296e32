"""Encode a corpus into a dense index with a ranker's encoder (retrieve-then-rerank with one
model: ``resrank rerank --index DIR --topics FILE``).

    resrank index --corpus data/scifact/corpus.jsonl --checkpoint runs/smol --output idx/
    resrank index --corpus collection.tsv --model all-minilm-l6-v2 --output idx/

The encoder is the one ``--ranker`` (default ``dense``) would use with these flags: a run's
trained encoder at the run's passage length, or ``--model`` zero-shot. The logic is
``resrank_jax.index_dir``; file and flag errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from resrank_jax.cli.ranker_args import add_ranker_source, ranker_from_args
from resrank_jax.errors import ConfigError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", required=True, help="BEIR corpus.jsonl or TSV 'docid<TAB>text'")
    p.add_argument("--output", required=True, help="the index directory to write")
    add_ranker_source(p, default_ranker="dense")
    p.add_argument("--batch-size", type=int, default=32, help="passages per encoder call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from resrank_jax.data.bundled import resolve_flag
    from resrank_jax.data.requests import read_corpus_texts
    from resrank_jax.index_dir import MANIFEST, build_index, write_index
    from resrank_jax.paths import as_path
    from resrank_jax.rerank.model_ranker import ModelRanker

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if (as_path(args.output) / MANIFEST).exists():
        raise ConfigError(f"{args.output} already holds an index; delete it or choose another")
    corpus = read_corpus_texts(resolve_flag(args.corpus))
    ranker = ranker_from_args(args)
    if not isinstance(ranker, ModelRanker):
        raise ConfigError(f"--ranker {args.ranker} has no encoder to index with")
    index = build_index(ranker, corpus, progress=not args.quiet)
    source = {
        key: getattr(args, key)
        for key in ("ranker", "model", "checkpoint", "passage_max_length", "dtype")
        if getattr(args, key) is not None
    }
    write_index(args.output, index, corpus, {**source, "corpus": str(args.corpus)})
    print(
        f"indexed {len(index.docids)} documents of {args.corpus} into {args.output} "
        f"({index.vectors.shape[1]}-d, passage length {index.encoder_key[1]})",
        file=sys.stderr,
    )
    return 0
