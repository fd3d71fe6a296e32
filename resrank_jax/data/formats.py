"""Readers for candidate lists, corpora, queries, qrels and runs, with errors that name the
file and line.

Candidate files (JSON Lines, or a JSON array of the same objects):
- resrank_jax / shared-data: ``{"qid", "query", "candidates": [{"docid", "score"[, "text"]}]}``
- rank_llm: ``{"query": {"text", "qid"}, "candidates": [{"docid", "score", "doc": {...}}]}``
- RankGPT: ``{"query", "hits": [{"content", "docid", "score"[, "qid"]}]}``
Candidates without text are resolved through a corpus (BEIR ``corpus.jsonl`` or a
``{"docid", "text"}`` JSONL).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from resrank_jax.errors import UserError
from resrank_jax.paths import as_path
from resrank_jax.rerank.base import Candidate


class DataFormatError(UserError, ValueError):
    """Malformed input; the message starts with ``file:line:`` (``file:`` when the problem is
    the whole file, e.g. an empty one)."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass
class QueryCandidates:
    qid: str
    query: str
    candidates: list[Candidate]


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); other bytes are a
    ``DataFormatError`` naming the line."""
    path = as_path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataFormatError(path, line, f"not UTF-8 text (byte {data[err.start]:#04x})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as open() reads it


def iter_json_records(path: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` of a JSON Lines file, or of a JSON array file (line = index+1)."""
    path = as_path(path)
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, err.lineno, f"malformed JSON: {err.msg}") from err
        yield from enumerate(records, 1)
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, number, f"malformed JSON: {err.msg}") from err


def _field(record: Any, key: str, path: Path, line: int, kind: type | tuple = str) -> Any:
    if not isinstance(record, dict):
        raise DataFormatError(path, line, f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DataFormatError(path, line, f"missing field {key!r}")
    value = record[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(path, line, f"field {key!r} has type {type(value).__name__}")
    return value


def _doc_text(doc: dict) -> str | None:
    for key in ("text", "contents", "content", "segment", "body"):
        if isinstance(doc.get(key), str):
            title = doc.get("title")
            return f"{title} {doc[key]}" if isinstance(title, str) and title else doc[key]
    return None


def read_corpus(path: str | Path) -> dict[str, str]:
    """``docid -> text`` from BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``; text =
    title + " " + text) or a ``{"docid", "text"}`` JSONL."""
    path, corpus = as_path(path), {}
    for line, rec in iter_json_records(path):
        key = "_id" if isinstance(rec, dict) and "_id" in rec else "docid"
        docid = str(_field(rec, key, path, line, (str, int)))
        text = _doc_text(rec)
        if text is None:
            raise DataFormatError(path, line, "missing field 'text'")
        if docid in corpus:
            raise DataFormatError(path, line, f"duplicate docid {docid!r}")
        corpus[docid] = text
    if not corpus:
        raise DataFormatError(path, None, "no documents in file")
    return corpus


def _parse_candidate_record(rec: Any, path: Path, line: int, corpus: dict[str, str] | None):
    if isinstance(rec, dict) and "hits" in rec:  # RankGPT
        query = _field(rec, "query", path, line)
        hits = _field(rec, "hits", path, line, list)
        qid = str(
            rec.get("qid")
            or (hits[0].get("qid") if hits and isinstance(hits[0], dict) else "")
            or line
        )
        raw = [(h, "content") for h in hits]
    else:
        q = _field(rec, "query", path, line, (str, dict))
        if isinstance(q, dict):  # rank_llm
            query = _field(q, "text", path, line)
            qid = str(_field(q, "qid", path, line, (str, int)))
        else:
            query = q
            qid = str(_field(rec, "qid", path, line, (str, int)))
        raw = [(c, "text") for c in _field(rec, "candidates", path, line, list)]
    if not raw:
        raise DataFormatError(path, line, f"query {qid!r} has an empty candidate list")
    candidates, seen = [], set()
    for item, _ in raw:
        docid = str(_field(item, "docid", path, line, (str, int)))
        if docid in seen:
            raise DataFormatError(path, line, f"query {qid!r}: duplicate docid {docid!r}")
        seen.add(docid)
        score = item.get("score", 0.0)
        if not isinstance(score, int | float) or isinstance(score, bool):
            raise DataFormatError(path, line, f"docid {docid!r}: score is not a number")
        text = _doc_text(item["doc"]) if isinstance(item.get("doc"), dict) else _doc_text(item)
        if text is None:
            if corpus is None:
                raise DataFormatError(
                    path, line, f"docid {docid!r} has no text and no corpus was given"
                )
            if docid not in corpus:
                raise DataFormatError(path, line, f"docid {docid!r} is not in the corpus")
            text = corpus[docid]
        candidates.append(Candidate(docid, text, float(score)))
    return QueryCandidates(qid, query, candidates)


def read_candidates(
    path: str | Path, corpus: dict[str, str] | None = None
) -> list[QueryCandidates]:
    """All queries of a candidate file, in file order; duplicate qids are errors."""
    path = as_path(path)
    records = iter_json_records(path)
    return unique_queries(
        ((line, _parse_candidate_record(rec, path, line, corpus)) for line, rec in records), path
    )


def unique_queries(
    numbered: Iterable[tuple[int, QueryCandidates]], path: Path
) -> list[QueryCandidates]:
    """The queries of ``(line, query)`` pairs read from ``path``, in order; a repeated qid or
    no query at all is a ``DataFormatError``."""
    out, seen = [], {}
    for line, qc in numbered:
        if qc.qid in seen:
            raise DataFormatError(
                path, line, f"duplicate qid {qc.qid!r} (first on line {seen[qc.qid]})"
            )
        seen[qc.qid] = line
        out.append(qc)
    if not out:
        raise DataFormatError(path, None, "no queries in file")
    return out


QrelsFormat = Literal["beir", "trec"]
"""Where qrels come from: ``"beir"`` (BEIR TSV, ``query-id corpus-id score``) or ``"trec"``
(``qid iter docid rel``). It decides the default relevance level of binary measures."""

MIN_GRADE, MAX_GRADE = -1, 100
"""Relevance grades a qrels file may hold (TREC uses -1..4, BEIR 0..2); anything else is a
misread column (a docid read as a grade) or a broken file."""

_BEIR_HEADER = (
    frozenset({"query-id", "query_id", "queryid", "qid"}),
    frozenset({"corpus-id", "corpus_id", "corpusid", "doc-id", "doc_id", "docid"}),
    frozenset({"score", "relevance", "rel", "label", "grade"}),
)


def _is_beir_header(parts: list[str]) -> bool:
    """``query-id corpus-id score`` (BEIR's header; ``qid docid rel`` and similar spellings)."""
    return len(parts) == 3 and all(
        part.lower() in names for part, names in zip(parts, _BEIR_HEADER, strict=True)
    )


def read_qrels_with_format(path: str | Path) -> tuple[dict[str, dict[str, int]], QrelsFormat]:
    """Qrels and the format they were written in: ``"trec"`` for 4-column ``qid iter docid
    rel`` rows, ``"beir"`` for 3-column rows under a ``query-id corpus-id score`` header (the
    first line). 3-column rows without the header, a file mixing both, grades that are not
    integers in ``MIN_GRADE..MAX_GRADE`` and empty files are errors (``DataFormatError``)."""
    path, qrels, fmt, first = as_path(path), {}, None, True
    for number, line in enumerate(read_text(path).split("\n"), 1):
        parts = line.split()
        if not parts:
            continue
        if first and _is_beir_header(parts):
            fmt, first = "beir", False
            continue
        first = False
        if len(parts) == 4:
            qid, _, docid, rel = parts
            row_fmt = "trec"
        elif len(parts) == 3 and fmt is not None:  # under the header, or a mixed file
            qid, docid, rel = parts
            row_fmt = "beir"
        elif len(parts) == 3:
            raise DataFormatError(
                path,
                number,
                f"3 columns {line.strip()!r}: neither TREC qrels ('qid 0 docid rel') nor BEIR "
                "qrels (3 columns under a 'query-id corpus-id score' header line)",
            )
        else:
            raise DataFormatError(
                path,
                number,
                f"{len(parts)} columns {line.strip()!r}: expected TREC 'qid 0 docid rel' or "
                "BEIR 'query-id corpus-id score' rows",
            )
        if fmt not in (None, row_fmt):
            raise DataFormatError(
                path, number, f"{len(parts)}-column row in {fmt.upper()}-format qrels"
            )
        fmt = row_fmt
        try:
            grade = int(rel)
        except ValueError:
            raise DataFormatError(path, number, f"relevance {rel!r} is not an integer") from None
        if not MIN_GRADE <= grade <= MAX_GRADE:
            raise DataFormatError(
                path,
                number,
                f"relevance {grade} is outside {MIN_GRADE}..{MAX_GRADE} (a docid in the "
                "relevance column?)",
            )
        if docid in qrels.setdefault(qid, {}) and qrels[qid][docid] != grade:
            raise DataFormatError(path, number, f"conflicting judgments for ({qid}, {docid})")
        qrels[qid][docid] = grade
    if not qrels:
        raise DataFormatError(path, None, "no judgments in file")
    return qrels, fmt


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC qrels (``qid iter docid rel``) or BEIR TSV (``query-id corpus-id score`` header)."""
    return read_qrels_with_format(path)[0]


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """TREC run ``qid Q0 docid rank score tag``."""
    path, run = as_path(path), {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataFormatError(path, number, f"expected 6 columns, got {len(parts)}")
            try:
                score = float(parts[4])
            except ValueError:
                raise DataFormatError(path, number, f"score {parts[4]!r} is not a number") from None
            if parts[2] in run.setdefault(parts[0], {}):
                raise DataFormatError(
                    path, number, f"duplicate docid {parts[2]!r} for {parts[0]!r}"
                )
            run[parts[0]][parts[2]] = score
    return run


def read_json_queries(path: str | Path) -> dict[str, str]:
    """``qid -> text`` of JSON Lines or a JSON array: ``_id``/``text`` as BEIR writes, or
    ``qid``/``query``."""
    path, out = as_path(path), {}
    for line, rec in iter_json_records(path):
        key = "_id" if isinstance(rec, dict) and "_id" in rec else "qid"
        qid = str(_field(rec, key, path, line, (str, int)))
        out[qid] = _field(rec, "text" if "text" in rec else "query", path, line)
    return out


def read_queries(path: str | Path) -> dict[str, str]:
    """``qid -> text`` from BEIR ``queries.jsonl`` or a TREC topics TSV (``qid<TAB>text``)."""
    path = as_path(path)
    if path.suffix == ".jsonl":
        return read_json_queries(path)
    out = {}
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        row = line.split("\t")  # not csv: quotes in a query are text (MS MARCO has them)
        if len(row) != 2:
            raise DataFormatError(path, number, "expected 'qid<TAB>text'")
        out[row[0]] = row[1]
    return out


def write_run(
    path: str | Path, run: dict[str, list[tuple[str, float]]], tag: str, *, exact: bool = False
) -> None:
    """Writes a TREC run; ``run[qid]`` is ``[(docid, score)]`` best first. Scores are written
    with 6 decimals, or with ``exact`` as the shortest text that reads back the same float
    (so scores that differ only after 6 decimals still order a tool that sorts by score)."""
    with as_path(path).open("w", encoding="utf-8") as f:
        for qid, ranked in run.items():
            for rank, (docid, score) in enumerate(ranked, 1):
                text = repr(float(score)) if exact else f"{score:.6f}"
                f.write(f"{qid} Q0 {docid} {rank} {text} {tag}\n")
