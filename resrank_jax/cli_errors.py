"""How ``train.py`` and ``eval.py`` end on errors: the user's mistakes (``UserError``: bad data,
config or options; a missing or unreadable file) as one line on stderr and exit status 2,
Ctrl-C as status 130, and anything else (a bug) with its traceback. ``--debug`` shows the
traceback of every error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from resrank_jax.errors import UserError

EXIT_USER_ERROR = 2  # as argparse exits on a bad command line
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

_FILE_ERRORS = (
    FileNotFoundError,
    FileExistsError,  # e.g. --output-dir names a file
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of input/config errors instead of one line",
    )


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def error_line(err: BaseException) -> str:
    """The one line a CLI prints for a user error or a file error."""
    if isinstance(err, OSError) and err.filename is not None:
        message = f"{err.filename}: {err.strerror or type(err).__name__}"
    else:
        message = str(err) or type(err).__name__
    return f"error: {_one_line(message)}"


def run_cli(work: Callable[[], int], *, debug: bool = False) -> int:
    """``work()``'s exit status; a ``UserError`` or a file that is missing, a directory or
    unreadable prints ``error: MESSAGE`` on stderr and gives 2, Ctrl-C gives 130. Other
    exceptions propagate with their traceback, as all do with ``debug``."""
    try:
        return work()
    except (UserError, *_FILE_ERRORS) as err:
        if debug:
            raise
        print(error_line(err), file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def run_parsed(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None = None,
) -> int:
    """A command's ``main``: ``run`` on ``argv`` parsed by ``parser`` (which has the
    ``--debug`` flag), under ``run_cli``."""
    args = parser.parse_args(argv)
    return run_cli(lambda: run(args), debug=args.debug)
