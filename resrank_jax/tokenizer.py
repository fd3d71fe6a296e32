"""Tokenizer wrapper with the checks that prevent silent score collapse.

Special-token mistakes are the classic silent failure of embedding rerankers (a missing EOS
makes last-token pooling read an arbitrary word). ``TextTokenizer`` therefore checks at load
time that EOS and pad exist, that the pooling token really ends every encoded text, and it
pads on a known side itself instead of trusting the tokenizer's default.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

Pooling = Literal["last", "mean", "cls"]
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
        pooling: ``last`` (decoders: the pooling token is EOS, appended by us, left padding),
            ``mean`` or ``cls`` (BERT: ``[CLS] ... [SEP]`` from the tokenizer, right padding).
        pad_token: override when the tokenizer has no pad token (e.g. the EOS token string).
    """

    def __init__(self, hf_tokenizer, *, pooling: Pooling, pad_token: str | None = None) -> None:
        self.hf = hf_tokenizer
        self.pooling = pooling
        if pad_token is not None:
            self.hf.pad_token = pad_token
        self.padding_side: Literal["left", "right"] = "left" if pooling == "last" else "right"
        self.eos_id = self.hf.eos_token_id
        self.pad_id = self.hf.pad_token_id
        self._warned_truncation = False
        self.check()

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def check(self) -> None:
        """Raises ``TokenizerCheckError`` if EOS/pad are missing or the pooling token is wrong."""
        name = getattr(self.hf, "name_or_path", "tokenizer")
        if self.pad_id is None:
            raise TokenizerCheckError(
                f"{name}: no pad token. Pass pad_token=... (for decoders usually the EOS token "
                f"{self.hf.eos_token!r}) so padding is explicit."
            )
        if self.pooling == "last":
            if self.eos_id is None:
                raise TokenizerCheckError(
                    f"{name}: no EOS token; last-token pooling needs one appended to every text"
                )
            raw = self._raw_ids([PROBE_TEXT])[0]
            if raw and raw[-1] == self.eos_id:
                raise TokenizerCheckError(
                    f"{name}: the tokenizer already appends EOS; resrank_jax appends it itself "
                    "and would pool on a doubled token"
                )
            ids = self.encode([PROBE_TEXT]).input_ids[0]
            if ids[-1] != self.eos_id:
                raise TokenizerCheckError(f"{name}: encoded text does not end with EOS ({ids[-1]})")
        else:
            cls_id, sep_id = self.hf.cls_token_id, self.hf.sep_token_id
            ids = self._raw_ids([PROBE_TEXT])[0]
            if cls_id is None or sep_id is None or ids[0] != cls_id or ids[-1] != sep_id:
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
        (EOS, or [SEP]) as the last token; the count is returned and a warning is issued once.
        """
        rows, truncated = self.token_rows(texts, max_length=max_length)
        return self.pad_rows(rows, truncated, max_length=max_length, pad_to=pad_to, bucket=bucket)

    def token_rows(
        self, texts: Sequence[str], *, max_length: int = 512
    ) -> tuple[list[list[int]], int]:
        """Unpadded token ids per text (pooling token included) and how many were truncated."""
        rows = self._raw_ids(texts)
        if self.pooling == "last":
            rows = [[*r, self.eos_id] for r in rows]
        truncated = 0
        for i, r in enumerate(rows):
            if len(r) > max_length:
                rows[i] = [*r[: max_length - 1], r[-1]]
                truncated += 1
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
