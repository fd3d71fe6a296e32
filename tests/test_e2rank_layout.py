"""E2Rank's pseudo-query as released (github Alibaba-NLP/E2Rank, ``src/eval.py``), pinned
token by token; the instruction and the query are never cut; per-dataset instructions."""

import pytest

from resrank_jax.instructions import INSTRUCTIONS, dataset_key
from resrank_jax.tasks import Recipe, get_task

# SmolLM2-Instruct's chat template adds its default system turn; the user turn is E2Rank's
# eval.py template; the assistant turn is opened and nothing follows it (no EOS appended:
# the pooled token is the template's last one).
RELEASED_EVAL = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n<|im_start|>user\nGiven a web search query and some relevant documents, "
    "rerank the documents that answer the query:\nDocuments:\n[1] doc one\n[2] doc two\n"
    "Search Query: what is x<|im_end|>\n<|im_start|>assistant\n"
)


def e2rank(tok, **recipe):
    return get_task("e2rank")(Recipe(**{"list_size": 2, **recipe}), tok)


def test_released_eval_layout_token_by_token(smollm2_tokenizer):
    tok = smollm2_tokenizer
    prompt = e2rank(tok).prompt("what is x", ["doc one", "doc two", "doc three"])
    assert prompt.ids == tok.hf(RELEASED_EVAL, add_special_tokens=False)["input_ids"]
    assert tok.hf.decode(prompt.ids) == RELEASED_EVAL  # only the top list_size=2 documents
    assert prompt.ids[-1] != tok.eos_id and prompt.slot_positions == [] and not prompt.truncated


def test_released_train_layout_puts_the_pad_token_inside_the_user_turn(smollm2_tokenizer):
    tok = smollm2_tokenizer
    prompt = e2rank(tok, pseudo_query_layout="released_train").prompt("what is x", ["a", "b"])
    text = tok.hf.decode(prompt.ids)
    assert text.endswith(
        f"[1] a\n[2] b\nQuery: what is x{tok.pooling_token}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_documents_are_cut_to_words_as_released(smollm2_tokenizer):
    tok = smollm2_tokenizer
    long_doc = " ".join(f"w{i}" for i in range(50))
    prompt = e2rank(tok, prompt_doc_words=5).prompt("q", [long_doc, "short"])
    assert "[1] w0 w1 w2 w3 w4\n[2] short\n" in tok.hf.decode(prompt.ids)


@pytest.mark.parametrize("tokenizer", ["smollm2_tokenizer", "minilm_tokenizer"])
def test_query_and_instruction_survive_a_tight_budget(tokenizer, request):
    tok = request.getfixturevalue(tokenizer)
    query = "which protein binds the receptor in human cells"
    docs = ["alpha " * 300, "beta gamma " * 10, "delta " * 300]
    task = e2rank(tok, list_size=3, prompt_max_length=160)
    prompt = task.prompt(query, docs)
    text = tok.hf.decode(prompt.ids)
    assert prompt.truncated == 1 and len(prompt.ids) <= 160
    assert query in text and "rerank the documents that answer the query" in text
    # the short document is kept whole; the two long ones share the rest equally
    counts = [text.count("alpha"), text.count("beta gamma"), text.count("delta")]
    assert counts[1] == 10 and counts[0] > 10 and abs(counts[0] - counts[2]) <= 1
    fits_untruncated = e2rank(tok, list_size=3, prompt_max_length=4096).prompt(query, docs)
    assert len(fits_untruncated.ids) > 160 and not fits_untruncated.truncated


def test_bert_pseudo_query_has_no_chat_template(minilm_tokenizer):
    tok = minilm_tokenizer
    ids = e2rank(tok).prompt("what is x", ["doc one", "doc two"]).ids
    assert ids[0] == tok.hf.cls_token_id and ids[-1] == tok.hf.sep_token_id
    assert tok.hf.decode(ids[1:-1]) == (
        "given a web search query and some relevant documents, rerank the documents that "
        "answer the query : documents : [ 1 ] doc one [ 2 ] doc two search query : what is x"
    )


def test_per_dataset_instructions():
    assert dataset_key("SciFact-test") == dataset_key("scifact/test") == "scifact"
    assert dataset_key("DL19") == dataset_key("irds:msmarco-passage/trec-dl-2019") == "dl19"
    assert dataset_key("irds:beir/trec-covid") == "covid" and dataset_key("mine") == "default"
    assert INSTRUCTIONS["scifact"].query == (
        "Given a scientific claim, retrieve documents that support or refute the claim"
    )


def test_scifact_instructions_change_the_prompt(smollm2_tokenizer):
    tok = smollm2_tokenizer
    text = tok.hf.decode(e2rank(tok, instructions="scifact").prompt("claim", ["d"]).ids)
    assert (
        "Given a scientific claim and some relevant documents, rerank the documents that best "
        "support or refute the claim:\nDocuments:\n[1] d\nSearch Query: claim" in text
    )


def test_for_dataset_switches_instructions_and_shares_the_rest(minilm_tokenizer):
    from resrank_jax import init_backbone
    from resrank_jax.models.embedding_model import EmbeddingModel
    from resrank_jax.models.encoder import Encoder
    from resrank_jax.rerank import Candidate
    from resrank_jax.rerank.model_ranker import ModelRanker
    from resrank_jax.train.models import TINY

    model = EmbeddingModel(Encoder(init_backbone(TINY["tiny-bert"][0], seed=1)))
    task = e2rank(minilm_tokenizer, passage_max_length=16, prompt_max_length=512)
    ranker = ModelRanker(task, model)
    scifact = ranker.for_dataset(dataset_key("SciFact-test"))
    assert ranker.task.recipe.instructions == "default"
    assert scifact.task.recipe.instructions == "scifact"
    assert scifact.cache is ranker.cache and scifact._score is ranker._score
    seen = []
    scifact._score = lambda m, e, b, q: (seen.append(b["prompt_ids"]), ranker._score(m, e, b, q))[1]
    cands = [Candidate("a", "claim one"), Candidate("b", "claim two")]
    scifact.rank("a claim", cands)
    text = minilm_tokenizer.hf.decode(seen[0][0], skip_special_tokens=True)
    assert text.startswith("given a scientific claim and some relevant documents")
    assert ranker.rank("a claim", cands).stats["passages_encoded"] == 0  # shared cache
