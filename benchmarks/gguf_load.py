"""Opening a packaged GGUF file: ``read_gguf`` (resrank_jax) against ``gguf.GGUFReader``
(llama.cpp's reader), side by side in one run, and the whole tokenizer build
(``GGUFFile.load_tokenizer``) that every train/eval/rerank start with a GGUF model pays.

    python benchmarks/gguf_load.py [--models smollm2-135m-instruct gemma3-270m] [--repeats 3]

Writes ``benchmarks/results/gguf_load.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import device_name, median_seconds, write_result
from resrank_jax.hf.gguf_file import GGUFFile
from resrank_jax.hf.gguf_reader import read_gguf
from resrank_jax.hf.packaged import packaged_weights


def row(name: str, repeats: int) -> dict:
    import gguf

    path = packaged_weights(name)
    ours = median_seconds(lambda: read_gguf(path), repeats)
    reference = median_seconds(lambda: gguf.GGUFReader(str(path)), repeats, warmup=0)
    tokenizer = median_seconds(lambda: GGUFFile(path).load_tokenizer(), repeats)
    return {
        "read_gguf_s": ours,
        "gguf_reader_s": reference,
        "reader_ratio": reference / ours,
        "tokenizer_build_s": tokenizer,
        "vocabulary": len(read_gguf(path).fields["tokenizer.ggml.tokens"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "gemma3-270m"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = {}
    for name in args.models:
        rows[name] = row(name, args.repeats)
        print(name, rows[name], flush=True)
    path = write_result("gguf_load", {"device": device_name(), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
