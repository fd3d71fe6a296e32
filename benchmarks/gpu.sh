#!/usr/bin/env bash
# The accelerator benchmarks of the README: a Qwen3-0.6B-shaped encoder + reranker pair with
# random weights (timing only), bf16, on the first device.
#
#   bash benchmarks/gpu.sh [TOKENIZER]
#
# TOKENIZER: a packaged name (default smollm2-135m-instruct) or a directory of HF tokenizer
# files; its ids must fit the architecture's vocabulary. Environment: ARCH (qwen3-0.6b),
# WORK (/tmp/resrank-gpu: the random checkpoint is written there once), QUERIES (3 timed + 1 warm-up),
# PYTHON (python3), PEAK_TFLOPS (989: datasheet dense bf16 of an H100/H200 SXM), ATTENTION (xla cudnn: one train
# step result per attention implementation). The training steps run first, then the latency
# table. Writes benchmarks/results/rerank_latency-gpu.json
# and train_step-gpu-<attention>.json; a benchmark that fails does not stop the others (exit 1).
set -uo pipefail
cd "$(dirname "$0")/.."
TOKENIZER=${1:-smollm2-135m-instruct}
ARCH=${ARCH:-qwen3-0.6b}
CKPT=${WORK:-/tmp/resrank-gpu}/$ARCH-random
read -ra PYTHON <<<"${PYTHON:-python3}"
[ -f "$CKPT/config.json" ] ||  # reuse one written before
    "${PYTHON[@]}" benchmarks/random_checkpoint.py "$ARCH" "$CKPT" --tokenizer "$TOKENIZER" || exit
failed=0
for attention in ${ATTENTION:-xla cudnn}; do
    "${PYTHON[@]}" benchmarks/train_step.py --presets qwen3-0.6b --override "model.encoder=$CKPT" \
        --override "model.reranker=$CKPT" --override "model.attention_impl=$attention" \
        ${TRAIN_OVERRIDES:-} --peak-tflops "${PEAK_TFLOPS:-989}" --measure-peak \
        --name "train_step-gpu-$attention" || failed=1
done
"${PYTHON[@]}" benchmarks/rerank_latency.py --model "$CKPT" --backbone-label "$ARCH (random weights)" \
    --dtype bfloat16 --queries "${QUERIES:-3}" --name rerank_latency-gpu ${LATENCY_ARGS:-} || failed=1
exit $failed
