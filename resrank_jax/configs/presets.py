"""Training presets. Each derives from ``BASE`` (or another preset) with
``dataclasses.replace``; nothing is copied. ``resrank train --config NAME`` (or
``python train.py --config NAME`` in a checkout) picks one."""

import dataclasses

from resrank_jax.config import StageConfig, TrainConfig
from resrank_jax.models.config import ResRankConfig

BASE = TrainConfig()
_CPU_DATA = dataclasses.replace(BASE.data, queries_per_step=4, list_size=8, passage_max_length=64)
_GATED = ResRankConfig(
    phi="linear", residual="gated", query_vector="gated", projector_init="orthogonal"
)
_GATE_LR = (("gate", 200.0),)

PRESETS: dict[str, TrainConfig] = {
    "tiny": dataclasses.replace(
        BASE,
        model=dataclasses.replace(
            BASE.model,
            encoder="tiny-bert",
            reranker="tiny-decoder",
            resrank=ResRankConfig(phi="linear"),
        ),
        data=dataclasses.replace(
            _CPU_DATA,
            queries_per_step=8,
            max_queries=32,
            passage_max_length=32,
            query_max_length=32,
        ),
        steps=8,
        checkpoint_every=2,
        stages=(
            StageConfig("stage1", 0.5, lr=3e-3),
            StageConfig("stage2", 0.5, labels="teacher", lr=3e-3),
        ),
    ),
    # MiniLM (384) into SmolLM2 (576): an orthogonal linear projector and a zero-initialised
    # gate on the reranker's states, so training starts from the encoder's dense ranking; the
    # gate trains at 200x the stage lr (one scalar beside 135M pretrained weights). SmolLM2's
    # 30 layers run under scan, each rematerialised: the step's temporaries fall from 2.5 GB
    # to 0.5 GB (unrolled layers' remat is scheduled away by XLA:CPU) and it compiles in about
    # two thirds of the time; steps take about 5% longer (README, "Memory").
    "smollm2-135m": dataclasses.replace(
        BASE,
        model=dataclasses.replace(BASE.model, resrank=_GATED, scan_layers=True, remat="full"),
        data=_CPU_DATA,
        steps=60,
        checkpoint_every=20,
        stages=(
            StageConfig("stage1", 0.5, lr=5e-5, lr_scale=_GATE_LR),
            StageConfig("stage2", 0.5, labels="teacher", lr=3e-5, lr_scale=_GATE_LR),
        ),
    ),
    "qwen3-0.6b": dataclasses.replace(
        BASE,
        model=dataclasses.replace(
            BASE.model,
            encoder="Qwen/Qwen3-Embedding-0.6B",
            reranker="Qwen/Qwen3-0.6B",
            resrank=ResRankConfig(),
            dtype="bfloat16",
            remat="full",
        ),
        data=dataclasses.replace(BASE.data, queries_per_step=32, passage_max_length=256),
        steps=2000,
        checkpoint_every=200,
    ),
}
PRESETS["qwen3-4b"] = dataclasses.replace(
    PRESETS["qwen3-0.6b"],
    model=dataclasses.replace(
        PRESETS["qwen3-0.6b"].model, encoder="Qwen/Qwen3-Embedding-4B", reranker="Qwen/Qwen3-4B"
    ),
    mesh=(-1, 1, 1),
)
# ResRank as published (SPEC.md section 1 defaults): residual norm(h) + norm(e), the
# reranker's last prompt state as query, and, since MiniLM (384) and SmolLM2 (576) differ in
# width, the linear projector the SPEC names for such pairs (orthogonal init); same data,
# stages and learning rates as the gated variant above.
_SMOL = PRESETS["smollm2-135m"]
_SPEC_RESRANK = ResRankConfig(phi="linear", projector_init="orthogonal")
PRESETS["smollm2-135m-spec"] = dataclasses.replace(
    _SMOL,
    model=dataclasses.replace(_SMOL.model, resrank=_SPEC_RESRANK),
    stages=tuple(dataclasses.replace(s, lr_scale=()) for s in _SMOL.stages),
)
# Ablations: each changes exactly one thing of the SPEC-default preset (the paper's claims).
_SPEC = PRESETS["smollm2-135m-spec"]
PRESETS["smollm2-135m-no-residual"] = dataclasses.replace(
    _SPEC,
    model=dataclasses.replace(
        _SPEC.model, resrank=dataclasses.replace(_SPEC_RESRANK, residual="none")
    ),
)
PRESETS["smollm2-135m-single-stage"] = dataclasses.replace(
    _SPEC, stages=(dataclasses.replace(_SPEC.stages[1], name="single", fraction=1.0),)
)
PRESETS["smollm2-135m-no-contrastive"] = dataclasses.replace(
    _SPEC, stages=tuple(dataclasses.replace(s, weights=(("rank", 2.0),)) for s in _SPEC.stages)
)


def _encoder_frozen(stages: tuple[StageConfig, ...]) -> tuple[StageConfig, ...]:
    """``stages`` training everything but the encoder, on the RankNet term alone (a frozen
    encoder gets no gradient from the contrastive term: the same update without it)."""
    return tuple(
        dataclasses.replace(s, trainable=("(?!encoder/).*",), weights=(("rank", 2.0),))
        for s in stages
    )


# A frozen encoder's passage and query vectors are encoded once (``data.cached_vectors``: the
# same steps, tested equal, without the encoder's forward).
PRESETS["smollm2-135m-frozen-encoder"] = dataclasses.replace(
    _SPEC,
    data=dataclasses.replace(_SPEC.data, cached_vectors=True),
    stages=_encoder_frozen(_SPEC.stages),
)
# The gated variant (starts from the encoder's ranking) trained the same way, with lists like
# inference's (20 shuffled candidates, negatives sampled from the whole top-100, RankNet pairs
# only around judged positives): the Quality issue's candidate (README, "Does the reranker
# help?"). Its gate starts at 0.3, not 0: the reranker's gradient is proportional to the
# gate, so from 0 it gets none at first and then flips direction with the gate's sign.
PRESETS["smollm2-135m-frozen-gated"] = dataclasses.replace(
    _SMOL,
    model=dataclasses.replace(
        _SMOL.model, resrank=dataclasses.replace(_GATED, gate_init=0.3), remat="none"
    ),
    data=dataclasses.replace(
        _SMOL.data,
        cached_vectors=True,
        list_size=20,
        candidate_order="shuffled",
        negatives="sampled",
        default_teacher="judged_only",
    ),
    stages=_encoder_frozen(_SMOL.stages),
)
# E2Rank (one embedding model, no reranker): stage 1 contrastive only, stage 2 contrastive +
# RankNet on the pseudo-query (SPEC.md section 2).
_E2RANK_STAGES = (
    StageConfig("stage1", 0.5, weights=(("ret", 1.0),), lr=5e-5),
    StageConfig("stage2", 0.5, labels="teacher", lr=3e-5),
)
# The pseudo-query holds the list's 8 documents as released (words cut at 1024, no token cap
# beyond the encoder's): on this CPU a 2,048-token budget keeps steps affordable.
PRESETS["smollm2-135m-e2rank"] = dataclasses.replace(
    _SMOL,
    model=dataclasses.replace(_SMOL.model, mode="e2rank", encoder="smollm2-135m-instruct"),
    data=dataclasses.replace(_SMOL.data, prompt_max_length=2048),
    optim=dataclasses.replace(_SMOL.optim, weight_decay=0.0),  # E2Rank's recipe: HF default 0
    stages=_E2RANK_STAGES,
)
# The same with all-MiniLM-L6-v2 (BERT: the pseudo-query must fit its 512 positions; the
# documents share what the instruction and the query leave).
PRESETS["minilm-e2rank"] = dataclasses.replace(
    PRESETS["smollm2-135m-e2rank"],
    model=dataclasses.replace(
        _SMOL.model, mode="e2rank", encoder="all-minilm-l6-v2", remat="none"
    ),  # 23M params (the SmolLM2 presets' remat is for their 135M decoder)
    data=dataclasses.replace(_SMOL.data, prompt_max_length=512),
)
# Gemma 3 270M (GGUF Q4_K_M from PyPI; Gemma terms of use) as the Reranker-LLM, ResRank as
# published (the SPEC default above): MiniLM (384) into Gemma 3 (640) through the orthogonal
# linear projector; same data, stages and learning rates.
PRESETS["gemma3-270m"] = dataclasses.replace(
    _SPEC, model=dataclasses.replace(_SPEC.model, reranker="gemma3-270m")
)
