"""Rerank any first-stage run: a TREC run + topics + corpus, rank_llm requests, or an irds id.

    resrank rerank --run bm25.run --topics topics.tsv --corpus corpus.jsonl \\
        --ranker resrank --checkpoint runs/smol --depth 100 --output-trec reranked.run
    resrank rerank --requests requests.jsonl --ranker dense --model all-minilm-l6-v2 \\
        --output-jsonl reranked.jsonl
    resrank rerank --irds resrank/scifact/test --ranker resrank-window --checkpoint runs/smol \\
        --window 20 --stride 10 --measures "nDCG@10 RR@10 R@100" --per-query per_query.tsv
    resrank rerank --index idx/ --topics topics.tsv --ranker resrank --checkpoint runs/smol \
        --depth 100 --output-trec reranked.run   # dense retrieval + rerank, one encoder

Qrels are optional: metrics only with ``--qrels`` (or an ``--irds`` id that has qrels). The
logic is ``resrank_jax.rerank_run``; input, config and file errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from resrank_jax.cli.ranker_args import (
    add_ranker_source,
    ranker_from_args,
    save_embedding_cache,
    with_instructions,
)
from resrank_jax.data.bundled import resolve_flag
from resrank_jax.errors import ConfigError

DEFAULT_DEPTH = 100


def add_arguments(p: argparse.ArgumentParser) -> None:
    from resrank_jax.data.metrics import DEFAULT_MEASURES
    from resrank_jax.instructions import INSTRUCTIONS

    inp = p.add_argument_group("input (one of --run, --requests, --irds, --index)")
    inp.add_argument("--run", help="TREC run 'qid Q0 docid rank score tag' (first stage)")
    inp.add_argument("--topics", help="with --run: TSV 'qid<TAB>text' or JSONL (_id/text)")
    inp.add_argument(
        "--corpus",
        help="with --run (or --requests without texts): BEIR corpus.jsonl or TSV 'docid<TAB>text'",
    )
    inp.add_argument(
        "--requests", help="rank_llm request JSONL: doc a string or a dict (text/segment/contents)"
    )
    inp.add_argument("--irds", metavar="ID", help="an ir_datasets id with scored docs")
    inp.add_argument(
        "--index",
        metavar="DIR",
        help="with --topics: retrieve the top --depth documents from this `resrank index` "
        "with the ranker's own encoder, then rerank them",
    )
    inp.add_argument("--max-queries", type=int, metavar="N", help="rerank only the first N")

    rk = p.add_argument_group("ranker")
    add_ranker_source(rk)
    rk.add_argument(
        "--depth",
        type=int,
        default=DEFAULT_DEPTH,
        metavar="K",
        help=f"rerank the first K candidates of each query; the rest keep their first-stage "
        f"order below them (default {DEFAULT_DEPTH})",
    )
    rk.add_argument(
        "--window",
        type=int,
        metavar="W",
        help="sliding window size for e2rank, resrank, resrank-window, generative "
        "(resrank-window and generative: 20 by default)",
    )
    rk.add_argument(
        "--stride",
        type=int,
        metavar="S",
        help="sliding window step (default 10 with the default window, else W/2)",
    )
    rk.add_argument("--batch-size", type=int, default=32, help="passages per encoder call")
    rk.add_argument(
        "--instructions",
        choices=("per-dataset", *INSTRUCTIONS),
        help="prompt instructions (default: the run's, or 'default'); 'per-dataset' picks "
        "them from the input's name",
    )
    rk.add_argument(
        "--embedding-cache",
        help=".npz of passage embeddings for this encoder: loaded if present, updated after",
    )

    out = p.add_argument_group("outputs")
    out.add_argument("--output-trec", metavar="FILE", help="write the reranked TREC run")
    out.add_argument(
        "--output-jsonl", metavar="FILE", help="write rank_llm result JSONL (best first)"
    )
    out.add_argument("--tag", help="run tag of --output-trec (default: the ranker's name)")

    ev = p.add_argument_group("metrics (only with qrels)")
    ev.add_argument("--qrels", help="TREC or BEIR qrels (default: an --irds id's own)")
    ev.add_argument(
        "--rel-level",
        type=int,
        metavar="N",
        help="binary measures without rel= count rel >= N (default: BEIR 1, TREC DL 2)",
    )
    ev.add_argument(
        "--measures",
        help=f"ir_measures names, space-separated (default {DEFAULT_MEASURES!r}); trec_eval "
        "names (ndcg_cut.10) too",
    )
    ev.add_argument(
        "--per-query", metavar="FILE", help="per-query metrics: TSV, or JSON for a .json name"
    )
    ev.add_argument("--metrics-json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _window(args: argparse.Namespace) -> tuple[int, int] | None:
    if args.window is None and args.stride is None:
        return None
    from resrank_jax.rerank.factory import DEFAULT_WINDOW

    size = args.window if args.window is not None else DEFAULT_WINDOW[0]
    if args.stride is not None:
        stride = args.stride
    else:
        stride = DEFAULT_WINDOW[1] if args.window is None else max(1, size // 2)
    return size, stride


def _check_flags(args: argparse.Namespace) -> None:
    """Checks that need no file (before anything is read)."""
    for flag in ("depth", "max_queries", "batch_size", "passage_max_length", "rel_level"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")


def _index_input(args: argparse.Namespace):
    """``--index DIR --topics FILE``: the index, the topics (first ``--max-queries``) and an
    input whose lists ``_retrieved`` fills once the ranker exists."""
    from resrank_jax.data.requests import RerankRequests, read_topics
    from resrank_jax.index_dir import read_index
    from resrank_jax.rerank_run import RerankInput

    others = [f for f in ("run", "requests", "irds", "corpus") if getattr(args, f)]
    if others:
        raise ConfigError(f"--index takes --topics, not --{others[0]}")
    if not args.topics:
        raise ConfigError("--index needs --topics (TSV or JSONL)")
    saved = read_index(resolve_flag(args.index))
    topics = read_topics(resolve_flag(args.topics))
    if args.max_queries:
        topics = dict(list(topics.items())[: args.max_queries])
    name = f"{Path(args.index).name} (dense top-{args.depth})"
    return saved, topics, RerankInput(name, RerankRequests([]))


def _retrieved(ranker, saved, topics, args: argparse.Namespace):
    """The top ``--depth`` of each topic from the index, by ``ranker``'s encoder."""
    from resrank_jax.index_dir import check_same_encoder, retrieve
    from resrank_jax.rerank.model_ranker import ModelRanker

    if not isinstance(ranker, ModelRanker):
        raise ConfigError(f"--index needs a ranker with an encoder, not {args.ranker!r}")
    check_same_encoder(saved, ranker, args.index)
    return retrieve(ranker, saved, topics, args.depth)


def run(args: argparse.Namespace) -> int:
    """Reads and checks the input, qrels and measures before a model is built."""
    _check_flags(args)
    from resrank_jax.data.formats import write_run
    from resrank_jax.data.metrics import DEFAULT_MEASURES, parse_measures
    from resrank_jax.data.requests import write_requests_jsonl
    from resrank_jax.rerank.factory import check_window
    from resrank_jax.rerank_run import (
        format_metrics,
        load_input,
        load_qrels,
        rerank_queries,
        score_run,
        write_per_query,
    )

    window = check_window(args.ranker, _window(args))
    saved, topics = None, None
    if args.index:
        saved, topics, source = _index_input(args)
    else:
        source = load_input(
            run=resolve_flag(args.run),
            topics=resolve_flag(args.topics),
            corpus=resolve_flag(args.corpus),
            requests=resolve_flag(args.requests),
            irds=args.irds,
        )
    qrels, rel_level = load_qrels(resolve_flag(args.qrels), source, args.rel_level)
    wants_metrics = [
        flag
        for flag in ("measures", "per_query", "metrics_json", "rel_level")
        if getattr(args, flag) is not None
    ]
    if qrels is None and wants_metrics:
        flag = "--" + wants_metrics[0].replace("_", "-")
        raise ConfigError(f"{flag} needs qrels: give --qrels (or an --irds id with qrels)")
    if qrels is None and not (args.output_trec or args.output_jsonl):
        raise ConfigError("nothing to write: give --output-trec, --output-jsonl or --qrels")
    measures = parse_measures(args.measures or DEFAULT_MEASURES, rel_level) if qrels else {}

    ranker = with_instructions(
        ranker_from_args(args, window=window), args.instructions, source.name
    )
    if saved is not None:
        source.requests = _retrieved(ranker, saved, topics, args)
    queries = source.requests.queries[: args.max_queries]

    run_, stats = rerank_queries(
        ranker,
        queries,
        depth=args.depth,
        progress=not args.quiet,
        desc=f"{ranker.name} on {source.name}",
    )
    save_embedding_cache(ranker, args)
    if args.output_trec:
        write_run(args.output_trec, run_, tag=args.tag or ranker.name, exact=True)
    if args.output_jsonl:
        write_requests_jsonl(args.output_jsonl, source.requests, run_)
    print(
        f"reranked {stats['ranked_queries']} queries of {source.name} with {ranker.name} "
        f"(depth {args.depth}): {stats['seconds_per_query']:.3f} s/query",
        file=sys.stderr,
    )
    if qrels is None:
        return 0
    if args.max_queries:
        qrels = {q: d for q, d in qrels.items() if q in run_}
    metrics, per_query = score_run(run_, qrels, measures)
    payload = {
        **metrics,
        **stats,
        "ranker": ranker.name,
        "rel_level": rel_level,
        "depth": args.depth,
        "input": source.name,
    }
    print(format_metrics(source.name, ranker.name, payload))
    if args.per_query:
        write_per_query(args.per_query, per_query)
    if args.metrics_json:
        from resrank_jax.paths import as_path

        as_path(args.metrics_json).write_text(json.dumps(payload, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m resrank_jax.cli.rerank ...`` (the same as ``resrank rerank ...``)."""
    from resrank_jax.cli import run_subcommand

    return run_subcommand("rerank", argv)


if __name__ == "__main__":
    sys.exit(main())
