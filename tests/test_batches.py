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
