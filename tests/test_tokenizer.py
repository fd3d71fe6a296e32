"""Tokenizer checks at load time: EOS/pad present, pooling token appended, padding side.
(Per-model conventions, Qwen's <|endoftext|> and sentence-transformers pooling:
test_pooling_conventions.py.)"""

import warnings

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from resrank_jax.tokenizer import TextTokenizer, TokenizerCheckError, bucket_length

WORDS = ["<pad>", "<eos>", "<unk>", "[CLS]", "[SEP]", "a", "man", "is", "eating", "food", "."]


def word_tokenizer(*, appends=None, bert=False, **special):
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "removed")
    if appends is not None:  # a post-processor that appends this token to every text
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {appends}", special_tokens=[(appends, WORDS.index(appends))]
        )
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 3), ("[SEP]", 4)]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def test_last_token_pooling_appends_eos_and_pads_left():
    tok = TextTokenizer(word_tokenizer(eos_token="<eos>", pad_token="<pad>"), pooling="last")
    batch = tok.encode(["a man is eating food .", "a man"])
    assert tok.padding_side == "left"
    np.testing.assert_array_equal(batch.input_ids[:, -1], [1, 1])
    np.testing.assert_array_equal(batch.input_ids[1], [0, 0, 0, 0, 5, 6, 1])
    np.testing.assert_array_equal(batch.attention_mask[1], [0, 0, 0, 0, 1, 1, 1])


def test_missing_eos_is_an_error():
    with pytest.raises(TokenizerCheckError, match="no EOS"):
        TextTokenizer(word_tokenizer(pad_token="<pad>"), pooling="last")


def test_missing_pad_is_an_error_unless_given():
    with pytest.raises(TokenizerCheckError, match="no pad token"):
        TextTokenizer(word_tokenizer(eos_token="<eos>"), pooling="last")
    tok = TextTokenizer(word_tokenizer(eos_token="<eos>"), pooling="last", pad_token="<eos>")
    assert tok.pad_id == 1


def test_tokenizer_that_appends_the_pooling_token_itself_is_used_once():
    hf = word_tokenizer(appends="<eos>", eos_token="<eos>", pad_token="<pad>")
    assert hf("a man")["input_ids"] == [5, 6, 1]
    tok = TextTokenizer(hf, pooling="last")
    assert not tok.appends_pooling_token
    np.testing.assert_array_equal(tok.encode(["a man", "a"]).input_ids, [[5, 6, 1], [0, 5, 1]])


def test_tokenizer_that_appends_another_token_is_refused():
    hf = word_tokenizer(appends="[SEP]", eos_token="<eos>", pad_token="<pad>", sep_token="[SEP]")
    with pytest.raises(TokenizerCheckError, match=r"appends \['\[SEP\]'\].*pools on '<eos>'"):
        TextTokenizer(hf, pooling="last")


def test_mean_pooling_needs_cls_and_sep():
    with pytest.raises(TokenizerCheckError, match=r"\[CLS\] ... \[SEP\]"):
        TextTokenizer(
            word_tokenizer(pad_token="<pad>", cls_token="[CLS]", sep_token="[SEP]"), pooling="mean"
        )
    tok = TextTokenizer(
        word_tokenizer(bert=True, pad_token="<pad>", cls_token="[CLS]", sep_token="[SEP]"),
        pooling="mean",
    )
    assert tok.padding_side == "right"
    np.testing.assert_array_equal(tok.encode(["a man", "a"]).input_ids[1], [3, 5, 4, 0])


def test_truncation_keeps_the_pooling_token_counts_and_warns_once():
    tok = TextTokenizer(word_tokenizer(eos_token="<eos>", pad_token="<pad>"), pooling="last")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = tok.encode(["a man is eating food .", "a man", "man is eating food"], max_length=4)
        tok.encode(["a man is eating food ."], max_length=4)
    assert batch.num_truncated == 2
    np.testing.assert_array_equal(batch.input_ids[0], [5, 6, 7, 1])
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1


def test_pad_to_static_length():
    tok = TextTokenizer(word_tokenizer(eos_token="<eos>", pad_token="<pad>"), pooling="last")
    assert tok.encode(["a"], pad_to=8).input_ids.shape == (1, 8)
    with pytest.raises(ValueError, match="pad_to=2"):
        tok.encode(["a man is"], pad_to=2)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 16), (1, 16), (17, 32), (256, 256), (257, 512), (512, 512), (513, 768), (1090, 1280)],
)
def test_bucket_length_is_power_of_two_then_steps_of_256(n, expected):
    assert bucket_length(n) == expected
    assert bucket_length(n, max_length=300) == min(300, expected)
