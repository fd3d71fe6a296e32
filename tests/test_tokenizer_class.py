"""Tokenizers load through the class the checkpoint names, as ``AutoTokenizer`` would load
them, and loading one imports no torch even where torch is installed."""

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

from resrank_jax.hf.gguf_file import _ARCHS
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.hf.tokenizer_class import GGUF_TOKENIZER_CLASSES, load_hf_tokenizer

TEXTS = ["Hello world", "A query about CRISPR, ünïcödé and 1234567 apples", ""]


def test_gguf_classes_are_transformers_own_mapping():
    assert set(GGUF_TOKENIZER_CLASSES) == set(_ARCHS)
    for arch in _ARCHS:
        expected = TOKENIZER_MAPPING_NAMES.get(arch) or "TokenizersBackend"
        assert GGUF_TOKENIZER_CLASSES[arch] == expected, arch


@pytest.mark.parametrize("named", [True, False])
def test_directory_tokenizer_equals_autotokenizer(tmp_path, named):
    """With ``tokenizer_class`` in ``tokenizer_config.json`` (its class) and without it
    (``AutoTokenizer``): same class, ids and specials as ``AutoTokenizer``."""
    source = packaged_weights("all-minilm-l6-v2")
    path = tmp_path / "minilm"
    shutil.copytree(source, path, ignore=shutil.ignore_patterns("*.safetensors"))
    if not named:
        config = json.loads((path / "tokenizer_config.json").read_text())
        del config["tokenizer_class"]
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, ref = load_hf_tokenizer(path), AutoTokenizer.from_pretrained(str(source))
    assert type(ours) is type(ref)
    assert ours(TEXTS)["input_ids"] == ref(TEXTS)["input_ids"]
    assert ours.all_special_tokens == ref.all_special_tokens


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch installed")
def test_loading_tokenizers_imports_no_torch():
    """torch is installed here (test extra); loading the MiniLM (directory) and SmolLM2 (GGUF)
    tokenizers must still leave it unimported (~180 MB resident on a 12 GB Colab runtime)."""
    code = (
        "import sys\n"
        "from resrank_jax.hf.load import load_tokenizer\n"
        "from resrank_jax.hf.packaged import packaged_weights\n"
        "for name in ('all-minilm-l6-v2', 'smollm2-135m-instruct'):\n"
        "    load_tokenizer(packaged_weights(name))\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"
