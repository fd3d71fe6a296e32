"""Inverse-cloze training queries (``resrank_jax.data.ict``, ``python -m resrank_jax.apps.ict``)
on a 14-document corpus written here: a word-overlap search stands in for the dense one,
and one run of the command uses the random ``tiny-bert`` encoder."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from resrank_jax.apps.ict import include_train_paths, main
from resrank_jax.data.bundled import data_dir
from resrank_jax.data.formats import DataFormatError, read_candidates, read_corpus, read_qrels
from resrank_jax.data.ict import (
    OUTPUT_FILES,
    IctQuery,
    IctSettings,
    candidate_list,
    generate_ict,
    ict_query,
    split_sentences,
)
from resrank_jax.errors import ConfigError
from resrank_jax.train.lists import lists_from_qrels

TOPICS = "insulin dopamine collagen ferritin melatonin keratin cortisol myosin leptin serotonin"
EXCLUDED = ("d03", "d08")


def _doc(i: int, topic: str) -> dict:
    return {
        "_id": f"d{i:02d}",
        "title": f"Role of {topic} in {i + 2} mouse models.",
        "text": f"The {topic} pathway regulates cell growth in adult mice. Levels of {topic} "
        f"rose by {10 + i} percent after the treatment. We conclude that {topic} matters "
        "for disease outcomes in patients.",
    }


@pytest.fixture
def corpus_file(tmp_path):
    """``d00``-``d11`` (four sentences each), ``d12`` (one sentence) and ``d13`` (no sentence
    of 6 words): a BEIR corpus.jsonl."""
    docs = [_doc(i, t) for i, t in enumerate([*TOPICS.split(), "actin", "albumin"])]
    docs += [
        {"_id": "d12", "title": "", "text": "A single sentence about albumin in the blood."},
        {"_id": "d13", "title": "", "text": "Short one. Also short. Tiny too."},
    ]
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture
def exclude_file(tmp_path):
    """Judges ``d03`` relevant and ``d08`` not (both are excluded: any judgment counts)."""
    path = tmp_path / "qrels.test.txt"
    path.write_text("q1 0 d03 1\nq2 0 d08 0\n")
    return path


def overlap_search(corpus: dict[str, str]):
    """A ``Search`` scoring shared lowercase words (ties by docid)."""
    words = {d: set(t.lower().split()) for d, t in corpus.items()}

    def search(queries, k):
        scores, docids = [], []
        for q in queries:
            shared = {d: len(set(q.lower().split()) & w) for d, w in words.items()}
            ranked = sorted(shared, key=lambda d: (-shared[d], d))[:k]
            scores.append([float(shared[d]) for d in ranked])
            docids.append(ranked)
        return np.asarray(scores), docids

    return search


def generate(out, corpus_file, exclude=(), include_train=None, **settings):
    return generate_ict(
        str(out),
        str(corpus_file),
        [str(p) for p in exclude],
        overlap_search,
        IctSettings(**settings),
        search_info={"name": "word-overlap"},
        include_train=include_train and tuple(map(str, include_train)),
        progress=False,
    )


def read_output(out):
    corpus = read_corpus(out / "corpus.jsonl")
    return corpus, read_candidates(out / "candidates.jsonl", corpus), read_qrels(out / "qrels.txt")


def test_sentences_split_at_end_marks_before_a_capital_or_digit():
    text = "Levels fell (p < 0.05). e.g. in mice. 12 patients improved! Why? Yes."
    assert split_sentences(text) == [
        "Levels fell (p < 0.05). e.g. in mice.",
        "12 patients improved!",
        "Why?",
        "Yes.",
    ]


def test_sentence_removed_from_the_positive_when_removal_fires_and_kept_otherwise(
    tmp_path, corpus_file
):
    text = read_corpus(corpus_file)["d01"]
    removed = ict_query("d01", text, 1, IctSettings(remove_prob=1.0))
    assert removed.removed and removed.query in split_sentences(text)
    assert removed.query not in removed.positive_text
    others = [s for s in split_sentences(text) if s != removed.query]
    assert removed.positive_text == " ".join(others)
    kept = ict_query("d01", text, 1, IctSettings(remove_prob=0.0))
    assert not kept.removed and kept.query == removed.query and kept.positive_text == text

    provenance = generate(tmp_path / "out", corpus_file, remove_prob=0.5)
    corpus, queries, _ = read_output(tmp_path / "out")
    fired = [q.query not in corpus[f"{q.qid[4:]}#ict"] for q in queries]
    assert 0 < sum(fired) < len(queries) == 12  # both cases occur; d12, d13 make no query
    assert sum(fired) == provenance["counts"]["sentence_removed"]
    for q, gone in zip(queries, fired, strict=True):
        source = corpus[q.qid[4:]]
        assert gone or corpus[f"{q.qid[4:]}#ict"] == source


def _ids_naming(excluded: str, out) -> list[str]:
    corpus, queries, qrels = read_output(out)
    ids = [*corpus, *qrels, *(d for judged in qrels.values() for d in judged)]
    ids += [q.qid for q in queries] + [c.docid for q in queries for c in q.candidates]
    return [i for i in ids if i in (excluded, f"{excluded}#ict", f"ict-{excluded}")]


def test_no_excluded_docid_anywhere_in_the_output(tmp_path, corpus_file, exclude_file):
    provenance = generate(tmp_path / "out", corpus_file, [exclude_file])
    assert provenance["counts"]["excluded"] == 2
    assert all(_ids_naming(e, tmp_path / "out") == [] for e in EXCLUDED)
    generate(tmp_path / "all", corpus_file)  # without the exclusion they are everywhere
    assert all(len(_ids_naming(e, tmp_path / "all")) > 3 for e in EXCLUDED)


def test_source_document_is_never_a_negative_of_its_own_query(tmp_path, corpus_file):
    generate(tmp_path / "out", corpus_file, depth=5)
    _, queries, _ = read_output(tmp_path / "out")
    for q in queries:
        docids = [c.docid for c in q.candidates]
        source = q.qid.removeprefix("ict-")
        assert source not in docids and docids[0] == f"{source}#ict" and len(docids) == 5
    query = IctQuery("d1", "a sentence", "the rest", True)
    assert candidate_list(query, [3.0, 2.0, 1.0], ["d2", "d1", "d3"]) == [
        ("d2", 3.0),
        ("d1#ict", 2.0),
        ("d3", 1.0),
    ]
    unranked = candidate_list(query, [3.0, 2.0, 1.0], ["d2", "d3", "d4"])
    assert [d for d, _ in unranked] == ["d2", "d3", "d1#ict"] and unranked[-1][1] < 2.0


def test_same_seed_gives_identical_files_another_seed_different(tmp_path, corpus_file):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate(tmp_path / name, corpus_file, seed=seed, max_queries=8)
    files = {name: [(tmp_path / name / f).read_bytes() for f in OUTPUT_FILES] for name in "abc"}
    assert files["a"] == files["b"]
    assert all(a != c for a, c in zip(files["a"][:3], files["c"][:3], strict=True))


def test_command_output_loads_through_the_training_readers(tmp_path, corpus_file, exclude_file):
    out = tmp_path / "out"
    argv = ["--output-dir", str(out), "--corpus", str(corpus_file), "--exclude-qrels"]
    argv += [str(exclude_file), "--encoder", "tiny-bert", "--depth", "5", "--max-queries", "6"]
    assert main([*argv, "--max-length", "64", "--quiet"]) == 0
    corpus, queries, qrels = read_output(out)
    lists, counts = lists_from_qrels(queries, qrels, corpus, list_size=8)
    assert len(lists) == 6 and counts["no_positive"] == counts["positive_from_corpus"] == 0
    for tl in lists:
        positive = tl.qid.removeprefix("ict-") + "#ict"
        assert len(tl.docids) == 5 and tl.docids.count(positive) == 1
        assert tl.qrels_labels.tolist() == [float(d == positive) for d in tl.docids]
        assert tl.qid.removeprefix("ict-") not in tl.docids
    counts = json.loads((out / "provenance.json").read_text())["counts"]
    assert (counts["documents"], counts["excluded"], counts["queries"]) == (14, 2, 6)


def test_corpus_line_that_is_not_json_fails_with_file_and_line(tmp_path, corpus_file, capsys):
    lines = corpus_file.read_text().splitlines()
    corpus_file.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(DataFormatError, match=rf"{corpus_file}:2: malformed JSON"):
        generate(tmp_path / "out", corpus_file)
    argv = ["--output-dir", str(tmp_path / "cli"), "--corpus", str(corpus_file)]
    assert main([*argv, "--exclude-qrels"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {corpus_file}:2: malformed JSON") and "Traceback" not in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--remove-prob", "1.5"], "remove_prob 1.5"),
        (["--depth", "0"], "depth 0"),
        (["--max-queries", "0"], "max_queries 0"),
    ],
)
def test_bad_settings_fail_in_one_line(tmp_path, corpus_file, capsys, flags, message):
    argv = ["--output-dir", str(tmp_path / "out"), "--corpus", str(corpus_file), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


TRAIN_LISTS = [
    {"qid": "t1", "query": "insulin growth", "candidates": [{"docid": "d00", "score": 3.0}]},
    {
        "qid": "t2",
        "query": "dopamine levels",
        "candidates": [{"docid": "d01", "score": 2.5}, {"docid": "d03", "score": 1.5}],
    },
]
"""Train lists on the small corpus: ``t1``'s positive ``d08`` (excluded) is not among its
candidates, ``t2`` lists the excluded ``d03`` as its positive."""
TRAIN_QRELS = "query-id\tcorpus-id\tscore\nt1\td08\t1\nt2\td03\t1\nt2\td01\t0\n"
"""BEIR format (a header, three columns), as SciFact ships its train qrels."""


def write_train(tmp_path, lists=TRAIN_LISTS, qrels=TRAIN_QRELS):
    """The included ``(candidates, qrels)`` paths."""
    candidates, qrels_path = tmp_path / "train.jsonl", tmp_path / "train.tsv"
    candidates.write_text("".join(json.dumps(r) + "\n" for r in lists))
    qrels_path.write_text(qrels)
    return candidates, qrels_path


def test_included_train_lists_follow_the_ict_lists_with_their_positives(
    tmp_path, corpus_file, exclude_file
):
    train = write_train(tmp_path)
    generate(tmp_path / "out", corpus_file, [exclude_file], include_train=train)
    lines = (tmp_path / "out" / "candidates.jsonl").read_text().splitlines()
    assert lines[-2:] == train[0].read_text().splitlines()
    qrels_lines = (tmp_path / "out" / "qrels.txt").read_text().splitlines()
    assert qrels_lines[-3:] == ["t1 0 d08 1", "t2 0 d03 1", "t2 0 d01 0"]
    corpus, queries, qrels = read_output(tmp_path / "out")
    lists, counts = lists_from_qrels(queries, qrels, corpus, list_size=8)
    assert len(lists) == 12 and [tl.qid for tl in lists[:10]] == [q.qid for q in queries[:10]]
    assert all(tl.qid.startswith("ict-") for tl in lists[:10])
    t1, t2 = lists[-2:]
    assert (t1.qid, t1.docids, t1.qrels_labels.tolist()) == ("t1", ["d00", "d08"], [0.0, 1.0])
    assert (t2.qid, t2.docids, t2.qrels_labels.tolist()) == ("t2", ["d01", "d03"], [0.0, 1.0])
    assert counts["positive_from_corpus"] == 1 and counts["no_positive"] == 0


def test_excluded_doc_of_an_included_list_is_in_the_corpus_but_no_ict_list(
    tmp_path, corpus_file, exclude_file
):
    generate(tmp_path / "out", corpus_file, [exclude_file], include_train=write_train(tmp_path))
    corpus, queries, _ = read_output(tmp_path / "out")
    source = read_corpus(corpus_file)
    assert all(corpus[e] == source[e] for e in EXCLUDED)
    ict = [q for q in queries if q.qid.startswith("ict-")]
    assert len(ict) == 10 and len(queries) == 12
    named = {q.qid for q in ict} | {c.docid for q in ict for c in q.candidates}
    assert not named & {f"{p}{e}{s}" for e in EXCLUDED for p in ("", "ict-") for s in ("", "#ict")}


@pytest.mark.parametrize(
    "lists, qrels, named, which",
    [
        ([{**TRAIN_LISTS[0], "qid": "ict-d05"}], TRAIN_QRELS, "qid 'ict-d05'", 0),
        (TRAIN_LISTS, TRAIN_QRELS + "ict-d05\td05\t1\n", "qid 'ict-d05'", 1),
        (TRAIN_LISTS, TRAIN_QRELS + "t1\td99\t1\n", "docid 'd99'", 1),
    ],
)
def test_included_qid_collision_or_unknown_docid_fails_naming_it(
    tmp_path, corpus_file, capsys, lists, qrels, named, which
):
    train = write_train(tmp_path, lists, qrels)
    with pytest.raises(DataFormatError, match=rf"^{train[which]}: {named}"):
        generate(tmp_path / "out", corpus_file, include_train=train)
    assert not (tmp_path / "out").exists()  # refused before the search
    argv = ["--output-dir", str(tmp_path / "cli"), "--corpus", str(corpus_file)]
    assert main([*argv, "--include-train", *map(str, train)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {train[which]}: {named}") and len(err.splitlines()) == 1


def test_provenance_records_the_included_files_and_their_counts(tmp_path, corpus_file):
    train = write_train(tmp_path)
    provenance = generate(tmp_path / "out", corpus_file, include_train=train)
    assert json.loads((tmp_path / "out" / "provenance.json").read_text()) == provenance
    sources = provenance["sources"]["include_train"]
    for key, path in zip(("candidates", "qrels"), train, strict=True):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert sources[key] == {"path": str(path), "sha256": digest}
    counts = provenance["counts"]
    assert (counts["included_lists"], counts["included_judgments"]) == (2, 3)
    assert generate(tmp_path / "none", corpus_file)["sources"]["include_train"] is None


def test_include_train_without_a_path_means_the_packaged_scifact_train_split():
    scifact = data_dir() / "scifact"
    assert include_train_paths(None) is None
    assert include_train_paths([]) == (
        str(scifact / "candidates.train.jsonl"),
        str(scifact / "qrels.train.txt"),
    )
    assert all(Path(p).is_file() for p in include_train_paths([]))
    with pytest.raises(ConfigError, match="CANDIDATES QRELS"):
        include_train_paths(["only-one.jsonl"])
