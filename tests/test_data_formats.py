"""Readers: every malformed input fails with file and line; fuzzing finds no other crash."""

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resrank_jax.data.formats import (
    DataFormatError,
    read_candidates,
    read_corpus,
    read_qrels,
    read_qrels_with_format,
    read_queries,
    read_run,
)
from resrank_jax.errors import UserError

GOOD = {
    "qid": "q1",
    "query": "what is a gene",
    "candidates": [{"docid": "d1", "score": 2.0, "text": "a"}],
}


def write_lines(path, records):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"qid": "q2", "query": "x", ', "malformed JSON"),
        ({"qid": "q2", "candidates": [{"docid": "d1", "text": "a"}]}, "missing field 'query'"),
        ({"qid": "q2", "query": "x", "candidates": []}, "empty candidate list"),
        (
            {"qid": "q2", "query": "x", "candidates": [{"score": 1, "text": "a"}]},
            "missing field 'docid'",
        ),
        (
            {
                "qid": "q2",
                "query": "x",
                "candidates": [{"docid": "d", "text": "a"}, {"docid": "d", "text": "b"}],
            },
            "duplicate docid 'd'",
        ),
        (
            {"qid": "q1", "query": "x", "candidates": [{"docid": "d", "text": "a"}]},
            "duplicate qid 'q1'",
        ),
        (
            {
                "qid": "q2",
                "query": "x",
                "candidates": [{"docid": "d", "score": "high", "text": "a"}],
            },
            "score",
        ),
        ({"qid": "q2", "query": "x", "candidates": [{"docid": "d"}]}, "no text and no corpus"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_malformed_candidates_name_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "c.jsonl", [GOOD, bad])
    with pytest.raises(DataFormatError, match=rf"c\.jsonl:2: .*{message}"):
        read_candidates(path)


def test_docids_resolve_through_the_corpus(tmp_path):
    corpus = write_lines(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "body"}])
    cands = write_lines(
        tmp_path / "c.jsonl",
        [{"qid": "1", "query": "q", "candidates": [{"docid": "d1", "score": 1}]}],
    )
    [qc] = read_candidates(cands, read_corpus(corpus))
    assert qc.candidates[0].text == "T body"
    missing = write_lines(
        tmp_path / "m.jsonl", [{"qid": "1", "query": "q", "candidates": [{"docid": "zz"}]}]
    )
    with pytest.raises(DataFormatError, match=r"m\.jsonl:1: docid 'zz' is not in the corpus"):
        read_candidates(missing, read_corpus(corpus))


def test_rank_llm_and_rankgpt_formats(tmp_path):
    rank_llm = {
        "query": {"text": "q", "qid": 7},
        "candidates": [
            {"docid": "a", "score": 1.0, "doc": {"contents": "x"}},
            {"docid": "b", "score": 0.5, "doc": {"segment": "y"}},
        ],
    }
    rankgpt = {"query": "q2", "hits": [{"content": "z", "qid": 8, "docid": "c", "score": 3}]}
    out = read_candidates(write_lines(tmp_path / "c.jsonl", [rank_llm, rankgpt]))
    assert [(q.qid, q.query, [c.text for c in q.candidates]) for q in out] == [
        ("7", "q", ["x", "y"]),
        ("8", "q2", ["z"]),
    ]
    as_array = tmp_path / "c.json"
    as_array.write_text(json.dumps([rank_llm]))
    assert read_candidates(as_array)[0].qid == "7"


def test_qrels_run_and_queries_errors(tmp_path):
    qrels = tmp_path / "q.txt"
    qrels.write_text("1 0 d1 1\n1 0 d2 x\n")
    with pytest.raises(DataFormatError, match=r"q\.txt:2: relevance 'x'"):
        read_qrels(qrels)
    qrels.write_text("1 0 d1 1\n1 0 d1 2\n")
    with pytest.raises(DataFormatError, match=r"q\.txt:2: conflicting"):
        read_qrels(qrels)
    qrels.write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n")
    assert read_qrels(qrels) == {"1": {"d1": 1}}
    run = tmp_path / "r.run"
    run.write_text("1 Q0 d1 1 2.0 x\n1 Q0 d2 2 1.0\n")
    with pytest.raises(DataFormatError, match=r"r\.run:2: expected 6 columns"):
        read_run(run)
    topics = tmp_path / "t.tsv"
    topics.write_text("1\tfirst\n2\n")
    with pytest.raises(DataFormatError, match=r"t\.tsv:2:"):
        read_queries(topics)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 0 d1 2\n1 0 d2 -1\n", ({"1": {"d1": 2, "d2": -1}}, "trec")),
        ("query-id\tcorpus-id\tscore\n1\td1\t1\n", ({"1": {"d1": 1}}, "beir")),
        ("\ufeffquery-id corpus-id score\r\n\r\n1 d1 100\r\n", ({"1": {"d1": 100}}, "beir")),
        ("qid docid rel\n1 d1 0\n", ({"1": {"d1": 0}}, "beir")),  # a header by other names
    ],
)
def test_qrels_formats(tmp_path, text, expected):
    path = tmp_path / "q.txt"
    path.write_text(text, encoding="utf-8")
    assert read_qrels_with_format(path) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [  # TREC with its relevance column lost: docid 1017759 must not become a grade
        ("19335 0 1017759\n", r"q\.txt:1: 3 columns '19335 0 1017759': neither TREC qrels "),
        ("1 0 d1 1\n\n19335 0 1017759\n", r"q\.txt:3: 3-column row in TREC-format qrels"),
        ("1 0 d1 1\n1 0 d2 1017759\n", r"q\.txt:2: relevance 1017759 is outside -1\.\.100"),
        ("1 0 d1 -2\n", r"q\.txt:1: relevance -2 is outside -1\.\.100"),
        ("query-id corpus-id score\n1 d1 101\n", r"q\.txt:2: relevance 101 is outside"),
        ("1 0 d1 1.0\n", r"q\.txt:1: relevance '1\.0' is not an integer"),
        ("query-id corpus-id score\n1 0 d1 1\n", r"q\.txt:2: 4-column row in BEIR-format"),
        ("1 d1\n", r"q\.txt:1: 2 columns '1 d1': expected TREC 'qid 0 docid rel' or BEIR"),
        ("1 0 d1 1\n\xff\n", r"q\.txt:2: not UTF-8 text \(byte 0xff\)"),
        ("query-id corpus-id score\n", r"q\.txt: no judgments in file"),
        ("", r"q\.txt: no judgments in file"),
    ],
)
def test_qrels_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "q.txt"
    path.write_bytes(text.encode("latin-1") if "\xff" in text else text.encode())
    with pytest.raises(DataFormatError, match=message) as caught:
        read_qrels(path)
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)


def test_empty_files_are_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: no queries in file"):
        read_candidates(empty)
    with pytest.raises(DataFormatError, match=r"empty\.jsonl: no documents in file"):
        read_corpus(empty)


def test_shared_data_reads():
    corpus = read_corpus("data/scifact/corpus.jsonl")
    assert len(corpus) == 5183
    test = read_candidates("data/scifact/candidates.test.jsonl", corpus)
    assert len(test) == 300 and all(len(q.candidates) == 100 for q in test)
    assert len(read_queries("data/scifact/queries.jsonl")) == 1109
    assert read_qrels("data/scifact/qrels/test.tsv") == read_qrels("data/scifact/qrels.test.txt")


@given(st.text(max_size=300))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_files_fail_only_with_documented_errors(tmp_path, text):
    path = tmp_path / "fuzz.jsonl"
    path.write_text(text, encoding="utf-8")
    for reader in (read_candidates, read_corpus, read_qrels, read_run, read_queries):
        with contextlib.suppress(DataFormatError):
            reader(path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["qid", "query", "candidates", "docid", "score", "text", "hits", "doc", "_id"]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(st.lists(json_values, min_size=1, max_size=3))
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_json_records_fail_only_with_documented_errors(tmp_path, records):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    for reader in (read_candidates, read_corpus, read_queries):
        with contextlib.suppress(DataFormatError):
            reader(path)
