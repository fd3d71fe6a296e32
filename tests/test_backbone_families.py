"""Every decoder family (Llama 3 RoPE scaling, Mistral, Gemma 3) as encoder, ResRank reranker,
E2Rank embedding model and generative baseline, through the public ``build_ranker`` and a
training preset; random tiny checkpoints with SmolLM2's tokenizer (vocabulary 49,152)."""

import numpy as np
import pytest

from benchmarks.random_checkpoint import write_random_checkpoint
from resrank_jax import load_backbone
from resrank_jax.models.config import RopeScaling
from resrank_jax.rerank import Candidate
from resrank_jax.rerank.factory import build_ranker
from resrank_jax.train.models import TINY
from tests.tiny_models import TINY_GEMMA3

_BASE = TINY["tiny-decoder"][0]
FAMILIES = {
    "llama3-rope": _BASE.replace(
        rope_scaling=RopeScaling("llama3", 8.0, original_max_position_embeddings=16)
    ),
    "mistral": _BASE.replace(family="mistral", sliding_window=6),
    "gemma3": TINY_GEMMA3.replace(vocab_size=_BASE.vocab_size, sliding_window=6),
}
WORDS = ["protein", "cell", "gene", "drug", "cancer", "virus", "patient", "study"]


@pytest.fixture(scope="module", params=list(FAMILIES))
def checkpoint(request, tmp_path_factory, smollm2_tokenizer):
    out = tmp_path_factory.mktemp(request.param)
    return request.param, write_random_checkpoint(
        FAMILIES[request.param], out, smollm2_tokenizer.hf, seed=3
    )


def test_checkpoint_reloads_with_the_family_flags(checkpoint):
    name, path = checkpoint
    loaded, _ = load_backbone(path)
    assert loaded.cfg == FAMILIES[name]


@pytest.mark.parametrize("ranker_name", ["dense", "e2rank", "resrank", "generative"])
def test_every_ranker_accepts_the_family(checkpoint, ranker_name):
    name, path = checkpoint
    rng = np.random.default_rng(0)
    cands = [Candidate(f"d{i}", " ".join(rng.choice(WORDS, 12)), 0.0) for i in range(5)]
    ranker = build_ranker(ranker_name, model=str(path), passage_max_length=24)
    ranking = ranker.rank("what causes cancer", cands)
    assert sorted(ranking.order.tolist()) == list(range(5))
    backbones = [getattr(ranker.model, "encoder", ranker.model)]
    if ranker_name == "resrank":
        backbones.append(ranker.model.reranker)
    for backbone in backbones:
        cfg = getattr(backbone, "backbone", backbone).cfg
        assert cfg == FAMILIES[name].replace(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    if ranker_name != "generative":  # random weights still tell passages apart
        assert np.isfinite(ranking.scores).all() and np.ptp(ranking.scores) > 0


@pytest.mark.slow
@pytest.mark.torch  # the real Gemma 3 270M weights
def test_gemma3_270m_preset_trains_a_few_steps(tmp_path):
    import subprocess

    from tests.train_runs import ROOT, metric_lines, train_cmd

    # fsdp over the 8 fake CPU devices: replicated, the params and AdamW state (4.3 GB per
    # copy) would be held 8 times in one process.
    cmd = train_cmd(tmp_path, "steps=2", "checkpoint_every=2", "mesh=(1,8,1)", preset="gemma3-270m")
    cmd += ["data.queries_per_step=8", "data.list_size=4", "data.passage_max_length=32"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = (tmp_path / "config.json").read_text()
    assert '"reranker": "gemma3-270m"' in config
    losses = [m["loss"] for m in metric_lines(tmp_path)]
    assert len(losses) == 2 and all(np.isfinite(losses))
