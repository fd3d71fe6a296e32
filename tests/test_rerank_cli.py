"""`resrank rerank`: TREC run + topics + corpus, rank_llm requests, outputs, optional metrics
(checked against ir_measures on the written run), windows, and input errors with file:line.

Cheap on purpose: 3 DL19 queries, the packaged MiniLM at passage length 32 for the model
cases, the identity ranker (`bm25`) elsewhere, and a tiny random decoder for ResRank windows.
"""

import argparse
import contextlib
import itertools
import json
from pathlib import Path

import ir_measures
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resrank_jax.cli.rerank import add_arguments, main, run
from resrank_jax.data.formats import DataFormatError, read_candidates, read_qrels, read_run
from resrank_jax.data.requests import (
    rank_llm_doc_text,
    read_corpus_texts,
    read_requests,
    read_run_lists,
    read_topics,
)
from resrank_jax.errors import ConfigError
from resrank_jax.rerank.base import sliding_windows
from resrank_jax.rerank.factory import DEFAULT_WINDOW, build_ranker, check_window, task_and_window
from resrank_jax.rerank_run import strictly_decreasing

DL19 = "data/trec-dl19"
QIDS = ("264014", "104861", "130510")
MINILM = ("--model", "all-minilm-l6-v2", "--passage-max-length", "32")


def lines_of(path) -> list[str]:
    """The lines of a text file, ends kept."""
    return Path(path).read_text().splitlines(keepends=True)


def rerank(*argv) -> int:
    """``resrank rerank ARGV`` in-process (argparse + ``run``), errors raised as they are."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([str(a) for a in argv] + ["--quiet"]))


def ranked(path) -> dict[str, list[str]]:
    """``qid -> docids`` of a TREC run in file order, checking ranks 1.. and that sorting by
    score (as trec_eval does) gives the same order."""
    out, lines = {}, {}
    for line in Path(path).read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        out.setdefault(qid, []).append(docid)
        lines.setdefault(qid, []).append((int(rank), float(score)))
    for rows in lines.values():
        assert [r for r, _ in rows] == list(range(1, len(rows) + 1))
        assert all(a[1] > b[1] for a, b in itertools.pairwise(rows))
    return out


@pytest.fixture(scope="module")
def dl19(tmp_path_factory):
    """3 DL19 queries as a BM25 run (100 each), topics TSV, BEIR corpus and their qrels."""
    d = tmp_path_factory.mktemp("dl19")
    queries = [q for q in read_candidates(f"{DL19}/candidates.jsonl") if q.qid in QIDS]
    (d / "bm25.run").write_text(
        "".join(line for line in lines_of(f"{DL19}/bm25.run") if line.split()[0] in QIDS)
    )
    (d / "topics.tsv").write_text("".join(f"{q.qid}\t{q.query}\n" for q in queries))
    docs = {c.docid: c.text for q in queries for c in q.candidates}
    (d / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": k, "title": "", "text": t}) + "\n" for k, t in docs.items())
    )
    qrels = read_qrels(f"{DL19}/qrels.txt")
    (d / "qrels.txt").write_text(
        "".join(f"{q} 0 {doc} {g}\n" for q in QIDS for doc, g in qrels[q].items())
    )
    return d, {q.qid: q for q in queries}


def test_run_topics_corpus_without_qrels_reranks_the_top_k(dl19, tmp_path):
    d, queries = dl19
    trec, jsonl = tmp_path / "out.run", tmp_path / "out.jsonl"
    args = ["--run", d / "bm25.run", "--topics", d / "topics.tsv", "--corpus", d / "corpus.jsonl"]
    rerank(*args, "--ranker", "dense", *MINILM, "--depth", 10, "--output-trec", trec,
           "--output-jsonl", jsonl)  # fmt: skip
    out = ranked(trec)
    assert list(out) == list(QIDS)
    ranker = build_ranker("dense", model="all-minilm-l6-v2", passage_max_length=32)
    for qid, docids in out.items():
        first_stage = [c.docid for c in queries[qid].candidates]
        assert sorted(docids) == sorted(first_stage) and len(docids) == 100
        own = ranker.rank(queries[qid].query, queries[qid].candidates[:10])
        assert docids[:10] == [first_stage[i] for i in own.order]
        assert docids[10:] == first_stage[10:]
    # the rank_llm JSONL holds the same lists and scores, best first, with the texts
    trec_scores = {(q, d): float(s) for q, _, d, _, s, _ in map(str.split, lines_of(trec))}
    records = [json.loads(line) for line in lines_of(jsonl)]
    assert [r["query"]["qid"] for r in records] == list(QIDS)
    for r in records:
        qid = r["query"]["qid"]
        assert r["query"]["text"] == queries[qid].query
        assert [c["docid"] for c in r["candidates"]] == out[qid]
        assert all(c["score"] == trec_scores[(qid, c["docid"])] for c in r["candidates"])
        texts = {c.docid: c.text for c in queries[qid].candidates}
        assert all(c["doc"] == {"contents": texts[c["docid"]]} for c in r["candidates"])


def test_rank_llm_string_and_dict_docs_rank_the_same(dl19, tmp_path):
    _, queries = dl19
    keys = ("contents", "segment", "text")
    as_string, as_dict = tmp_path / "s.jsonl", tmp_path / "d.jsonl"
    for path, doc in ((as_string, lambda i, t: t), (as_dict, lambda i, t: {keys[i % 3]: t})):
        path.write_text(
            "".join(
                json.dumps(
                    {
                        "query": {"text": queries[q].query, "qid": int(q)},
                        "candidates": [
                            {"docid": c.docid, "score": c.score, "doc": doc(i, c.text)}
                            for i, c in enumerate(queries[q].candidates[:12])
                        ],
                    }
                )
                + "\n"
                for q in QIDS[:2]
            )
        )
    runs = {}
    for path in (as_string, as_dict):
        trec, out = tmp_path / f"{path.stem}.run", tmp_path / f"{path.stem}.out.jsonl"
        rerank("--requests", path, "--ranker", "dense", *MINILM, "--depth", 8,
               "--output-trec", trec, "--output-jsonl", out)  # fmt: skip
        runs[path.stem] = trec.read_text()
        back = read_requests(out)  # the output reads back, best first, same texts
        assert [q.qid for q in back.queries] == list(QIDS[:2])
        for qc in back.queries:
            texts = {c.docid: c.text for c in queries[qc.qid].candidates}
            assert all(c.text == texts[c.docid] for c in qc.candidates)
            assert [c.docid for c in qc.candidates] == ranked(trec)[qc.qid]
        records = [json.loads(line) for line in lines_of(out)]
        first = records[0]["candidates"][0]
        assert set(records[0]) == {"query", "candidates"} and set(first) == {
            "docid",
            "score",
            "doc",
        }
        if path is as_dict:  # dict docs are written back as they came
            docs = {c["docid"]: c["doc"] for r in records for c in r["candidates"]}
            assert any("segment" in doc for doc in docs.values())
    assert runs["s"] == runs["d"]


def test_rank_llm_doc_text_follows_rank_llm():
    assert rank_llm_doc_text({"contents": "a", "text": "b"}) == "b"  # text first
    assert rank_llm_doc_text({"segment": " s ", "title": "T"}) == "Title: T Content:  s"
    assert rank_llm_doc_text({"passage": "p", "title": ""}) == "p"
    assert rank_llm_doc_text({"title": "T"}) is None
    assert rank_llm_doc_text({"text": 3}) is None


def test_metrics_equal_ir_measures_on_the_written_run(dl19, tmp_path):
    d, _ = dl19
    trec, tsv, js, metrics_json = (tmp_path / n for n in ("o.run", "pq.tsv", "pq.json", "m.json"))
    args = ["--run", d / "bm25.run", "--topics", d / "topics.tsv", "--corpus", d / "corpus.jsonl"]
    rerank(*args, "--ranker", "bm25", "--depth", 10, "--qrels", d / "qrels.txt",
           "--measures", "nDCG@10 RR@10 R@100 P(rel=1)@5 map", "--output-trec", trec,
           "--per-query", tsv, "--metrics-json", metrics_json)  # fmt: skip
    metrics = json.loads(metrics_json.read_text())
    # TREC DL qrels: binary measures count rel >= 2 unless the measure says otherwise
    names = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100", "P@5", "AP(rel=2)"]
    assert metrics["rel_level"] == 2 and metrics["queries"] == 3
    assert [k for k in metrics if k in names] == names
    measures = [ir_measures.parse_measure(n) for n in names]
    qrels, written = read_qrels(d / "qrels.txt"), read_run(trec)
    reference = ir_measures.calc_aggregate(measures, qrels, written)
    for name, measure in zip(names, measures, strict=True):
        assert metrics[name] == pytest.approx(reference[measure], abs=1e-12)
    rows = [line.split("\t") for line in Path(tsv).read_text().splitlines()]
    assert rows[0] == ["qid", *names]
    per_query = {r[0]: dict(zip(names, map(float, r[1:]), strict=True)) for r in rows[1:]}
    expected = {
        (m.query_id, str(m.measure)): m.value
        for m in ir_measures.iter_calc(measures, qrels, written)
    }
    assert len(expected) == 3 * len(names)
    for (qid, name), value in expected.items():
        assert per_query[qid][name] == pytest.approx(value, abs=1e-12)
    rerank(*args, "--ranker", "bm25", "--qrels", d / "qrels.txt", "--per-query", js)
    assert set(json.loads(js.read_text())) == set(QIDS)


def test_option_and_measure_errors_are_one_line(dl19, tmp_path, capsys):
    d, _ = dl19
    args = ["--run", d / "bm25.run", "--topics", d / "topics.tsv", "--corpus", d / "corpus.jsonl"]
    with pytest.raises(ConfigError, match=r"measure 'foo@10'"):
        rerank(*args, "--ranker", "bm25", "--qrels", d / "qrels.txt", "--measures", "foo@10")
    with pytest.raises(ConfigError, match="--measures needs qrels"):
        rerank(*args, "--ranker", "bm25", "--measures", "nDCG@10", "--output-trec", tmp_path / "o")
    with pytest.raises(ConfigError, match="nothing to write"):
        rerank(*args, "--ranker", "bm25")
    with pytest.raises(ConfigError, match="--run needs --topics"):
        rerank("--run", d / "bm25.run", "--ranker", "bm25", "--output-trec", tmp_path / "o")
    with pytest.raises(ConfigError, match="give one input"):
        rerank(*args, "--irds", "x", "--ranker", "bm25", "--output-trec", tmp_path / "o")
    with pytest.raises(ConfigError, match="does not rank in windows"):
        rerank(*args, "--ranker", "dense", "--window", 4, "--output-trec", tmp_path / "o")
    with pytest.raises(ConfigError, match="--depth must be >= 1"):
        rerank(*args, "--ranker", "bm25", "--depth", 0, "--output-trec", tmp_path / "o")
    argv = [*map(str, args), "--ranker", "bm25", "--qrels", str(d / "qrels.txt")]
    assert main([*argv, "--measures", "nDCG@10 RR@@10", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: measure 'RR@@10'")


def test_broken_inputs_name_file_and_line(dl19, tmp_path):
    d, _ = dl19
    lines = lines_of(d / "bm25.run")
    out = ("--ranker", "bm25", "--output-trec", tmp_path / "o.run")

    def from_run(run_lines, topics=d / "topics.tsv", corpus=d / "corpus.jsonl"):
        path = tmp_path / "bad.run"
        path.write_text("".join(run_lines))
        return rerank("--run", path, "--topics", topics, "--corpus", corpus, *out)

    unknown = lines[4].replace(lines[4].split()[2], "nosuchdoc")
    with pytest.raises(DataFormatError, match=r"bad\.run:5: docid 'nosuchdoc' \(query '264014'"):
        from_run([*lines[:4], unknown, *lines[5:]])
    with pytest.raises(DataFormatError, match=r"bad\.run:2: expected 6 columns"):
        from_run([lines[0], "264014 Q0 x 2 1.0\n"])
    with pytest.raises(DataFormatError, match=r"bad\.run:2: rank 'two' is not an integer"):
        from_run([lines[0], lines[1].replace(" 2 ", " two ")])
    with pytest.raises(DataFormatError, match=r"bad\.run:2: duplicate docid"):
        from_run([lines[0], lines[0]])
    topics = tmp_path / "t.tsv"
    topics.write_text(f"{QIDS[0]}\tq\n")
    with pytest.raises(DataFormatError, match=rf"bad\.run:101: query '{QIDS[1]}' is not in"):
        from_run(lines[:200], topics=topics)
    tsv = tmp_path / "c.tsv"
    tsv.write_text("d1\tfine\nno tab here\n")
    with pytest.raises(DataFormatError, match=r"c\.tsv:2: expected 'docid<TAB>text'"):
        from_run(lines[:3], corpus=tsv)

    def from_requests(*records: str):
        path = tmp_path / "req.jsonl"
        path.write_text("\n".join(records) + "\n")
        return rerank("--requests", path, *out)

    good = json.dumps(
        {"query": {"text": "q", "qid": 1}, "candidates": [{"docid": "a", "doc": "x"}]}
    )
    with pytest.raises(DataFormatError, match=r"req\.jsonl:2: malformed JSON"):
        from_requests(good, "{not json")
    with pytest.raises(DataFormatError, match=r"req\.jsonl:2: duplicate qid '1'"):
        from_requests(good, good)
    no_text = {"query": {"text": "q", "qid": 1}, "candidates": [{"docid": "a", "doc": {"x": 1}}]}
    with pytest.raises(DataFormatError, match=r"req\.jsonl:1: docid 'a': 'doc' has no text"):
        from_requests(json.dumps(no_text))
    no_doc = {"query": {"text": "q", "qid": 1}, "candidates": [{"docid": "a"}]}
    with pytest.raises(DataFormatError, match=r"req\.jsonl:1: docid 'a' has no 'doc'"):
        from_requests(json.dumps(no_doc))
    no_qid = {"query": {"text": "q"}, "candidates": [{"docid": "a", "doc": "x"}]}
    with pytest.raises(DataFormatError, match=r"req\.jsonl:1: missing field 'qid'"):
        from_requests(json.dumps(no_qid))


def test_tsv_corpus_and_jsonl_topics(dl19, tmp_path):
    d, queries = dl19
    (tmp_path / "c.tsv").write_text(
        "".join(f"{c.docid}\t{c.text}\n" for q in queries.values() for c in q.candidates)
    )
    (tmp_path / "t.jsonl").write_text(
        "".join(json.dumps({"qid": q, "query": queries[q].query}) + "\n" for q in QIDS)
    )
    assert read_topics(tmp_path / "t.jsonl") == {q: queries[q].query for q in QIDS}
    assert read_corpus_texts(tmp_path / "c.tsv", {"5611210"}) == {
        "5611210": queries["264014"].candidates[0].text
    }
    (tmp_path / "quoted.tsv").write_text('1\t"what is" a "quote"\n\n2\tx\n')
    assert read_topics(tmp_path / "quoted.tsv") == {"1": '"what is" a "quote"', "2": "x"}
    trec = tmp_path / "o.run"
    rerank("--run", d / "bm25.run", "--topics", tmp_path / "t.jsonl", "--corpus",
           tmp_path / "c.tsv", "--ranker", "bm25", "--output-trec", trec)  # fmt: skip
    assert ranked(trec) == {q: [c.docid for c in queries[q].candidates] for q in QIDS}


def test_scores_decrease_strictly_and_keep_the_order():
    scores = strictly_decreasing([3.0, 3.0, 2.5, float("nan"), 2.5, 1.0, float("-inf")])
    assert all(a > b for a, b in itertools.pairwise(scores))
    assert scores[0] == 3.0 and scores[2] == 2.5 and scores[5] == 1.0
    assert scores[1] == pytest.approx(3.0, abs=1e-12) and scores[4] == pytest.approx(2.5)
    assert strictly_decreasing([float("inf"), 1.0])[0] == 0.0


def test_window_sizes_are_configurable():
    assert task_and_window("resrank-window") == ("resrank", DEFAULT_WINDOW) == ("resrank", (20, 10))
    assert task_and_window("resrank-window", (4, 2)) == ("resrank", (4, 2))
    assert task_and_window("resrank") == ("resrank", None)
    assert check_window("generative", (6, 3)) == (6, 3)
    for name, window in (
        ("dense", (4, 2)),
        ("bm25", (4, 2)),
        ("resrank", (4, 5)),
        ("e2rank", (1, 1)),
    ):
        with pytest.raises(ConfigError):
            check_window(name, window)


@pytest.fixture(scope="module")
def random_decoder(tmp_path_factory, smollm2_tokenizer):
    from benchmarks.random_checkpoint import write_random_checkpoint
    from resrank_jax.train.models import TINY

    out = tmp_path_factory.mktemp("random") / "decoder"
    return write_random_checkpoint(TINY["tiny-decoder"][0], out, smollm2_tokenizer.hf, seed=3)


def test_resrank_window_order_follows_sliding_windows(dl19, tmp_path, random_decoder):
    d, queries = dl19
    qid, depth, window = QIDS[0], 10, (4, 2)
    run = d / "one.run"
    run.write_text("".join(line for line in lines_of(d / "bm25.run") if line.startswith(qid + " ")))
    trec, metrics = tmp_path / "o.run", tmp_path / "m.json"
    model = ("--model", random_decoder, "--passage-max-length", 32)
    with pytest.warns(UserWarning, match="2 judged queries have no results"):  # -c: they count 0
        rerank("--run", run, "--topics", d / "topics.tsv", "--corpus", d / "corpus.jsonl",
               "--ranker", "resrank-window", *model, "--window", window[0], "--stride",
               window[1], "--depth", depth, "--qrels", d / "qrels.txt", "--output-trec", trec,
               "--metrics-json", metrics)  # fmt: skip
    spans = sliding_windows(depth, *window)
    stats = json.loads(metrics.read_text())
    assert stats["model_calls"] == len(spans) == 4 and stats["ranker"] == "resrank-window4/2"
    assert stats["queries"] == 3 and stats["queries_missing"] == 2
    assert lines_of(trec)[0].split()[5] == "resrank-window4/2"
    # the reference: one single-pass ResRank call per window, bottom to top
    single = build_ranker("resrank", model=str(random_decoder), passage_max_length=32)
    head = queries[qid].candidates[:depth]
    order = list(range(depth))
    for start, end in spans:
        idx = order[start:end]
        ranking = single.rank(queries[qid].query, [head[i] for i in idx])
        order[start:end] = [idx[j] for j in ranking.order]
    assert ranked(trec)[qid][:depth] == [head[i].docid for i in order]
    generative = build_ranker("generative", model=str(random_decoder), window=(6, 3))
    assert generative.name == "generative-window6/3"


@given(st.text(max_size=300))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_fuzzed_files_fail_only_with_documented_errors(tmp_path, text):
    for name in ("fuzz.jsonl", "fuzz.tsv"):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        for reader in (read_requests, read_run_lists, read_topics, read_corpus_texts):
            with contextlib.suppress(DataFormatError):
                reader(path)
