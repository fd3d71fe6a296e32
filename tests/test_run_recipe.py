"""A run carries its ranking recipe: ``eval.py --checkpoint`` rebuilds the ranker training
used (prompt layout, list size, document cut, prompt budget, instructions, lengths)."""

import numpy as np
import pytest

from resrank_jax.config import resolve_config
from resrank_jax.rerank import Candidate
from resrank_jax.rerank.factory import build_ranker, run_rankers
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.lists import TrainingList
from resrank_jax.train.loop import run_training
from resrank_jax.train.models import load_trained

OVERRIDES = [
    "model.mode=e2rank",
    "model.encoder=tiny-decoder",
    "data.list_size=4",
    "data.prompt_doc_words=3",
    "data.prompt_max_length=120",
    "data.pseudo_query_layout=released_train",
    "data.instructions=scifact",
    "steps=2",
    "checkpoint_every=2",
]


@pytest.fixture(scope="module")
def e2rank_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2rank_run")
    cfg = resolve_config("tiny", OVERRIDES)
    run_training(cfg, out, progress=False)
    return out, cfg


def test_eval_checkpoint_rebuilds_the_training_recipe(e2rank_run):
    out, cfg = e2rank_run
    ranker = build_ranker("e2rank", checkpoint=str(out))
    assert ranker.task.recipe == cfg.recipe()
    assert ranker.task.recipe.prompt_doc_words == 3 and ranker.task.recipe.list_size == 4
    longer = build_ranker("e2rank", checkpoint=str(out), passage_max_length=16)
    assert longer.task.recipe.passage_max_length == 16
    assert run_rankers(str(out))["dense"].task.recipe == cfg.recipe()
    with pytest.raises(ValueError, match="cannot serve ranker 'resrank'"):
        build_ranker("resrank", checkpoint=str(out))


def test_checkpoint_ranker_scores_what_training_scored(e2rank_run):
    out, _ = e2rank_run
    model, task, _ = load_trained(out)
    texts = [f"claim {i} about genes, proteins and the cells that make them" for i in range(6)]
    ranker = build_ranker("e2rank", checkpoint=str(out))
    prompt_text = task.encoder_tokenizer.hf.decode(ranker.task.prompt("genes?", texts).ids)
    assert "Given a scientific claim and some relevant documents" in prompt_text
    assert "[1] claim 0 about\n" in prompt_text and "[5]" not in prompt_text
    pooling_token = task.encoder_tokenizer.pooling_token  # released_train: inside the user turn
    assert f"\nQuery: genes?{pooling_token}<|im_end|>\n<|im_start|>assistant\n" in prompt_text
    ranking = ranker.rank("genes?", [Candidate(str(i), t) for i, t in enumerate(texts)])
    labels = np.arange(6, 0, -1.0, dtype=np.float32)[:4]
    tl = TrainingList("q", "genes?", list("abcd"), texts[:4], labels, labels)
    batch = BatchBuilder([tl], task).batch(np.array([0]), "qrels")
    trained_scores, _, _ = task.forward(model, batch, with_query=False)
    np.testing.assert_allclose(ranking.scores[:4], np.asarray(trained_scores)[0], atol=1e-5)
