"""Peak resident memory (RSS) per phase of the demo: loading, compiling, training steps,
checkpoint saves, export, loading the rankers and evaluation.

    python benchmarks/memory.py [--modes reduced default] [--name memory] [--runs runs/memory]

Each mode runs ``resrank demo`` (``--reduced`` or the default) in a fresh process of its own
(the peak of one run must not carry into the next) with ``resrank_jax.rss.PHASES`` recording:
the kernel's peak RSS is reset when a phase starts and read when it ends, so each phase
reports its own peak. Both trained models count toward the same phases. The demo's runs and
tables stay in ``--runs``/<mode> (the default mode's are the README's demo table); each
mode's directory is emptied first, since a demo that finds finished runs skips training. Writes
``benchmarks/results/memory.json``: per mode the phases' peaks (GB = 1e9 bytes), the overall
peak, the wall time and the demo's nDCG@10 rows (what the memory was spent on). Linux only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, write_result

ROOT = Path(__file__).resolve().parent.parent
MODES = {"reduced": ["--reduced"], "default": []}


def child(mode: str, output_dir: str, result_file: str) -> None:
    """In the measured process: the demo with phase recording, the peaks to ``result_file``."""
    from resrank_jax.apps import demo
    from resrank_jax.rss import PHASES, peak_rss_gb

    PHASES.start()
    with PHASES.phase("startup + imports"):
        pass  # the peak so far (interpreter and imports) is credited here
    status = demo.main([*MODES[mode], "--output-dir", output_dir])
    with PHASES.phase("exit"):
        pass
    peaks = dict(PHASES.peaks_gb)
    peaks["exit"] = max(peaks["exit"], peak_rss_gb())
    Path(result_file).write_text(json.dumps({"status": status, "phases_gb": peaks}))


def measure(mode: str, runs: Path) -> dict:
    """Runs ``mode`` in a child process; returns its phase peaks, overall peak, seconds and
    the demo's nDCG@10 per row."""
    out = runs / mode
    shutil.rmtree(out, ignore_errors=True)  # a resumed demo would skip training: start afresh
    out.mkdir(parents=True)
    result = out / "memory.json"
    started = time.perf_counter()
    code = f"from benchmarks.memory import child; child({mode!r}, {str(out)!r}, {str(result)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    phases = json.loads(result.read_text())["phases_gb"]
    rows = json.loads((out / "results.json").read_text())["rows"]
    return {
        "peak_gb": max(phases.values()),
        "phases_gb": {k: round(v, 3) for k, v in phases.items()},
        "seconds": seconds,
        "ndcg@10": {name: row["nDCG@10"] for name, row in rows.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--name", default="memory")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "memory")
    args = parser.parse_args()
    results = {}
    for mode in args.modes:
        results[mode] = measure(mode, args.runs.resolve())
        print(f"{mode}: peak {results[mode]['peak_gb']:.2f} GB", results[mode]["phases_gb"])
    path = write_result(args.name, {"device": device_name(), "modes": results})
    print(f"saved {path}")


if __name__ == "__main__":
    main()
