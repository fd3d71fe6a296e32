"""Write a randomly initialised HF checkpoint of a published architecture, for timing at full
size where the real weights cannot be downloaded (random weights time the same as real ones).

    python benchmarks/random_checkpoint.py qwen3-0.6b OUT_DIR [--tokenizer smollm2-135m-instruct]

``OUT_DIR`` gets ``config.json`` + ``model.safetensors`` (through ``export_hf``, the same key
map as import) and the tokenizer of ``--tokenizer`` (a packaged name or a directory with HF
tokenizer files), whose ids must fit the architecture's vocabulary. Any loader then takes
``OUT_DIR``: ``eval.py --model OUT_DIR``, ``model.encoder=OUT_DIR`` in a training config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import jax

from resrank_jax.hf.export import export_hf
from resrank_jax.hf.gguf_file import GGUFFile
from resrank_jax.hf.packaged import PACKAGED, packaged_weights
from resrank_jax.models.build import init_backbone
from resrank_jax.models.config import PRESETS, BackboneConfig


def load_tokenizer(source: str):
    """The HF tokenizer of a packaged model name or of a directory of tokenizer files."""
    path = packaged_weights(source) if source in PACKAGED else Path(source)
    if path.suffix == ".gguf":
        return GGUFFile(path).load_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def write_random_checkpoint(
    cfg: BackboneConfig, out_dir: str | Path, tokenizer, seed: int = 0
) -> Path:
    """Writes a backbone of ``cfg`` initialised from ``seed`` and the HF ``tokenizer`` to
    ``out_dir``; returns it.

    Raises:
        ValueError: the tokenizer has ids outside the architecture's vocabulary.
    """
    if len(tokenizer) > cfg.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} ids; the architecture embeds only {cfg.vocab_size}"
        )
    # Initialise on the host: the weights go to disk anyway, and on an H200 the jitted init
    # of the unrolled Qwen3-0.6B compiled for 5 min 23 s (gpu.sh, jax 0.11.2).
    with jax.default_device(jax.devices("cpu")[0]):
        return export_hf(init_backbone(cfg, seed=seed), out_dir, tokenizer=tokenizer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("arch", help="a name of resrank_jax.models.config.PRESETS, e.g. qwen3-0.6b")
    p.add_argument("out_dir")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.arch not in PRESETS:
        p.error(f"unknown architecture {args.arch!r}; known: {', '.join(sorted(PRESETS))}")
    tokenizer = load_tokenizer(args.tokenizer)
    out = write_random_checkpoint(PRESETS[args.arch], args.out_dir, tokenizer, args.seed)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
