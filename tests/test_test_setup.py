"""What ``tests/conftest.py`` promises: pytest's own processes (xdist workers included)
compile without the persistent compilation cache, and the processes tests start (train.py
runs, the demo) share it."""

import os
import subprocess
import sys

import jax


def test_this_process_has_no_compilation_cache_and_its_children_have_it():
    assert jax.config.jax_compilation_cache_dir is None
    child = subprocess.run(
        [sys.executable, "-c", "import jax; print(jax.config.jax_compilation_cache_dir)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == os.environ["JAX_COMPILATION_CACHE_DIR"] != ""
