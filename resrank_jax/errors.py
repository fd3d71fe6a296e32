"""Errors that are the user's to fix, not the program's.

``train.py`` and ``eval.py`` print a ``UserError`` as one line (``error: MESSAGE``) and exit 2
(``--debug`` shows the traceback instead); any other exception is a bug and keeps its
traceback. See ``resrank_jax.cli_errors``.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, config or files; CLIs print it in one line and exit 2.
    The message says what is wrong and where (``file:line`` when there is one)."""


class ConfigError(UserError, ValueError):
    """A setting that is unknown, malformed or impossible: a preset name, a ``key=value``
    override, a combination of command-line options, or a model source that cannot serve."""


class ConfigKeyError(ConfigError, KeyError):
    """An unknown config key or name (also a ``KeyError``, as a lookup that failed)."""

    __str__ = Exception.__str__  # the message itself, not KeyError's quoted repr
