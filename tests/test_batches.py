"""Training batches feed the model what inference feeds it."""

import numpy as np
import pytest

from resrank_jax.rerank import Candidate
from resrank_jax.rerank.embedding_rankers import E2RankRanker
from resrank_jax.train.batches import BatchBuilder
from resrank_jax.train.lists import TrainingList

TEXTS = ["Genes encode proteins in every cell.", "Paris is in France.", "Cells divide by mitosis."]


@pytest.mark.parametrize("tokenizer", ["minilm_tokenizer", "smollm2_tokenizer"])
def test_e2rank_training_pseudo_query_is_the_inference_pseudo_query(tokenizer, request):
    tok = request.getfixturevalue(tokenizer)
    lists = [
        TrainingList(
            "q1",
            "what do genes encode?",
            ["a", "b", "c"],
            TEXTS,
            np.array([1, 0, 0], np.float32),
            np.array([3, 2, 1], np.float32),
        )
    ]
    builder = BatchBuilder(
        lists,
        tok,
        tok,
        mode="e2rank",
        list_size=3,
        passage_max_length=16,
        query_max_length=16,
        prompt_doc_words=4,
        prompt_max_length=40,
    )
    batch = builder.batch(np.array([0]), "qrels")
    trained_ids = batch["pseudo_ids"][0][batch["pseudo_mask"][0].astype(bool)].tolist()
    ranker = E2RankRanker(None, tok, top_k=3, prompt_doc_words=4, prompt_max_length=40)
    candidates = [Candidate(d, t) for d, t in zip("abc", TEXTS, strict=True)]
    rows, truncated = tok.token_rows(
        [ranker.pseudo_query(lists[0].query, candidates)], max_length=40
    )
    assert trained_ids == rows[0]
    assert builder.stats["truncated_prompts"] == truncated == 1  # 3 docs + query > 40 tokens


def test_prompts_pad_to_the_bucket_of_the_global_batch(minilm_tokenizer, smollm2_tokenizer):
    def training_list(qid: str, query: str) -> TrainingList:
        grades = np.array([1, 0, 0], np.float32)
        return TrainingList(qid, query, ["a", "b", "c"], TEXTS, grades, grades + 1)

    lists = [training_list("short", "what do genes encode?"), training_list("long", "gene " * 200)]
    builder = BatchBuilder(
        lists,
        minilm_tokenizer,
        smollm2_tokenizer,
        mode="resrank",
        list_size=3,
        passage_max_length=16,
        query_max_length=16,
    )
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
