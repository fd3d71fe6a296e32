"""The ``resrank`` command (``resrank_jax.cli``): subcommands dispatched from one table and
imported lazily, errors through ``run_cli``, and presets and data found from any directory
(``resrank_jax.configs``, ``resrank_jax.data.bundled``). The wheel itself: ``test_wheel.py``."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from resrank_jax import cli
from resrank_jax.cli import SUBCOMMANDS, Subcommand
from resrank_jax.data.bundled import DATA_ENV, packaged_data_dir, resolve_data_path

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def test_help_lists_every_subcommand_without_importing_jax(tmp_path):
    proc = python(
        """
        import sys
        from resrank_jax.cli import main
        try:
            main(["--help"])
        except SystemExit as e:
            print("exit", e.code)
        print("jax imported:", "jax" in sys.modules)
        """,
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "exit 0" in proc.stdout and "jax imported: False" in proc.stdout
    for name, entry in SUBCOMMANDS.items():
        assert f"{name}  " in proc.stdout and entry.help in proc.stdout


@pytest.fixture
def fake_command(tmp_path, monkeypatch):
    """A subcommand module ``resrank_fake_cmd`` whose ``run`` does what ``--mode`` says."""
    (tmp_path / "resrank_fake_cmd.py").write_text(
        textwrap.dedent(
            '''
            """A fake subcommand for the tests."""
            from resrank_jax.errors import ConfigError

            def add_arguments(p):
                p.add_argument("--mode", default="ok")

            def check_args(p, args):
                if args.mode == "bad-flag":
                    p.error("--mode bad-flag is refused")

            def run(args):
                if args.mode == "user-error":
                    raise ConfigError("the config is wrong\\nin two lines")
                if args.mode == "bug":
                    raise RuntimeError("a bug")
                print("ran", args.mode, args.debug)
                return 7
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(SUBCOMMANDS, "fake", Subcommand("resrank_fake_cmd", "a fake command"))
    return "fake"


def test_dispatch_runs_the_chosen_module(fake_command, capsys):
    assert cli.main([fake_command, "--mode", "hello"]) == 7
    assert capsys.readouterr().out == "ran hello False\n"
    assert cli.run_subcommand(fake_command, ["--mode", "again", "--debug"]) == 7
    assert capsys.readouterr().out == "ran again True\n"


def test_user_errors_are_one_line_and_debug_raises(fake_command, capsys):
    assert cli.main([fake_command, "--mode", "user-error"]) == 2
    assert capsys.readouterr().err == "error: the config is wrong in two lines\n"
    with pytest.raises(Exception, match="the config is wrong"):
        cli.main([fake_command, "--mode", "user-error", "--debug"])
    with pytest.raises(RuntimeError, match="a bug"):  # a bug keeps its traceback
        cli.main([fake_command, "--mode", "bug"])
    with pytest.raises(SystemExit) as exit_:
        cli.main([fake_command, "--mode", "bad-flag"])
    assert exit_.value.code == 2
    assert "--mode bad-flag is refused" in capsys.readouterr().err


def test_a_subcommand_without_its_module_is_one_line_exit_2(monkeypatch, capsys):
    monkeypatch.setitem(SUBCOMMANDS, "ghost", Subcommand("resrank_jax.cli.ghost", "not yet"))
    assert cli.main(["ghost", "--anything"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: resrank ghost: not available in this version of resrank_jax "
        "(resrank_jax.cli.ghost is missing)"
    ]


def test_unknown_or_missing_command_is_a_usage_error(capsys):
    for argv in ([], ["nosuchcommand"]):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        assert exit_.value.code == 2
    capsys.readouterr()


@pytest.mark.parametrize(
    "name",
    [n for n in SUBCOMMANDS if importlib.util.find_spec(SUBCOMMANDS[n].module) is not None],
)
def test_every_present_subcommand_has_help(name, capsys):
    module = cli.load_subcommand(name)
    assert callable(module.add_arguments) and callable(module.run)
    with pytest.raises(SystemExit) as exit_:
        cli.main([name, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: resrank {name}") and "--debug" in out


def test_train_from_another_directory_refuses_a_bad_override(tmp_path):
    """Presets are a module of the package: any working directory finds them."""
    argv = ["train", "--config", "tiny", "--output-dir", "out", "steps=abc"]
    proc = subprocess.run(
        [sys.executable, "-m", "resrank_jax.cli", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: steps='abc' is not an int"), lines
    assert not (tmp_path / "out").exists()


def test_the_repository_links_configs_and_data_into_the_package():
    assert (ROOT / "configs").resolve() == (ROOT / "resrank_jax" / "configs").resolve()
    assert (ROOT / "data").resolve() == packaged_data_dir()
    assert (ROOT / "configs" / "presets.py").is_file()


def test_data_paths_resolve_against_the_packaged_copy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ENV, raising=False)
    packaged = packaged_data_dir() / "scifact" / "corpus.jsonl"
    assert resolve_data_path("data/scifact/corpus.jsonl") == str(packaged)
    # a file of the current directory wins
    (tmp_path / "data" / "scifact").mkdir(parents=True)
    (tmp_path / "data" / "scifact" / "corpus.jsonl").write_text("{}\n")
    assert resolve_data_path("data/scifact/corpus.jsonl") == "data/scifact/corpus.jsonl"
    # $RESRANK_DATA replaces the packaged copy
    other = tmp_path / "other"
    (other / "trec-dl19").mkdir(parents=True)
    (other / "trec-dl19" / "qrels.txt").write_text("1 0 d 1\n")
    monkeypatch.setenv(DATA_ENV, str(other))
    assert resolve_data_path("data/trec-dl19/qrels.txt") == str(other / "trec-dl19/qrels.txt")
    with pytest.raises(FileNotFoundError) as err:
        resolve_data_path("data/trec-dl19/candidates.jsonl")
    assert err.value.filename == str(tmp_path / "data/trec-dl19/candidates.jsonl")
    assert str(other / "trec-dl19/candidates.jsonl") in err.value.strerror
    # anything else is read as written
    for name in ("", "x/data/y.jsonl", "/abs/data/y", "gs://bucket/data/y", "data"):
        assert resolve_data_path(name) == name


def test_training_defaults_read_the_packaged_data_from_any_directory(tmp_path, monkeypatch):
    from resrank_jax.config import resolve_config

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(DATA_ENV, raising=False)
    data = resolve_config("tiny").data
    assert data.candidates == "data/scifact/candidates.train.jsonl"  # the config as written
    for key in ("candidates", "corpus", "qrels"):
        assert Path(data.file(key)).is_file() and Path(data.file(key)).is_relative_to(
            packaged_data_dir()
        )
    assert data.file("teacher") == ""


def test_the_library_reads_no_repository_relative_path():
    """Only ``resrank_jax/data/bundled.py`` locates files from the package's own path."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "resrank_jax").rglob("*.py")
        if "__file__" in p.read_text() and p.name != "bundled.py"
    ]
    assert offenders == []
