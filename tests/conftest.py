"""Test setup: 8 fake CPU devices (sharding tests), offline HF, shared tiny fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest


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
