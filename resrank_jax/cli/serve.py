"""Serve a reranker over HTTP: POST rank_llm requests to /rerank, get the ranking back.

    resrank serve --ranker resrank --model runs/export/smol --port 8080
    resrank serve --ranker dense --model all-minilm-l6-v2 --depth 100 --max-batch 16
    curl -s localhost:8080/rerank -H 'content-type: application/json' \\
        -d '{"query": "what is a flea?", "candidates": [{"docid": "a", "doc": "..."}]}'

One ranker and its embedding cache serve every request; a worker thread ranks up to
--max-batch waiting requests in one call (``resrank_jax.serve``). Needs the ``serve`` extra
(fastapi, uvicorn). Ctrl-C stops it (and writes --embedding-cache).
"""

from __future__ import annotations

import argparse
import sys

from resrank_jax.cli.ranker_args import (
    add_ranker_source,
    ranker_from_args,
    save_embedding_cache,
    with_instructions,
)
from resrank_jax.cli.rerank import _window
from resrank_jax.errors import ConfigError

MISSING_EXTRA = "resrank serve needs fastapi and uvicorn: pip install 'resrank_jax[serve]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from resrank_jax.instructions import INSTRUCTIONS

    rk = p.add_argument_group("ranker")
    add_ranker_source(rk)
    rk.add_argument(
        "--depth",
        type=int,
        metavar="K",
        help="rerank the first K candidates of a request; the rest keep their given order "
        "below them (default: all)",
    )
    rk.add_argument("--window", type=int, metavar="W", help="sliding window size (as rerank)")
    rk.add_argument("--stride", type=int, metavar="S", help="sliding window step (as rerank)")
    rk.add_argument("--batch-size", type=int, default=32, help="passages per encoder call")
    rk.add_argument("--instructions", choices=INSTRUCTIONS, help="prompt instructions")
    rk.add_argument(
        "--embedding-cache",
        help=".npz of passage embeddings for this encoder: loaded if present, written at exit",
    )

    sv = p.add_argument_group("service")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    sv.add_argument(
        "--max-batch", type=int, default=8, help="requests ranked in one model call (default 8)"
    )
    sv.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long a request waits for others to batch with (default 5)",
    )
    sv.add_argument(
        "--max-candidates", type=int, default=1000, help="largest candidate list accepted"
    )


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Sizes that must be positive, a port that exists, a wait that is not negative."""
    for flag in ("depth", "batch_size", "max_batch", "max_candidates", "passage_max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    if args.max_wait_ms < 0:
        parser.error(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")


def _ranker(args: argparse.Namespace):
    """The ranker of the flags, its embedding cache loaded from --embedding-cache."""
    from resrank_jax.rerank.factory import check_window

    window = check_window(args.ranker, _window(args))
    return with_instructions(ranker_from_args(args, window=window), args.instructions, "")


def run(args: argparse.Namespace) -> int:
    """Builds the ranker, then serves until Ctrl-C."""
    try:
        import uvicorn

        from resrank_jax.serve import create_app
    except ModuleNotFoundError as err:
        if err.name in ("fastapi", "uvicorn", "starlette", "pydantic"):
            raise ConfigError(MISSING_EXTRA) from None
        raise
    ranker = _ranker(args)
    app = create_app(
        ranker,
        depth=args.depth,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_candidates=args.max_candidates,
    )
    print(
        f"serving {ranker.name} on http://{args.host}:{args.port} "
        "(POST /rerank, POST /rerank_batch, GET /health)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    save_embedding_cache(ranker, args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m resrank_jax.cli.serve ...`` (the same as ``resrank serve ...``)."""
    from resrank_jax.cli import run_subcommand

    return run_subcommand("serve", argv)


if __name__ == "__main__":
    sys.exit(main())
