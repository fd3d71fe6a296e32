"""Pooling conventions: Qwen3(-Embedding) pools ``<|endoftext|>`` (not its chat EOS), a
post-processor's own special token is used once or refused, sentence-transformers BERT
directories choose CLS or mean (and refuse what we cannot reproduce), other decoders keep EOS.

The Qwen-style tokenizers are built here with ``tokenizers`` (Qwen3's real special tokens and
ids), saved as ``tokenizer.json`` + ``tokenizer_config.json`` and loaded offline through
``transformers.AutoTokenizer``.
"""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer

from resrank_jax import init_backbone, load_backbone
from resrank_jax.hf.export import export_hf
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models.encoder import Encoder
from resrank_jax.models.pooling import l2_normalize, pool
from resrank_jax.pooling_conventions import (
    UnsupportedPoolingError,
    pooling_convention,
    sentence_transformers_pooling,
)
from resrank_jax.tokenizer import TextTokenizer, TokenizerCheckError
from tests.tiny_models import TINY_BERT, TINY_DECODER

ENDOFTEXT, IM_START, IM_END = 151643, 151644, 151645
WORDS = ["<unk>", "a", "man", "is", "eating", "food", ".", "bread"]
TEXTS = ["a man is eating food .", "a man", "bread"]


def qwen_tokenizer(path, *, appends=None, extra_specials=()):
    """A Qwen3-style tokenizer (eos ``<|im_end|>``, pad ``<|endoftext|>``) saved to ``path``
    and loaded with ``AutoTokenizer``; ``appends``: a token its post-processor appends."""
    specials = {"<|endoftext|>": ENDOFTEXT, "<|im_start|>": IM_START, "<|im_end|>": IM_END}
    specials.update(dict(extra_specials))
    vocab = {w: i for i, w in enumerate(WORDS)} | specials
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if appends is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {appends}", special_tokens=[(appends, specials[appends])]
        )
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(str(path))


def bert_tokenizer(path):
    """A BERT-style WordLevel tokenizer (``[CLS] $A [SEP]``) saved to ``path``."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS[1:]])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True) for t in ["[PAD]", "[CLS]", "[SEP]"]])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "unk_token": "[UNK]",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    return AutoTokenizer.from_pretrained(str(path))


def write_st_pooling(path, **modes):
    """sentence-transformers ``modules.json`` + ``1_Pooling/config.json`` with ``modes``."""
    modules = [
        {"idx": 0, "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (path / "modules.json").write_text(json.dumps(modules))
    (path / "1_Pooling").mkdir(parents=True, exist_ok=True)
    config = {"word_embedding_dimension": 24, "pooling_mode_cls_token": False}
    config.update({f"pooling_mode_{k}": v for k, v in modes.items()})
    (path / "1_Pooling" / "config.json").write_text(json.dumps(config))


def assert_one_pooling_token_last(tok, batch, token_id):
    for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True):
        real = ids[mask == 1]
        assert real[-1] == token_id
        assert real[-2] not in (ENDOFTEXT, IM_START, IM_END), real


# --- Qwen3 / Qwen3-Embedding -------------------------------------------------------------


def test_qwen3_tokenizer_pools_endoftext_not_the_chat_eos_and_pads_left(tmp_path):
    tok = TextTokenizer(qwen_tokenizer(tmp_path), pooling="last")
    assert tok.convention.kind == "qwen"
    assert (tok.eos_id, tok.pooling_id, tok.pad_id) == (IM_END, ENDOFTEXT, ENDOFTEXT)
    batch = tok.encode(TEXTS)
    assert tok.padding_side == "left"
    np.testing.assert_array_equal(batch.input_ids[:, -1], [ENDOFTEXT] * 3)
    assert not (batch.input_ids == IM_END).any()
    np.testing.assert_array_equal(batch.input_ids[2], [ENDOFTEXT] * 5 + [7, ENDOFTEXT])
    np.testing.assert_array_equal(batch.attention_mask[2], [0] * 5 + [1, 1])
    assert_one_pooling_token_last(tok, batch, ENDOFTEXT)


def test_qwen3_truncation_keeps_exactly_one_endoftext_last(tmp_path):
    tok = TextTokenizer(qwen_tokenizer(tmp_path), pooling="last")
    with pytest.warns(UserWarning, match="truncated"):
        batch = tok.encode(["a man is eating food .", "a man <|im_end|> food"], max_length=4)
    assert batch.num_truncated == 2
    np.testing.assert_array_equal(batch.input_ids[0], [1, 2, 3, ENDOFTEXT])
    # cut right after a special token of the text: it is dropped, never two specials last
    np.testing.assert_array_equal(batch.input_ids[1], [ENDOFTEXT, 1, 2, ENDOFTEXT])
    assert_one_pooling_token_last(tok, batch, ENDOFTEXT)


def test_post_processor_that_appends_endoftext_is_used_once(tmp_path):
    hf = qwen_tokenizer(tmp_path, appends="<|endoftext|>")
    assert hf("a man")["input_ids"] == [1, 2, ENDOFTEXT]  # the tokenizer appends it itself
    tok = TextTokenizer(hf, pooling="last")
    assert not tok.appends_pooling_token
    batch = tok.encode([*TEXTS, "food <|endoftext|>"])
    np.testing.assert_array_equal(batch.input_ids[1], [ENDOFTEXT] * 4 + [1, 2, ENDOFTEXT])
    assert_one_pooling_token_last(tok, batch, ENDOFTEXT)
    # the text's own trailing <|endoftext|> is dropped: one pooling token after 5 pads
    np.testing.assert_array_equal(batch.input_ids[3], [ENDOFTEXT] * 5 + [5, ENDOFTEXT])
    with pytest.warns(UserWarning, match="truncated"):
        truncated = tok.encode(["a man is eating food ."], max_length=3)
    np.testing.assert_array_equal(truncated.input_ids[0], [1, 2, ENDOFTEXT])


@pytest.mark.parametrize(
    ("appends", "extra"),
    [("</s>", {"</s>": 9}), ("<|im_end|>", {})],
    ids=["slash-s", "chat-eos"],
)
def test_post_processor_that_appends_another_special_token_is_refused(tmp_path, appends, extra):
    hf = qwen_tokenizer(tmp_path, appends=appends, extra_specials=extra)
    pattern = rf"appends \['{re.escape(appends)}'\].*'<\|endoftext\|>'"
    with pytest.raises(TokenizerCheckError, match=pattern):
        TextTokenizer(hf, pooling="last")


def test_qwen3_directory_flows_into_tokenizer_and_encoder(tmp_path):
    hf = qwen_tokenizer(tmp_path / "tok")
    export_hf(init_backbone(TINY_DECODER, seed=1), tmp_path / "qwen", tokenizer=hf)
    model, tok = load_backbone(tmp_path / "qwen")
    assert tok.convention is model.pooling_convention
    assert (tok.convention.kind, tok.convention.source) == ("qwen", "family qwen3")
    assert tok.pooling_id == ENDOFTEXT and tok.eos_id == IM_END
    assert Encoder(model).pooling == "last"
    assert tok.query_text("q", task="Find it") == "Instruct: Find it\nQuery:q"


# --- other decoders ------------------------------------------------------------------------


def test_llama_family_keeps_eos_even_with_qwen_token_names(tmp_path):
    hf = qwen_tokenizer(tmp_path)
    convention = pooling_convention(hf, family="llama")
    assert (convention.kind, convention.pooling_token) == ("decoder", None)
    tok = TextTokenizer(hf, convention=convention)
    assert tok.encode(["a man"]).input_ids[0, -1] == IM_END


def test_smollm2_vocabulary_is_not_mistaken_for_qwen(smollm2_tokenizer):
    # SmolLM2 has <|endoftext|>, <|im_start|>, <|im_end|> too (ids 0-2) and pools on its EOS
    assert smollm2_tokenizer.convention.kind == "decoder"
    assert smollm2_tokenizer.pooling_id == smollm2_tokenizer.eos_id == 2
    assert smollm2_tokenizer.encode(["A man is eating food."]).input_ids[0, -1] == 2


# --- sentence-transformers BERT --------------------------------------------------------------


@pytest.mark.parametrize(
    ("modes", "expected"),
    [({"cls_token": True}, "cls"), ({"mean_tokens": True}, "mean"), ({}, None)],
    ids=["cls", "mean", "absent"],
)
def test_sentence_transformers_pooling_is_read(tmp_path, modes, expected):
    if modes:
        write_st_pooling(tmp_path, **modes)
    assert sentence_transformers_pooling(tmp_path)[0] == expected
    convention = pooling_convention(family="bert", model_dir=tmp_path)
    assert (convention.pooling, convention.padding_side) == (expected or "mean", "right")
    assert convention.query_text("q", "Find it") == "q"


@pytest.mark.parametrize(
    "mode",
    ["max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens", "lasttoken"],
)
def test_unsupported_sentence_transformers_pooling_is_a_clear_error(tmp_path, mode):
    write_st_pooling(tmp_path, **{mode: True})
    with pytest.raises(UnsupportedPoolingError, match=r"1_Pooling/config.json.*not supported"):
        pooling_convention(family="bert", model_dir=tmp_path)


def test_two_pooling_modes_at_once_are_refused(tmp_path):
    write_st_pooling(tmp_path, mean_tokens=True, max_tokens=True)
    with pytest.raises(UnsupportedPoolingError, match="pooling_mode_mean_tokens"):
        sentence_transformers_pooling(tmp_path)


def test_packaged_minilm_declares_mean_pooling():
    path = packaged_weights("all-minilm-l6-v2")
    assert (path / "modules.json").exists() and (path / "1_Pooling" / "config.json").exists()
    convention = pooling_convention(family="bert", model_dir=path)
    assert convention.pooling == "mean"
    assert convention.source.endswith("1_Pooling/config.json")


@pytest.mark.parametrize("mode", ["cls", "mean"])
def test_sentence_transformers_bert_directory_sets_encoder_pooling(tmp_path, mode):
    hf = bert_tokenizer(tmp_path / "tok")
    export_hf(init_backbone(TINY_BERT, seed=3), tmp_path / "bert", tokenizer=hf)
    write_st_pooling(tmp_path / "bert", **{"cls_token" if mode == "cls" else "mean_tokens": True})
    model, tok = load_backbone(tmp_path / "bert")
    encoder = Encoder(model)
    assert encoder.pooling == tok.pooling == mode
    batch = tok.encode(["a man is eating food .", "bread"])
    ids, mask = jnp.asarray(batch.input_ids), jnp.asarray(batch.attention_mask)
    expected = l2_normalize(pool(model(ids, attention_mask_bl=mask), mask, mode))
    np.testing.assert_allclose(encoder(ids, mask), expected, atol=1e-6)
    other = "mean" if mode == "cls" else "cls"
    assert not np.allclose(encoder(ids, mask), Encoder(model, other)(ids, mask), atol=1e-3)


def test_unsupported_pooling_directory_fails_at_load(tmp_path):
    hf = bert_tokenizer(tmp_path / "tok")
    export_hf(init_backbone(TINY_BERT, seed=3), tmp_path / "bert", tokenizer=hf)
    write_st_pooling(tmp_path / "bert", max_tokens=True)
    with pytest.raises(UnsupportedPoolingError, match="pooling_mode_max_tokens"):
        load_backbone(tmp_path / "bert")


def test_decoder_directory_with_mean_pooling_is_refused(tmp_path):
    write_st_pooling(tmp_path, mean_tokens=True)
    with pytest.raises(UnsupportedPoolingError, match="decoder"):
        pooling_convention(family="qwen3", model_dir=tmp_path)
    write_st_pooling(tmp_path, lasttoken=True)  # Qwen3-Embedding's own files
    assert pooling_convention(family="qwen3", model_dir=tmp_path).pooling_token == "<|endoftext|>"
