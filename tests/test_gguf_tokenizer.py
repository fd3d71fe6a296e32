"""GGUF tokenizers are built without transformers' GGUF reader (which imports torch, not a
dependency of resrank_jax) and equal what ``AutoTokenizer.from_pretrained(gguf_file=...)``
builds from the same file, with the metadata's special tokens and flags applied."""

import subprocess
import sys

import pytest

from resrank_jax.hf.gguf_file import GGUFFile
from resrank_jax.hf.packaged import packaged_weights

TEXTS = [
    "Hello world",
    "  leading spaces, ünïcödé, 日本語 and an emoji 🤗",
    "tabs\tand\nnew lines\n\n",
    "<|im_start|>user\nhi<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>",
    "3.14159 and 1234567 apples",
    "",
]


def reference(gguf: GGUFFile):
    """transformers' own GGUF tokenizer, with the metadata's specials and flags applied (what
    ``load_tokenizer`` returned before it stopped going through transformers' reader)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.path.parent), gguf_file=gguf.path.name)
    ids = gguf.special_token_ids()
    for attr, key in (("bos_token", "bos"), ("eos_token", "eos"), ("pad_token", "padding")):
        if ids[key] is not None:
            setattr(tok, attr, tok.convert_ids_to_tokens(int(ids[key])))
    tok.add_bos_token = bool(gguf.meta("tokenizer.ggml.add_bos_token", False))
    tok.add_eos_token = bool(gguf.meta("tokenizer.ggml.add_eos_token", False))
    return tok


def chat(tok) -> str | None:
    if tok.chat_template is None:
        return None
    messages = [{"role": "user", "content": "Rank these passages."}]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def assert_same_tokenizer(ours, ref) -> None:
    assert type(ours) is type(ref)
    for special in (True, False):
        assert (
            ours(TEXTS, add_special_tokens=special)["input_ids"]
            == (ref(TEXTS, add_special_tokens=special)["input_ids"])
        )
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "padding_side"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    assert (ours.add_bos_token, ours.add_eos_token) == (ref.add_bos_token, ref.add_eos_token)
    assert sorted(ours.all_special_ids) == sorted(ref.all_special_ids)
    assert sorted(ours.added_tokens_decoder) == sorted(ref.added_tokens_decoder)
    assert ours.get_vocab() == ref.get_vocab() and len(ours) == len(ref)
    assert chat(ours) == chat(ref)
    ids = ref(TEXTS[1])["input_ids"]
    assert ours.decode(ids) == ref.decode(ids)


def test_smollm2_tokenizer_equals_transformers_gguf_tokenizer():
    gguf = GGUFFile(packaged_weights("smollm2-135m-instruct"))
    ours = gguf.load_tokenizer()
    assert chat(ours) is not None  # ChatML from the file's metadata
    assert_same_tokenizer(ours, reference(gguf))


@pytest.mark.slow  # transformers' reader takes ~45 s on Gemma's 262k-token vocabulary
def test_gemma3_tokenizer_equals_transformers_gguf_tokenizer():
    gguf = GGUFFile(packaged_weights("gemma3-270m"))
    assert_same_tokenizer(gguf.load_tokenizer(), reference(gguf))


def test_gguf_tokenizer_loads_where_torch_is_not_installed(smollm2_tokenizer):
    """A fresh process in which ``import torch`` fails (as on an install without the test
    extra) loads the SmolLM2 tokenizer and tokenises as in this process."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from resrank_jax.hf.load import load_tokenizer\n"
        "from resrank_jax.hf.packaged import packaged_weights\n"
        "tok = load_tokenizer(packaged_weights('smollm2-135m-instruct'), pooling='last')\n"
        f"print(tok.hf({TEXTS!r}, add_special_tokens=True)['input_ids'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = smollm2_tokenizer.hf(TEXTS, add_special_tokens=True)["input_ids"]
    assert proc.stdout.strip().splitlines()[-1] == str(expected)
