"""Test setup: 8 fake CPU devices (sharding tests), offline HF, one persistent compilation
cache for the processes tests start, shared tiny fixtures."""

import os
from pathlib import Path

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA compilation cache for the processes the tests start (train.py runs, the
# demo, the CLIs): a train step compiles once per test run, not once per process. Measured:
# tests/test_run_changes.py 635 s with it vs 873 s without (cold cache, both at once on 2
# cores). Only compiles over 1 s are kept: caching every compile (thousands) with a size limit
# (which scans the directory on each write) gave the whole suite no gain. The pytest processes
# themselves (xdist workers inherit the variables) compile without it: with it, a worker died
# once in CI (2026-12-07, a native crash in test_train_step.py, cause not found, never seen
# here), and long-lived processes that serialise and load many executables were its only new
# exposure. tests/test_test_setup.py checks both halves.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")

import jax
import pytest

jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(scope="session")
def minilm_tokenizer():
    """The real all-MiniLM-L6-v2 tokenizer (BERT WordPiece, mean pooling)."""
    from transformers import AutoTokenizer

    from resrank_jax.hf.packaged import packaged_weights
    from resrank_jax.tokenizer import TextTokenizer

    return TextTokenizer(
        AutoTokenizer.from_pretrained(str(packaged_weights("all-minilm-l6-v2"))), pooling="mean"
    )


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer from its GGUF file (ChatML chat template)."""
    from resrank_jax.hf.gguf_file import GGUFFile
    from resrank_jax.hf.packaged import packaged_weights
    from resrank_jax.tokenizer import TextTokenizer

    return TextTokenizer(
        GGUFFile(packaged_weights("smollm2-135m-instruct")).load_tokenizer(), pooling="last"
    )
