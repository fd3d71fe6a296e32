"""Training and ranking share one definition of each model: the same list gives the same
token ids and the same scores whether it is a training batch or a ranker's call."""

import numpy as np
import pytest

from resrank_jax import init_backbone
from resrank_jax.models.config import ResRankConfig
from resrank_jax.models.encoder import Encoder
from resrank_jax.rerank import Candidate
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.tasks import Recipe, get_task
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.lists import TrainingList
from resrank_jax.train.models import TINY

TEXTS = [
    "Genes encode proteins in every cell of the body, and mutations change them.",
    "Paris is in France, on the Seine, and is its capital city since long ago.",
    "Cells divide by mitosis into two daughter cells with the same chromosomes.",
    "Vaccines train the immune system to recognise a virus before an infection.",
]
QUERY = "what do genes encode?"
# name -> (encoder: tiny backbone of that tokenizer, tokenizer fixture)
ENCODERS = {
    "minilm": ("tiny-bert", "minilm_tokenizer"),
    "smollm2": ("tiny-decoder", "smollm2_tokenizer"),
}


def training_list() -> TrainingList:
    grades = np.array([1, 0, 0, 0], np.float32)
    return TrainingList("q1", QUERY, list("abcd"), TEXTS, grades, np.arange(4, 0, -1.0))


def model_and_task(name: str, encoder: str, request):
    """A tiny random model of task ``name`` on real tokenizers; passages cut at 16 tokens
    (so training's fixed padding equals the ranker's bucket)."""
    backbone, tok_fixture = ENCODERS[encoder]
    enc_tok = request.getfixturevalue(tok_fixture)
    rr_tok = request.getfixturevalue("smollm2_tokenizer")
    task_cls = get_task(name)
    reranker = init_backbone(TINY["tiny-decoder"][0], seed=2) if task_cls.needs_reranker else None
    model = task_cls.make_model(
        Encoder(init_backbone(TINY[backbone][0], seed=1)),
        reranker,
        ResRankConfig(phi="linear"),
        0,
    )
    recipe = Recipe(list_size=4, passage_max_length=16, query_max_length=16, prompt_max_length=96)
    return model, task_cls(recipe, enc_tok, rr_tok)


@pytest.mark.parametrize("encoder", ["minilm", "smollm2"])
@pytest.mark.parametrize("name", ["resrank", "e2rank"])
def test_training_and_ranking_give_identical_tokens_and_scores(name, encoder, request):
    model, task = model_and_task(name, encoder, request)
    batch = BatchBuilder([training_list()], task).batch(np.array([0]), "qrels")
    train_scores, _, _ = task.forward(model, batch, with_query=False)

    ranker = ModelRanker(task, model)
    seen = []
    score = ranker._score
    ranker._score = lambda m, e, b, q: (seen.append(b), score(m, e, b, q))[1]
    ranking = ranker.rank(QUERY, [Candidate(d, t) for d, t in zip("abcd", TEXTS, strict=True)])

    (ranked,) = seen
    real_train = batch["prompt_mask"][0].astype(bool)
    real_rank = ranked["prompt_mask"][0].astype(bool)
    assert (
        ranked["prompt_ids"][0][real_rank].tolist() == batch["prompt_ids"][0][real_train].tolist()
    )
    if task.uses_slots:  # the same slots, counted from the end (both are left-padded)
        np.testing.assert_array_equal(
            ranked["prompt_ids"].shape[1] - ranked["slot_pos"][0, :4],
            batch["prompt_ids"].shape[1] - batch["slot_pos"][0],
        )
    np.testing.assert_allclose(ranking.scores, np.asarray(train_scores)[0], atol=1e-5)


def test_prompts_pad_to_the_bucket_of_the_global_batch(minilm_tokenizer, smollm2_tokenizer):
    def training_list_of(qid: str, query: str) -> TrainingList:
        grades = np.array([1, 0, 0], np.float32)
        return TrainingList(qid, query, ["a", "b", "c"], TEXTS[:3], grades, grades + 1)

    lists = [training_list_of("short", QUERY), training_list_of("long", "gene " * 200)]
    recipe = Recipe(list_size=3, passage_max_length=16, query_max_length=16)
    task = get_task("resrank")(recipe, minilm_tokenizer, smollm2_tokenizer)
    builder = BatchBuilder(lists, task)
    short, long_ = builder.batch(np.array([0]), "qrels"), builder.batch(np.array([1]), "qrels")
    both = builder.batch(np.array([0, 1]), "qrels")
    assert short["prompt_ids"].shape == (1, 128)  # one long query no longer widens every batch
    assert long_["prompt_ids"].shape == (1, 512) and both["prompt_ids"].shape == (2, 512)
    # a process's shard of the global batch [0, 1] has the global width and equals its rows
    shard = builder.batch(np.array([0]), "qrels", batch_indices=np.array([0, 1]))
    for key, value in shard.items():
        np.testing.assert_array_equal(value, both[key][:1], err_msg=key)
    # the same prompt, padded further on the left (decoders read their last token)
    np.testing.assert_array_equal(shard["prompt_ids"][:, -128:], short["prompt_ids"])
    np.testing.assert_array_equal(shard["slot_pos"], short["slot_pos"] + 512 - 128)
    assert (shard["prompt_ids"][:, :-128] == smollm2_tokenizer.pad_id).all()


def test_doc_keys_and_judged_labels_reach_the_batch(minilm_tokenizer, smollm2_tokenizer):
    recipe = Recipe(list_size=5, passage_max_length=16, query_max_length=16)
    task = get_task("resrank")(recipe, minilm_tokenizer, smollm2_tokenizer)
    lists = [
        training_list(),
        TrainingList(
            "q2", "capital", list("ca"), TEXTS[2::-2], np.array([0, 1.0]), np.array([2, 1.0])
        ),
    ]
    batch = BatchBuilder(lists, task).batch(np.array([0, 1]), "teacher")
    keys = batch["doc_key"]
    assert keys[0, 2] == keys[1, 0] and len(set(keys[0, :4].tolist())) == 4  # docid "c" twice
    np.testing.assert_array_equal(batch["qrels_labels"], [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]])
    np.testing.assert_array_equal(batch["labels"][1], [2, 1, 0, 0, 0])
    np.testing.assert_array_equal(batch["cand_mask"], [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
