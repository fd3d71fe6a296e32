"""Text templates and token layouts of the ResRank and generative listwise prompts (E2Rank's
pseudo-query lives in ``resrank_jax/tasks/e2rank.py``, its instructions in
``resrank_jax/instructions.py``).

The ResRank prompt carries one *slot* token per passage; its input embedding is replaced by
the passage embedding. Prompts are rendered with the backbone's chat template (ChatML when the
tokenizer has none), split at the slots and tokenised piece by piece, so slot positions are
exact and no text is ever tokenised as a slot.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from resrank_jax.tokenizer import TextTokenizer

SLOT = "\x00slot\x00"  # never produced by a real text; split off before tokenisation


def truncate_words(text: str, words: int) -> str:
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words])


def resrank_user_message(query: str, n: int) -> str:
    """The ResRank listwise instruction with ``n`` slots (SPEC.md section 1)."""
    lines = [
        f"I will provide you with {n} passages, each represented by a special token enclosed "
        "in [].",
        f"Rank the passages based on their relevance to the search query: {query}.",
        *(f"Passage {i + 1}: [{SLOT}]" for i in range(n)),
        f"Search Query: {query}.",
        f"Rank the {n} passages above based on their relevance to the search query.",
    ]
    return "\n".join(lines)


def rankgpt_user_message(query: str, docs: Sequence[str]) -> str:
    """RankGPT/RankZephyr-style full-text listwise instruction asking for a permutation."""
    n = len(docs)
    listed = "\n".join(f"[{i + 1}] {d}" for i, d in enumerate(docs))
    return (
        f"I will provide you with {n} passages, each indicated by a numerical identifier []. "
        f"Rank the passages based on their relevance to the search query: {query}.\n{listed}\n"
        f"Search Query: {query}.\nRank the {n} passages above based on their relevance to the "
        "search query. All the passages should be included and listed using identifiers, in "
        "descending order of relevance. The output format should be [] > [], e.g., [2] > [1]. "
        "Only respond with the ranking results, do not say any word or explain."
    )


def chat(tokenizer: TextTokenizer, user_message: str) -> str:
    """``user_message`` in the backbone's chat template with the assistant turn opened
    (thinking disabled for Qwen3); ChatML when the tokenizer has no template."""
    hf = tokenizer.hf
    if getattr(hf, "chat_template", None):
        return hf.apply_chat_template(
            [{"role": "user", "content": user_message}],
            tokenize=False,
            add_generation_prompt=True,
            enable_thinking=False,
        )
    return f"<|im_start|>user\n{user_message}<|im_end|>\n<|im_start|>assistant\n"


@dataclasses.dataclass
class SlotPrompt:
    """Token ids of one prompt, the positions of its slot tokens, and whether any of its
    text was cut to fit."""

    ids: list[int]
    slot_positions: list[int]
    truncated: int = 0


def tokenize_with_slots(tokenizer: TextTokenizer, text: str, slot_id: int) -> SlotPrompt:
    """Tokenises ``text`` piece by piece around ``SLOT`` markers (no special tokens added)."""
    pieces = text.split(SLOT)
    encoded = tokenizer.hf(pieces, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    slots: list[int] = []
    for i, piece_ids in enumerate(encoded):
        ids.extend(piece_ids)
        if i < len(pieces) - 1:
            slots.append(len(ids))
            ids.append(slot_id)
    return SlotPrompt(ids, slots)


@dataclasses.dataclass
class SlotBatch:
    """Left-padded prompts: ``ids [B, L]``, ``mask [B, L]``, ``slot_pos [B, N]`` (index into
    L; padded slots point at L, out of range) and ``slot_mask [B, N]``."""

    ids: np.ndarray
    mask: np.ndarray
    slot_pos: np.ndarray
    slot_mask: np.ndarray


def pad_slot_prompts(
    prompts: Sequence[SlotPrompt],
    pad_id: int,
    *,
    pad_to: int | None = None,
    n_slots: int | None = None,
) -> SlotBatch:
    """Stacks prompts, padding on the left to ``pad_to`` tokens and ``n_slots`` slots."""
    length = pad_to or max(len(p.ids) for p in prompts)
    n = n_slots or max(len(p.slot_positions) for p in prompts)
    too_long = [len(p.ids) for p in prompts if len(p.ids) > length]
    if too_long:
        raise ValueError(f"prompt of {max(too_long)} tokens exceeds pad_to={length}")
    ids = np.full((len(prompts), length), pad_id, np.int32)
    mask = np.zeros((len(prompts), length), np.int32)
    slot_pos = np.full((len(prompts), n), length, np.int32)
    slot_mask = np.zeros((len(prompts), n), np.int32)
    for b, p in enumerate(prompts):
        offset = length - len(p.ids)
        ids[b, offset:], mask[b, offset:] = p.ids, 1
        k = len(p.slot_positions)
        slot_pos[b, :k] = np.asarray(p.slot_positions, np.int32) + offset
        slot_mask[b, :k] = 1
    return SlotBatch(ids, mask, slot_pos, slot_mask)
