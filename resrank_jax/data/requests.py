"""Inputs and outputs of ``resrank rerank`` beyond ``eval.py``'s candidate files.

Inputs (each gives ``RerankRequests``: candidate lists in first-stage order, first-stage
scores kept, and the document objects a rank_llm JSONL output writes back):

- a TREC run (``qid Q0 docid rank score tag``) with topics (TSV ``qid<TAB>text``, or JSON
  Lines with ``_id``/``text`` or ``qid``/``query``) and a corpus (BEIR ``corpus.jsonl``, a
  ``{"docid", "text"}`` JSONL, or MS MARCO's TSV ``docid<TAB>text``): ``requests_from_run``;
- rank_llm request JSON Lines (or a JSON array) ``{"query": {"text", "qid"}, "candidates":
  [{"docid", "score", "doc"}]}`` with ``doc`` a string or a dict: ``read_requests`` (it also
  reads every other format of ``read_candidates``).

Output: ``write_requests_jsonl`` writes rank_llm's ``Result`` JSONL (what its
``DataWriter.write_in_jsonl_format`` writes: ``query`` and ``candidates``), candidates best
first with the reranker's scores, which rank_llm's ``read_requests_from_file`` reads back.
Malformed input is a ``DataFormatError`` naming the file and line.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from resrank_jax.data.formats import (
    DataFormatError,
    QueryCandidates,
    _field,
    _parse_candidate_record,
    iter_json_records,
    read_corpus,
    read_json_queries,
    read_queries,
    read_text,
    unique_queries,
)
from resrank_jax.paths import as_path
from resrank_jax.rerank.base import Candidate

RANK_LLM_TEXT_KEYS = ("text", "segment", "contents", "content", "body", "passage")
"""The fields rank_llm takes a document's text from, first present first
(``ListwiseInferenceHandler._convert_doc_to_prompt_content``)."""


@dataclasses.dataclass
class RerankRequests:
    """Queries to rerank. ``docs[qid][docid]``: the document object of a rank_llm input, written
    back as it came; candidates without one are written as ``{"contents": text}``."""

    queries: list[QueryCandidates]
    docs: dict[str, dict[str, dict[str, Any]]] = dataclasses.field(default_factory=dict)


def rank_llm_doc_text(doc: Mapping[str, Any]) -> str | None:
    """The text rank_llm reads from a document dict: the first of ``RANK_LLM_TEXT_KEYS``
    present, after ``"Title: {title} Content: "`` when there is a non-empty title; stripped.
    ``None`` when no key is present or its value is not a string."""
    key = next((k for k in RANK_LLM_TEXT_KEYS if k in doc), None)
    if key is None or not isinstance(doc[key], str):
        return None
    text, title = doc[key], doc.get("title")
    if isinstance(title, str) and title:
        text = f"Title: {title} Content: {text}"
    return text.strip()


def _rank_llm_record(
    rec: dict, path: Path, line: int, corpus: Mapping[str, str] | None
) -> tuple[QueryCandidates, dict[str, dict[str, Any]]]:
    q = rec["query"]
    query = _field(q, "text", path, line)
    qid = str(_field(q, "qid", path, line, (str, int)))
    items = _field(rec, "candidates", path, line, list)
    if not items:
        raise DataFormatError(path, line, f"query {qid!r} has an empty candidate list")
    candidates, docs = [], {}
    for item in items:
        docid = str(_field(item, "docid", path, line, (str, int)))
        if docid in docs:
            raise DataFormatError(path, line, f"query {qid!r}: duplicate docid {docid!r}")
        score = item.get("score", 0.0)
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise DataFormatError(path, line, f"docid {docid!r}: score is not a number")
        doc = item.get("doc")
        if isinstance(doc, str):
            text, doc = doc, {"contents": doc}
        elif isinstance(doc, dict):
            text = rank_llm_doc_text(doc)
            if text is None:
                keys = "/".join(RANK_LLM_TEXT_KEYS)
                raise DataFormatError(
                    path, line, f"docid {docid!r}: 'doc' has no text field ({keys}) with a string"
                )
        elif doc is None and corpus is not None:
            if docid not in corpus:
                raise DataFormatError(path, line, f"docid {docid!r} is not in the corpus")
            text = corpus[docid]
            doc = {"contents": text}
        elif doc is None:
            raise DataFormatError(
                path, line, f"docid {docid!r} has no 'doc' and no corpus was given"
            )
        else:
            raise DataFormatError(
                path, line, f"docid {docid!r}: 'doc' has type {type(doc).__name__}"
            )
        candidates.append(Candidate(docid, text, float(score)))
        docs[docid] = doc
    return QueryCandidates(qid, query, candidates), docs


def read_requests(path: str | Path, corpus: Mapping[str, str] | None = None) -> RerankRequests:
    """rank_llm requests (``doc`` a string, a dict with one of ``RANK_LLM_TEXT_KEYS`` and an
    optional title, or absent when ``corpus`` has the docid), or any other candidate format
    of ``read_candidates`` (resrank/shared, RankGPT), in file order. Duplicate qids, empty
    lists and missing texts are ``DataFormatError`` with the file and line."""
    path, docs = as_path(path), {}
    plain_corpus = dict(corpus) if corpus is not None else None

    def parsed() -> Iterable[tuple[int, QueryCandidates]]:
        for line, rec in iter_json_records(path):
            if isinstance(rec, dict) and isinstance(rec.get("query"), dict):
                qc, docs[qc.qid] = _rank_llm_record(rec, path, line, corpus)
            else:
                qc = _parse_candidate_record(rec, path, line, plain_corpus)
            yield line, qc

    return RerankRequests(unique_queries(parsed(), path), docs)


@dataclasses.dataclass(frozen=True)
class RunEntry:
    """One line of a TREC run: the document, its rank and score, and the line number."""

    docid: str
    rank: int
    score: float
    line: int


def read_run_lists(path: str | Path) -> dict[str, list[RunEntry]]:
    """A TREC run ``qid Q0 docid rank score tag`` as ranked lists: queries in file order, each
    list in the order of its rank column (file order among equal ranks). Lines that are not 6
    columns, ranks that are not integers, scores that are not numbers and a docid twice for a
    query are ``DataFormatError`` with the line; so is a file without results."""
    path, lists, seen = as_path(path), {}, {}
    for number, text in enumerate(read_text(path).split("\n"), 1):
        parts = text.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise DataFormatError(
                path, number, f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}"
            )
        qid, _, docid, rank, score, _ = parts
        try:
            rank_value = int(rank)
        except ValueError:
            raise DataFormatError(path, number, f"rank {rank!r} is not an integer") from None
        try:
            score_value = float(score)
        except ValueError:
            raise DataFormatError(path, number, f"score {score!r} is not a number") from None
        docids = seen.setdefault(qid, set())
        if docid in docids:
            raise DataFormatError(path, number, f"duplicate docid {docid!r} for query {qid!r}")
        docids.add(docid)
        lists.setdefault(qid, []).append(RunEntry(docid, rank_value, score_value, number))
    if not lists:
        raise DataFormatError(path, None, "no results in file")
    return {qid: sorted(entries, key=lambda e: e.rank) for qid, entries in lists.items()}


def _is_json(path: Path) -> bool:
    if path.suffix in (".jsonl", ".json"):
        return True
    if path.suffix in (".tsv", ".txt"):
        return False
    return read_text(path).lstrip()[:1] in ("{", "[")


def read_topics(path: str | Path) -> dict[str, str]:
    """``qid -> text`` from topics: JSON Lines or a JSON array (``.jsonl``/``.json``, or a file
    starting with ``{``/``[``; ``_id``/``text`` as BEIR writes, or ``qid``/``query``) or a TSV
    ``qid<TAB>text`` (``read_queries``)."""
    path = as_path(path)
    return read_json_queries(path) if _is_json(path) else read_queries(path)


def read_corpus_texts(path: str | Path, needed: Iterable[str] | None = None) -> dict[str, str]:
    """``docid -> text`` of a corpus, only the ``needed`` docids when given: BEIR
    ``corpus.jsonl`` (title + " " + text, ``read_corpus``), a ``{"docid", "text"}`` JSONL, or a
    TSV ``docid<TAB>text`` (MS MARCO's ``collection.tsv``; read line by line)."""
    path = as_path(path)
    keep = None if needed is None else set(needed)
    if _is_json(path):
        corpus = read_corpus(path)
        return corpus if keep is None else {d: t for d, t in corpus.items() if d in keep}
    corpus, number = {}, 0
    try:
        with path.open(encoding="utf-8-sig") as f:
            for number, text in enumerate(f, 1):  # number: for the error below
                text = text.rstrip("\r\n")
                if not text.strip():
                    continue
                docid, tab, body = text.partition("\t")
                if not tab:
                    raise DataFormatError(path, number, "expected 'docid<TAB>text'")
                if keep is not None and docid not in keep:
                    continue
                if docid in corpus:
                    raise DataFormatError(path, number, f"duplicate docid {docid!r}")
                corpus[docid] = body
    except UnicodeDecodeError:
        raise DataFormatError(path, number + 1, "not UTF-8 text") from None
    if number == 0:
        raise DataFormatError(path, None, "no documents in file")
    return corpus


def requests_from_run(run: str | Path, topics: str | Path, corpus: str | Path) -> RerankRequests:
    """Candidate lists of a TREC run, in its rank order with its scores, texts from ``corpus``
    and queries from ``topics``. A query missing from the topics or a docid missing from the
    corpus is a ``DataFormatError`` naming the run's file and line."""
    run_path = as_path(run)
    lists = read_run_lists(run_path)
    queries = read_topics(topics)
    texts = read_corpus_texts(corpus, {e.docid for entries in lists.values() for e in entries})
    out = []
    for qid, entries in lists.items():
        if qid not in queries:
            raise DataFormatError(
                run_path, entries[0].line, f"query {qid!r} is not in the topics {topics}"
            )
        candidates = []
        for e in entries:
            if e.docid not in texts:
                raise DataFormatError(
                    run_path,
                    e.line,
                    f"docid {e.docid!r} (query {qid!r}) is not in the corpus {corpus}",
                )
            candidates.append(Candidate(e.docid, texts[e.docid], e.score))
        out.append(QueryCandidates(qid, queries[qid], candidates))
    return RerankRequests(out)


def write_requests_jsonl(
    path: str | Path,
    requests: RerankRequests,
    run: Mapping[str, list[tuple[str, float]]],
) -> None:
    """rank_llm ``Result`` JSON Lines: one ``{"query": {"text", "qid"}, "candidates": [{"docid",
    "score", "doc"}]}`` per query of ``run`` (``qid -> [(docid, score)]`` best first), with
    the input's document objects (``{"contents": text}`` for inputs without one)."""
    queries = {qc.qid: qc for qc in requests.queries}
    with as_path(path).open("w", encoding="utf-8") as f:
        for qid, ranked in run.items():
            qc = queries[qid]
            texts = {c.docid: c.text for c in qc.candidates}
            docs = requests.docs.get(qid, {})
            candidates = [
                {"docid": d, "score": float(s), "doc": docs.get(d) or {"contents": texts[d]}}
                for d, s in ranked
            ]
            record = {"query": {"text": qc.query, "qid": qid}, "candidates": candidates}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
