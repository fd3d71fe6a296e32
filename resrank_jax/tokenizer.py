"""Tokenizer wrapper with the checks that prevent silent score collapse.

Special-token mistakes are the classic silent failure of embedding rerankers (a missing or
wrong pooling token makes last-token pooling read an arbitrary word). ``TextTokenizer``
follows the model's ``PoolingConvention`` (``resrank_jax.pooling_conventions``: which token
is pooled, padding side, pooling kind, query format) and checks at load time that pad and the
pooling token exist, that exactly one pooling token ends every encoded text, and it pads on
a known side itself instead of trusting the tokenizer's default.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from resrank_jax.pooling_conventions import Pooling, PoolingConvention, pooling_convention

PROBE_TEXT = "A man is eating food."


BUCKET_STEP = 256


def bucket_length(n: int, max_length: int | None = None, minimum: int = 16) -> int:
    """The static length ``n`` tokens are padded to, so any corpus compiles a handful of
    shapes: the smallest power of two >= ``n`` up to ``2 * BUCKET_STEP``, above that the next
    multiple of ``BUCKET_STEP`` (a 1,090-token prompt pads to 1,280, not 2,048); at least
    ``minimum``, capped at ``max_length`` if given."""
    n = max(n, 1)
    if n > 2 * BUCKET_STEP:
        bucket = -(-n // BUCKET_STEP) * BUCKET_STEP
    else:
        bucket = max(minimum, 1 << (n - 1).bit_length())
    return bucket if max_length is None else min(max_length, bucket)


class TokenizerCheckError(ValueError):
    """The tokenizer cannot serve the requested pooling without silent errors."""


@dataclasses.dataclass
class Encoded:
    """A padded batch: ``input_ids [B, L]`` int32, ``attention_mask [B, L]`` int32 and how many
    texts were truncated to fit."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    num_truncated: int


class TextTokenizer:
    """Encodes texts for one backbone with explicit special tokens and padding side.

    Args:
        hf_tokenizer: a ``transformers`` tokenizer (fast).
        pooling: ``last`` (decoders: one pooling token ends every text, left padding),
            ``mean`` or ``cls`` (BERT: ``[CLS] ... [SEP]`` from the tokenizer, right padding).
            Optional when ``convention`` is given.
        pad_token: override when the tokenizer has no pad token (e.g. the EOS token string).
        convention: the model's ``PoolingConvention`` (``load_backbone`` passes the one its
            directory declares); default: ``pooling_convention(hf_tokenizer, pooling=...)``,
            which recognises Qwen tokenizers by their vocabulary.

    The pooling token (``last``) is ``convention.pooling_token`` or, when that is ``None``,
    the EOS; Qwen models pool on ``<|endoftext|>``, not their chat EOS ``<|im_end|>``. A
    tokenizer whose post-processor already appends exactly the pooling token is used as is
    (nothing is appended again); one that appends any other token after the text (a different
    EOS, ``</s>``, two tokens) is refused with a ``TokenizerCheckError`` naming it. Special
    tokens the text itself ends with are dropped (also after truncation), so an encoded text
    never ends in two special tokens.
    """

    def __init__(
        self,
        hf_tokenizer,
        *,
        pooling: Pooling | None = None,
        pad_token: str | None = None,
        convention: PoolingConvention | None = None,
    ) -> None:
        self.hf = hf_tokenizer
        if convention is None:
            if pooling is None:
                raise TypeError("TextTokenizer needs pooling= or convention=")
            convention = pooling_convention(hf_tokenizer, pooling=pooling)
        elif pooling is not None and pooling != convention.pooling:
            raise ValueError(
                f"pooling={pooling!r} contradicts the model's convention ({convention.pooling}, "
                f"from {convention.source})"
            )
        self.convention = convention
        self.pooling: Pooling = convention.pooling
        if pad_token is not None:
            self.hf.pad_token = pad_token
        self.padding_side: Literal["left", "right"] = convention.padding_side
        self.eos_id = self.hf.eos_token_id  # the generation stop token (chat EOS)
        self.pad_id = self.hf.pad_token_id
        self.pooling_token: str | None = None  # last pooling: the token ending every text
        self.pooling_id: int | None = None
        self.appends_pooling_token = False  # False: the tokenizer's post-processor does
        self._special_ids = self._all_special_ids()
        self._n_prefix = 0  # special tokens the post-processor puts before the text
        self._warned_truncation = False
        self.check()

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def query_text(self, query: str, task: str) -> str:
        """``query`` in this model's query format (``convention.query_text``)."""
        return self.convention.query_text(query, task)

    def _all_special_ids(self) -> set[int]:
        ids = set(getattr(self.hf, "all_special_ids", []) or [])
        added = getattr(self.hf, "added_tokens_decoder", {}) or {}
        ids.update(i for i, t in added.items() if getattr(t, "special", False))
        ids.discard(self.hf.unk_token_id)  # [UNK] stands for text, it is not a marker
        return ids

    def _name(self) -> str:
        return getattr(self.hf, "name_or_path", None) or "tokenizer"

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return list(self.hf.convert_ids_to_tokens(list(ids)))

    def _post_processor_layout(self) -> tuple[list[int], list[int]]:
        """``(prefix, suffix)``: the ids the tokenizer adds before and after a text."""
        plain = self.hf(PROBE_TEXT, add_special_tokens=False)["input_ids"]
        raw = self._raw_ids([PROBE_TEXT])[0]
        for start in range(len(raw) - len(plain) + 1):
            if raw[start : start + len(plain)] == plain:
                return raw[:start], raw[start + len(plain) :]
        # the added tokens changed the text's tokenisation: fall back to special-token runs
        n_pre = next((i for i, t in enumerate(raw) if t not in self._special_ids), len(raw))
        n_suf = next(
            (i for i, t in enumerate(reversed(raw)) if t not in self._special_ids), len(raw)
        )
        return raw[:n_pre], raw[len(raw) - n_suf :]

    def check(self) -> None:
        """Raises ``TokenizerCheckError`` if pad or the pooling token is missing, or the
        tokenizer's own special tokens would put anything but one pooling token last."""
        name = self._name()
        if self.pad_id is None:
            raise TokenizerCheckError(
                f"{name}: no pad token. Pass pad_token=... (for decoders usually the EOS token "
                f"{self.hf.eos_token!r}) so padding is explicit."
            )
        prefix, suffix = self._post_processor_layout()
        self._n_prefix = len(prefix)
        if self.pooling == "last":
            token = self.convention.pooling_token
            if token is None:
                if self.eos_id is None:
                    raise TokenizerCheckError(
                        f"{name}: no EOS token; last-token pooling needs one appended to every text"
                    )
                token, token_id = self.hf.eos_token, self.eos_id
            else:
                token_id = self.hf.get_vocab().get(token)
                if token_id is None:
                    raise TokenizerCheckError(
                        f"{name}: the pooling token {token!r} ({self.convention.source}) is not "
                        "in the vocabulary"
                    )
            self.pooling_token, self.pooling_id = token, token_id
            self._special_ids.add(token_id)
            if suffix == [token_id]:
                self.appends_pooling_token = False  # recognised: the tokenizer appends it
            elif not suffix:
                self.appends_pooling_token = True
            else:
                raise TokenizerCheckError(
                    f"{name}: the tokenizer's post-processor appends {self._tokens(suffix)} "
                    f"after every text, but this model pools on {token!r} "
                    f"({self.convention.source}); the encoded text would end in "
                    f"{[*self._tokens(suffix), token]} or pool on the wrong token. Use a "
                    "tokenizer that appends nothing or exactly the pooling token"
                )
            ids = self.encode([PROBE_TEXT]).input_ids[0]
            if ids[-1] != token_id or ids[-2] in self._special_ids:
                raise TokenizerCheckError(
                    f"{name}: encoded text does not end with exactly one {token!r}: "
                    f"{self._tokens(ids[-3:])}"
                )
        else:
            cls_id, sep_id = self.hf.cls_token_id, self.hf.sep_token_id
            ids = self._raw_ids([PROBE_TEXT])[0]
            if (
                cls_id is None
                or sep_id is None
                or ids[0] != cls_id
                or ids[-1] != sep_id
                or len(suffix) != 1
            ):
                raise TokenizerCheckError(
                    f"{name}: {self.pooling} pooling expects [CLS] ... [SEP] from the tokenizer, "
                    f"got ids {ids[:3]}...{ids[-3:]}"
                )

    def _raw_ids(self, texts: Sequence[str]) -> list[list[int]]:
        # verbose=False: resrank_jax truncates itself (counted), HF's length warning misleads
        return self.hf(list(texts), add_special_tokens=True, verbose=False)["input_ids"]

    def encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int = 512,
        pad_to: int | None = None,
        bucket: bool = False,
    ) -> Encoded:
        """Tokenises ``texts`` into a padded batch of length ``pad_to`` (default: the longest
        text, rounded up by ``bucket_length`` when ``bucket``).

        Texts longer than ``max_length`` tokens are truncated, keeping the pooling token
        (or [SEP]) as the one last token; the count is returned and a warning is issued once.
        """
        rows, truncated = self.token_rows(texts, max_length=max_length)
        return self.pad_rows(rows, truncated, max_length=max_length, pad_to=pad_to, bucket=bucket)

    def token_rows(
        self, texts: Sequence[str], *, max_length: int = 512
    ) -> tuple[list[list[int]], int]:
        """Unpadded token ids per text (pooling token included) and how many were truncated."""
        rows = self._raw_ids(texts)
        if self.appends_pooling_token:
            rows = [[*r, self.pooling_id] for r in rows]
        truncated = 0
        for i, r in enumerate(rows):
            body, last = r[:-1], r[-1]  # last: the pooling token ([SEP] for BERT)
            if len(r) > max_length:
                body = body[: max_length - 1]
                truncated += 1
            while len(body) > self._n_prefix and body[-1] in self._special_ids:
                body.pop()  # never two special tokens at the end
            rows[i] = [*body, last]
        if truncated and not self._warned_truncation:
            warnings.warn(
                f"{truncated} of {len(rows)} texts exceed {max_length} tokens and were truncated "
                "(counted in Encoded.num_truncated; this warning is shown once)",
                stacklevel=3,
            )
            self._warned_truncation = True
        return rows, truncated

    def pad_rows(
        self,
        rows: Sequence[Sequence[int]],
        truncated: int = 0,
        *,
        max_length: int = 512,
        pad_to: int | None = None,
        bucket: bool = False,
    ) -> Encoded:
        """Pads ``token_rows`` output on this tokenizer's side (see ``encode``)."""
        longest = max(len(r) for r in rows)
        length = pad_to or (bucket_length(longest, max_length) if bucket else longest)
        if any(len(r) > length for r in rows):
            raise ValueError(f"pad_to={length} is shorter than an encoded text")
        ids = np.full((len(rows), length), self.pad_id, np.int32)
        mask = np.zeros((len(rows), length), np.int32)
        for i, r in enumerate(rows):
            sl = slice(length - len(r), length) if self.padding_side == "left" else slice(0, len(r))
            ids[i, sl], mask[i, sl] = r, 1
        return Encoded(ids, mask, truncated)
