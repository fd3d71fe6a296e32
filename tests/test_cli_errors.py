"""Errors for people: ``train.py`` and ``eval.py`` turn bad input, config and files into one
line on stderr and exit status 2 (``--debug``: the traceback); a bug keeps its traceback.

Every broken input here fails before a model is built, so each subprocess costs an import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resrank_jax.cli_errors import run_cli
from resrank_jax.data.formats import DataFormatError
from resrank_jax.errors import ConfigError, UserError
from resrank_jax.rerank.encode import CacheMismatchError

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"qid": "1", "query": "q", "candidates": [{"docid": "d1", "score": 1.0, "text": "t"}]}


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, script, *map(str, args)]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single stderr line of a user error (and nothing else on stderr)."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def inputs(tmp_path):
    """A good candidate file and TREC qrels, and the broken files the cases name."""
    files = {
        "good": json.dumps(GOOD) + "\n",
        "broken.jsonl": json.dumps(GOOD) + '\n{"qid": "2", "query": \n',
        "empty.jsonl": "",
        "qrels.txt": "1 0 d1 1\n",
        "empty-qrels.txt": "\n",
        "headerless.tsv": "1 0 1017759\n",
        "grade.txt": "1 0 d1 1\n1 0 d2 1017759\n",
        "no-text.jsonl": json.dumps({"qid": "1", "query": "q", "candidates": [{"docid": "d1"}]})
        + "\n",
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


EVAL_CASES = {  # (files: candidates, qrels, corpus), what the line says
    "broken JSONL line": (("broken.jsonl", "qrels.txt", None), "broken.jsonl:2: malformed JSON"),
    "empty candidates": (("empty.jsonl", "qrels.txt", None), "empty.jsonl: no queries in file"),
    "empty corpus": (("no-text.jsonl", "qrels.txt", "empty.jsonl"), "empty.jsonl: no documents"),
    "missing candidates": (("missing.jsonl", "qrels.txt", None), "missing.jsonl: No such file"),
    "candidates a directory": (("dir", "qrels.txt", None), "dir: Is a directory"),
    "missing qrels": (("good", "missing.txt", None), "missing.txt: No such file or directory"),
    "empty qrels": (("good", "empty-qrels.txt", None), "empty-qrels.txt: no judgments in file"),
    "headerless 3-column qrels": (
        ("good", "headerless.tsv", None),
        "headerless.tsv:1: 3 columns '1 0 1017759': neither TREC qrels ('qid 0 docid rel')",
    ),
    "grade out of range": (
        ("good", "grade.txt", None),
        "grade.txt:2: relevance 1017759 is outside -1..100",
    ),
}


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_user_errors_are_one_line(inputs, case):
    (candidates, qrels, corpus), fragment = EVAL_CASES[case]
    (inputs / "dir").mkdir()
    argv = ["--candidates", inputs / candidates, "--qrels", inputs / qrels, "--ranker", "bm25"]
    argv += ["--quiet", *(["--corpus", inputs / corpus] if corpus else [])]
    line = one_error_line(run("eval.py", *argv))
    assert f"error: {inputs}/" in line  # the file, named by its path
    assert fragment in line


TRAIN_CASES = {
    "not an int": (["--config", "tiny", "steps=abc"], "steps='abc' is not an int"),
    "unknown key": (["--config", "tiny", "nosuchkey=1"], "unknown config key 'nosuchkey'"),
    "not key=value": (["--config", "tiny", "steps"], "override 'steps' is not key=value"),
    "unknown preset": (["--config", "nosuchpreset"], "unknown preset 'nosuchpreset'"),
    "unknown model": (["--config", "tiny", "model.mode=nope"], "unknown model 'nope'"),
    "validate": (["--config", "tiny", "steps=0"], "steps=0 must be >= 1"),
}


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_train_config_errors_are_one_line(tmp_path, case):
    flags, fragment = TRAIN_CASES[case]
    line = one_error_line(run("train.py", "--output-dir", tmp_path / "out", *flags))
    assert fragment in line
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_debug_shows_the_traceback(inputs):
    proc = run(
        "eval.py",
        *("--candidates", inputs / "broken.jsonl", "--qrels", inputs / "qrels.txt"),
        *("--ranker", "bm25", "--quiet", "--debug"),
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "DataFormatError: " in proc.stderr
    assert "broken.jsonl:2: malformed JSON" in proc.stderr


def test_train_debug_shows_the_traceback(tmp_path):
    proc = run("train.py", "--config", "tiny", "--output-dir", tmp_path, "steps=abc", "--debug")
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigError: steps='abc'" in proc.stderr


# run_cli in process: what maps to status 2 / 130 and what stays a traceback


def fails(err: BaseException):
    def work() -> int:
        raise err

    return work


@pytest.mark.parametrize(
    ("err", "line"),
    [
        (DataFormatError("c.jsonl", 3, "missing field 'qid'"), "error: c.jsonl:3: missing field"),
        (ConfigError("steps=0 must be >= 1"), "error: steps=0 must be >= 1"),
        (CacheMismatchError("x.npz: vectors of another encoder"), "error: x.npz: vectors of"),
        (FileNotFoundError(2, "No such file or directory", "a.txt"), "error: a.txt: No such file"),
        (IsADirectoryError(21, "Is a directory", "d"), "error: d: Is a directory"),
        (PermissionError(13, "Permission denied", "p"), "error: p: Permission denied"),
        (FileNotFoundError("run: no committed checkpoint"), "error: run: no committed checkpoint"),
        (UserError("two\n  lines"), "error: two lines"),
    ],
)
def test_run_cli_maps_user_errors_to_one_line(capsys, err, line):
    assert run_cli(fails(err)) == 2
    printed = capsys.readouterr().err
    assert printed.startswith(line) and printed.count("\n") == 1 and printed.endswith("\n")
    with pytest.raises(type(err)):
        run_cli(fails(err), debug=True)


def test_run_cli_interrupt_and_bugs(capsys):
    assert run_cli(fails(KeyboardInterrupt())) == 130
    with pytest.raises(KeyboardInterrupt):
        run_cli(fails(KeyboardInterrupt()), debug=True)
    with pytest.raises(RuntimeError, match="a bug"):
        run_cli(fails(RuntimeError("a bug")))
    with pytest.raises(ValueError, match="plain"):  # not a UserError: a traceback
        run_cli(fails(ValueError("plain")))
    assert run_cli(lambda: 0) == 0
    capsys.readouterr()
