"""The ``resrank`` command: one entry point, a subcommand per task.

    resrank train --config tiny --output-dir runs/tiny steps=4
    resrank eval --candidates data/trec-dl19/candidates.jsonl --qrels data/trec-dl19/qrels.txt \\
        --ranker bm25
    resrank demo --reduced
    resrank COMMAND --help

Each subcommand is a module of this package (``SUBCOMMANDS``) with ``add_arguments(parser)``
and ``run(args) -> int``, and optionally ``check_args(parser, args)`` for checks across flags
(``parser.error`` on failure). Only the chosen module is imported, so ``resrank --help``
lists the subcommands (help lines from the table) without importing JAX. Every subcommand
gets ``--debug``; errors end as ``resrank_jax.cli_errors.run_cli`` says: a user error in one
line and exit status 2 (``--debug``: the traceback). ``train.py`` and ``eval.py`` in the
repository are ``run_subcommand("train")`` / ``("eval")`` under their old names.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from types import ModuleType
from typing import NamedTuple

from resrank_jax.cli_errors import EXIT_USER_ERROR, add_debug_flag, run_cli


class Subcommand(NamedTuple):
    module: str
    help: str


SUBCOMMANDS: dict[str, Subcommand] = {
    "train": Subcommand("resrank_jax.cli.train", "train a preset (resumes a rerun)"),
    "eval": Subcommand("resrank_jax.cli.eval", "rerank candidate sets and report IR metrics"),
    "rerank": Subcommand("resrank_jax.cli.rerank", "rerank candidates with a trained model"),
    "index": Subcommand("resrank_jax.cli.index", "build a dense index of a corpus"),
    "export": Subcommand("resrank_jax.cli.export", "export a trained run as an artifact"),
    "serve": Subcommand("resrank_jax.cli.serve", "serve a reranker over HTTP"),
    "demo": Subcommand("resrank_jax.cli.demo", "train two ResRank models and rank DL19/SciFact"),
}


class MissingSubcommandError(Exception):
    """A subcommand of the table whose module this installation does not have."""


def load_subcommand(name: str) -> ModuleType:
    """The module of subcommand ``name``.

    Raises:
        MissingSubcommandError: the module does not exist (an error inside an existing module
            propagates as it is).
    """
    module = SUBCOMMANDS[name].module
    if importlib.util.find_spec(module) is None:
        raise MissingSubcommandError(
            f"resrank {name}: not available in this version of resrank_jax ({module} is missing)"
        )
    return importlib.import_module(module)


def _add_arguments(module: ModuleType, parser: argparse.ArgumentParser) -> None:
    module.add_arguments(parser)
    if "--debug" not in parser._option_string_actions:  # a module may add it itself
        add_debug_flag(parser)


def _description(module: ModuleType, name: str) -> str:
    doc = (module.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else SUBCOMMANDS[name].help


def _run(module: ModuleType, parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    check = getattr(module, "check_args", None)
    if check is not None:
        check(parser, args)
    return run_cli(lambda: module.run(args), debug=args.debug)


def subcommand_parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A standalone parser for subcommand ``name`` (what ``train.py``/``eval.py`` parse)."""
    module = load_subcommand(name)
    parser = argparse.ArgumentParser(prog=prog, description=_description(module, name))
    _add_arguments(module, parser)
    return parser


def parse_subcommand(name: str, argv: list[str] | None = None) -> argparse.Namespace:
    """``argv`` parsed and checked as subcommand ``name``'s flags alone."""
    module = load_subcommand(name)
    parser = subcommand_parser(name)
    args = parser.parse_args(argv)
    check = getattr(module, "check_args", None)
    if check is not None:
        check(parser, args)
    return args


def run_subcommand(name: str, argv: list[str] | None = None) -> int:
    """Runs subcommand ``name`` on ``argv`` (default: ``sys.argv[1:]``) without the
    ``resrank NAME`` prefix: the repository's ``train.py`` and ``eval.py``."""
    module = load_subcommand(name)
    parser = subcommand_parser(name)
    return _run(module, parser, parser.parse_args(argv))


def _chosen(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names: its first word that is not an option (the top level
    has no option that takes a value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("resrank_jax")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    """``resrank COMMAND [flags]``: the exit status of the subcommand."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    parser = argparse.ArgumentParser(
        prog="resrank",
        description="ResRank / E2Rank listwise rerankers in JAX: train, evaluate, rerank, "
        "export, serve. `resrank COMMAND --help` shows a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _chosen(argv)
    sub = {
        name: commands.add_parser(name, help=entry.help, description=entry.help)
        for name, entry in SUBCOMMANDS.items()
    }
    if chosen not in SUBCOMMANDS:  # --help, --version, no command or an unknown one
        parser.parse_args(argv)
        return EXIT_USER_ERROR  # not reached: argparse exits
    try:
        module = load_subcommand(chosen)
    except MissingSubcommandError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    sub[chosen].description = _description(module, chosen)
    _add_arguments(module, sub[chosen])
    args = parser.parse_args(argv)
    return _run(module, sub[chosen], args)
