"""The package as users get it (slow; ``make test-wheel``): a real wheel (not editable) built
from the sources, installed with ``--no-deps`` into a fresh virtual environment, then run from
a temporary directory that is not the repository: ``resrank --help``, ``resrank train --config
tiny`` (presets and the SciFact training data from the wheel), ``resrank eval`` on the packaged
DL19 copy, and ``resrank rerank --help``.

The fresh environment gets the dependencies from this one without downloading them: a ``.pth``
file appends this environment's site-packages *after* its own, so ``resrank_jax`` itself can
only come from the wheel (asserted)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.wheel]

ROOT = Path(__file__).resolve().parent.parent
BUILD_INPUTS = ("pyproject.toml", "README.md", "resrank_jax")


def run(cmd: list, cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(bin dir, environment)`` of a fresh venv with only the wheel installed."""
    base = tmp_path_factory.mktemp("wheel")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    src.mkdir()
    for name in BUILD_INPUTS:  # a copy: the build writes build/ and *.egg-info beside it
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # one device, as on a user's CPU machine (conftest adds 8 fake ones)
    flags = env.get("XLA_FLAGS", "").split()
    env["XLA_FLAGS"] = " ".join(f for f in flags if "device_count" not in f)
    # offline when this environment has setuptools (else pip fetches the build backend)
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", dist]
    run([*build, src], base, env)
    (wheel,) = dist.glob("resrank_jax-*.whl")
    run([sys.executable, "-m", "venv", venv], base, env)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", wheel], base, env)
    site = run(
        [bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        base,
        env,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "zz_resrank_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return bin_dir, env, Path(venv)


@pytest.fixture
def workdir(tmp_path):
    """A working directory that is not the repository (no data/, configs/ or train.py)."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def test_the_package_comes_from_the_wheel(installed, workdir):
    bin_dir, env, venv = installed
    code = (
        "import resrank_jax, resrank_jax.configs.presets as p, resrank_jax.data.bundled as b;"
        "print(resrank_jax.__file__); print(p.__file__); print(b.data_dir())"
    )
    lines = run([bin_dir / "python", "-c", code], workdir, env).stdout.split()
    for line in lines:
        assert Path(line).resolve().is_relative_to(venv.resolve()), lines
    assert (Path(lines[2]) / "scifact" / "corpus.jsonl").is_file()


def test_help_lists_the_subcommands(installed, workdir):
    bin_dir, env, _ = installed
    out = run([bin_dir / "resrank", "--help"], workdir, env).stdout
    for name in ("train", "eval", "rerank", "index", "export", "serve", "demo"):
        assert f"    {name} " in out, out


def test_train_tiny_from_a_temporary_directory(installed, workdir):
    bin_dir, env, _ = installed
    cmd = [bin_dir / "resrank", "train", "--config", "tiny", "--output-dir", "out"]
    proc = run([*cmd, "steps=2", "--quiet"], workdir, env)
    assert "done: 2 steps" in proc.stdout
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    assert summary["steps"] == 2
    assert (workdir / "out" / "export").is_dir()
    assert not (workdir / "data").exists()  # the data came from the wheel


def test_eval_reads_the_packaged_data(installed, workdir):
    bin_dir, env, _ = installed
    cmd = [bin_dir / "resrank", "eval", "--candidates", "data/trec-dl19/candidates.jsonl"]
    cmd += ["--qrels", "data/trec-dl19/qrels.txt", "--ranker", "bm25", "--quiet"]
    run([*cmd, "--metrics-json", "m.json"], workdir, env)
    metrics = json.loads((workdir / "m.json").read_text())
    assert round(metrics["nDCG@10"], 4) == 0.5058 and metrics["queries"] == 43


def test_rerank_a_trec_run_without_qrels(installed, workdir):
    bin_dir, env, _ = installed
    from resrank_jax.data.formats import read_candidates

    queries = read_candidates(ROOT / "data/trec-dl19/candidates.jsonl")[:2]
    with open(workdir / "first.run", "w") as run_file, open(workdir / "topics.tsv", "w") as t:
        for qc in queries:
            t.write(f"{qc.qid}\t{qc.query}\n")
            for rank, c in enumerate(qc.candidates, 1):
                run_file.write(f"{qc.qid} Q0 {c.docid} {rank} {c.score} bm25\n")
    with open(workdir / "corpus.tsv", "w") as corpus:
        for c in {c.docid: c for qc in queries for c in qc.candidates}.values():
            corpus.write(f"{c.docid}\t{c.text}\n")
    cmd = [bin_dir / "resrank", "rerank", "--run", "first.run", "--topics", "topics.tsv"]
    cmd += ["--corpus", "corpus.tsv", "--ranker", "bm25", "--depth", "20"]
    run([*cmd, "--output-trec", "reranked.run", "--quiet"], workdir, env)
    lines = (workdir / "reranked.run").read_text().splitlines()
    by_query = {
        qc.qid: [ln.split()[2] for ln in lines if ln.split()[0] == qc.qid] for qc in queries
    }
    for qc in queries:  # every candidate once; below the depth, the first-stage order
        assert sorted(by_query[qc.qid]) == sorted(c.docid for c in qc.candidates)
        assert by_query[qc.qid][20:] == [c.docid for c in qc.candidates[20:]]
