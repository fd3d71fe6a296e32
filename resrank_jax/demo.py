"""A short real forward pass with the packaged pretrained weights (the placeholder main job
until the end-to-end ResRank demo lands).

    python -m resrank_jax.demo
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from resrank_jax import load_backbone
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.models.pooling import l2_normalize, pool

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
]
PROMPT = "The capital of France is"


def main() -> None:
    start = time.perf_counter()
    encoder, enc_tok = load_backbone(packaged_weights("all-minilm-l6-v2"))
    batch = enc_tok.encode(SENTENCES)
    mask = jnp.asarray(batch.attention_mask)
    emb = l2_normalize(
        pool(encoder(jnp.asarray(batch.input_ids), attention_mask_bl=mask), mask, "mean")
    )
    print("all-MiniLM-L6-v2 mean-pooled cosine similarities:")
    for i in range(1, len(SENTENCES)):
        print(f"  {float(emb[0] @ emb[i]):.4f}  {SENTENCES[0]!r} vs {SENTENCES[i]!r}")

    decoder, dec_tok = load_backbone(packaged_weights("smollm2-135m-instruct"))
    ids = dec_tok.hf(PROMPT)["input_ids"]
    forward = jax.jit(lambda m, x: m.logits(m(x))[:, -1])
    for _ in range(6):  # greedy, no KV cache: only a smoke test of the loaded weights
        ids.append(int(jnp.argmax(forward(decoder, jnp.asarray([ids], jnp.int32))[0])))
    print(f"SmolLM2-135M-Instruct (GGUF) greedy continuation: {dec_tok.hf.decode(ids)!r}")
    print(f"devices: {jax.devices()}; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
