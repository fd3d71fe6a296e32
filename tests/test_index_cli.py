"""`resrank index` and `resrank rerank --index`: a saved dense index of SciFact documents,
retrieval checked against NumPy cosines over the whole corpus, reranking that encodes no
passage again (the index serves the reranker's cache), and one-line errors for indexes that
another encoder made or that are not indexes. The packaged MiniLM at passage length 32."""

import argparse
import json

import numpy as np
import pytest

from resrank_jax.cli import index as index_cli
from resrank_jax.cli import rerank as rerank_cli
from resrank_jax.data.formats import read_qrels
from resrank_jax.data.requests import read_corpus_texts, read_topics
from resrank_jax.errors import ConfigError
from resrank_jax.index_dir import read_index, retrieve
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.rerank.factory import build_ranker

SCIFACT = "data/scifact"
QIDS = ("1", "3", "5")
MINILM = ("--model", "all-minilm-l6-v2", "--passage-max-length", "32")


def call(module, *argv) -> int:
    """A subcommand in-process (argparse + ``run``), errors raised as they are."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.run(parser.parse_args([str(a) for a in argv] + ["--quiet"]))


def trec_lists(path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        out.setdefault(line.split()[0], []).append(line.split()[2])
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """150 SciFact documents (the judged ones of three test queries among them) as a TSV
    corpus, the three queries as JSONL topics, and an index of them."""
    d = tmp_path_factory.mktemp("scifact")
    texts = read_corpus_texts(f"{SCIFACT}/corpus.jsonl")
    judged = {doc for docs in read_qrels(f"{SCIFACT}/qrels.test.txt").values() for doc in docs}
    keep = sorted(judged & set(texts))[:30] + sorted(set(texts) - judged)[:120]
    (d / "corpus.tsv").write_text("".join(f"{k}\t{texts[k]}\n" for k in keep))
    queries = read_topics(f"{SCIFACT}/queries.jsonl")
    (d / "topics.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": queries[q]}) + "\n" for q in QIDS)
    )
    call(index_cli, "--corpus", d / "corpus.tsv", "--output", d / "idx", *MINILM)
    return d


def test_index_holds_the_encoders_vectors_of_every_document(corpus):
    saved = read_index(corpus / "idx")
    texts = read_corpus_texts(corpus / "corpus.tsv")
    assert saved.index.docids == list(texts) and saved.texts == texts
    assert saved.manifest["documents"] == 150 and saved.manifest["passage_max_length"] == 32
    assert saved.manifest["source"]["model"] == "all-minilm-l6-v2"
    ranker = build_ranker("dense", model="all-minilm-l6-v2", passage_max_length=32)
    assert saved.index.encoder_key == ranker.encoder_key
    some = list(texts)[:7]
    reference = encode_texts(
        ranker.model.encoder, ranker.task.encoder_tokenizer, [texts[d] for d in some], max_length=32
    )
    np.testing.assert_allclose(saved.index.vectors[:7], reference, rtol=0, atol=1e-5)


def test_rerank_from_the_index_retrieves_the_numpy_top_k_and_encodes_nothing(corpus, tmp_path):
    out = tmp_path / "dense.run"
    call(rerank_cli, "--index", corpus / "idx", "--topics", corpus / "topics.jsonl",
         "--ranker", "dense", *MINILM, "--depth", 10, "--output-trec", out)  # fmt: skip
    saved = read_index(corpus / "idx")
    ranker = build_ranker("dense", model="all-minilm-l6-v2", passage_max_length=32)
    topics = read_topics(corpus / "topics.jsonl")
    q_qe = encode_texts(
        ranker.model.encoder,
        ranker.task.encoder_tokenizer,
        [ranker.task.query_input(topics[q]) for q in QIDS],
        max_length=ranker.task.recipe.query_max_length,
    )
    cos = q_qe.astype(np.float64) @ saved.index.vectors.T.astype(np.float64)  # NumPy search
    expected = {
        q: [saved.index.docids[i] for i in np.argsort(-cos[j], kind="stable")[:10]]
        for j, q in enumerate(QIDS)
    }
    assert trec_lists(out) == expected
    requests = retrieve(ranker, saved, topics, 10)
    rankings = ranker.rank_batch([qc.query for qc in requests.queries],
                                 [qc.candidates for qc in requests.queries])  # fmt: skip
    assert [r.stats["passages_encoded"] for r in rankings] == [0, 0, 0]


def test_e2rank_reranks_what_the_same_encoder_retrieved(corpus, tmp_path):
    """Retrieve-then-rerank with one model: the E2Rank ranker of MiniLM reads the index its
    own encoder made; its ranking equals reranking the same lists given as a TREC run."""
    dense, e2rank = tmp_path / "dense.run", tmp_path / "e2rank.run"
    common = ("--topics", corpus / "topics.jsonl", *MINILM, "--depth", 8)
    call(
        rerank_cli, "--index", corpus / "idx", *common, "--ranker", "dense", "--output-trec", dense
    )
    call(rerank_cli, "--index", corpus / "idx", *common, "--ranker", "e2rank",
         "--output-trec", e2rank)  # fmt: skip
    again = tmp_path / "again.run"
    call(rerank_cli, "--run", dense, "--corpus", corpus / "corpus.tsv", *common,
         "--ranker", "e2rank", "--output-trec", again)  # fmt: skip
    assert trec_lists(e2rank) == trec_lists(again)
    assert {q: sorted(d) for q, d in trec_lists(e2rank).items()} == {
        q: sorted(d) for q, d in trec_lists(dense).items()
    }


def test_index_errors_are_one_line(corpus, tmp_path):
    topics = ("--topics", corpus / "topics.jsonl")
    out = ("--output-trec", tmp_path / "o.run")
    with pytest.raises(ConfigError, match="another encoder or passage length"):
        call(rerank_cli, "--index", corpus / "idx", *topics, "--ranker", "dense",
             "--model", "all-minilm-l6-v2", "--passage-max-length", "64", *out)  # fmt: skip
    with pytest.raises(ConfigError, match="not an index directory"):
        call(rerank_cli, "--index", tmp_path, *topics, "--ranker", "dense", *MINILM, *out)
    with pytest.raises(ConfigError, match="--index needs --topics"):
        call(rerank_cli, "--index", corpus / "idx", "--ranker", "dense", *MINILM, *out)
    with pytest.raises(ConfigError, match="--index takes --topics, not --corpus"):
        call(rerank_cli, "--index", corpus / "idx", *topics, "--corpus", corpus / "corpus.tsv",
             "--ranker", "dense", *MINILM, *out)  # fmt: skip
    with pytest.raises(ConfigError, match="already holds an index"):
        call(index_cli, "--corpus", corpus / "corpus.tsv", "--output", corpus / "idx", *MINILM)
    with pytest.raises(ConfigError, match="no encoder"):
        call(index_cli, "--corpus", corpus / "corpus.tsv", "--output", tmp_path / "i2",
             "--ranker", "bm25")  # fmt: skip
