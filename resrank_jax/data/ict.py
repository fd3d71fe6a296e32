"""Inverse-cloze (ICT, Lee et al. 2019) training queries from a corpus: a sentence of a
document is the query, the document without it the positive, and a dense retrieval of the
sentence over the corpus the hard negatives.

Deterministic given ``IctSettings.seed``:

1. Documents judged in the exclusion qrels (any grade; by default SciFact test) are dropped
   from the corpus first, so no evaluation document is ever a training positive or negative.
2. The kept documents are visited in the order ``np.random.default_rng(seed).permutation``
   of their corpus order until ``max_queries`` queries are made. Document ``i`` (its place in
   the kept corpus) draws from ``np.random.default_rng([seed, i])``: one of its sentences of at
   least ``min_words`` words (``split_sentences``) is the query ``ict-<docid>``, and with
   probability ``remove_prob`` that sentence is removed from the positive ``<docid>#ict``
   (else the positive is the whole document). A document of one sentence, or without a long
   enough one, makes no query.
3. The top ``depth`` documents of a search for the query over the kept corpus are its
   candidates, with the positive in the place of the source document (which is thus never a
   negative of its own query), or in the last place when the source is not among them.

``write_ict`` writes ``candidates.jsonl`` (SciFact's candidates format), ``qrels.txt`` (TREC),
``corpus.jsonl`` (BEIR: the kept corpus and the positives) and ``provenance.json``; the first
three train as they are (``data.candidates/corpus/qrels=...``).

``include_train=(candidates, qrels)`` (``--include-train``) adds existing training lists, e.g.
SciFact's train split, to train in the same run: every record of the candidates file follows
the ICT lists (as read, one JSON line each), its judgments follow the ICT ones (as TREC lines,
whatever qrels format they were read from), and the corpus also holds every source document
its candidates and positive judgments name, excluded ones included (step 1 keeps them out of
the ICT lists only). A qid of the included files that is also an ICT qid, or a docid they name
that the source corpus lacks, is a ``DataFormatError`` naming it (raised before the search).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from etils import epath
from tqdm.auto import tqdm

from resrank_jax.data.formats import (
    DataFormatError,
    iter_json_records,
    read_candidates,
    read_qrels,
)
from resrank_jax.data.requests import read_corpus_texts
from resrank_jax.errors import ConfigError, UserError
from resrank_jax.instructions import encoder_query
from resrank_jax.models.encoder import Encoder
from resrank_jax.paths import as_path
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.retrieval import DenseIndex
from resrank_jax.tokenizer import TextTokenizer

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9])")
"""Where a sentence ends: after ``.``, ``!`` or ``?`` and whitespace, before a capital letter
or a digit (``e.g. the`` and ``p < 0.05`` are no break; ``Fig. 2`` is one)."""
QUERY_CHUNK = 256
"""Queries per search call (one progress step)."""
OUTPUT_FILES = ("candidates.jsonl", "qrels.txt", "corpus.jsonl", "provenance.json")

Search = Callable[[Sequence[str], int], tuple[np.ndarray, list[list[str]]]]
"""``search(queries, k)``: scores ``[Q, k]`` and docids of each query's top ``k`` documents,
best first (fewer than ``k`` when the corpus is smaller)."""


@dataclasses.dataclass(frozen=True)
class IctSettings:
    """What the generator makes (module docstring); ``max_queries`` None: one per document."""

    depth: int = 100
    max_queries: int | None = None
    seed: int = 0
    min_words: int = 6
    remove_prob: float = 0.9

    def __post_init__(self) -> None:
        if self.depth < 1 or self.min_words < 1 or self.seed < 0:
            raise ConfigError(
                f"depth {self.depth}, min_words {self.min_words}, seed {self.seed}: need depth "
                ">= 1, min_words >= 1, seed >= 0"
            )
        if self.max_queries is not None and self.max_queries < 1:
            raise ConfigError(f"max_queries {self.max_queries}: need >= 1 (or none: all)")
        if not 0.0 <= self.remove_prob <= 1.0:
            raise ConfigError(f"remove_prob {self.remove_prob}: need 0 <= remove_prob <= 1")


@dataclasses.dataclass(frozen=True)
class IctQuery:
    """A sentence of document ``source`` as a query, and the positive made from the document
    (``removed``: whether the sentence was taken out of it)."""

    source: str
    query: str
    positive_text: str
    removed: bool

    @property
    def qid(self) -> str:
        return f"ict-{self.source}"

    @property
    def positive(self) -> str:
        return f"{self.source}#ict"


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` at ``SENTENCE_BREAK``s, stripped, empty ones dropped."""
    return [s for s in SENTENCE_BREAK.split(text.strip()) if s]


def ict_query(docid: str, text: str, index: int, settings: IctSettings) -> IctQuery | None:
    """The query of document ``docid`` (``index``: its place in the kept corpus, which seeds
    its draws), or None when it has one sentence or none of ``min_words`` words."""
    sentences = split_sentences(text)
    usable = [i for i, s in enumerate(sentences) if len(s.split()) >= settings.min_words]
    if len(sentences) < 2 or not usable:
        return None
    rng = np.random.default_rng([settings.seed, index])
    pick = usable[rng.integers(len(usable))]
    removed = bool(rng.random() < settings.remove_prob)
    rest = " ".join(sentences[:pick] + sentences[pick + 1 :]) if removed else text
    return IctQuery(docid, sentences[pick], rest, removed)


def ict_queries(corpus: dict[str, str], settings: IctSettings) -> tuple[list[IctQuery], int]:
    """The queries of ``corpus`` in the seeded order, and how many documents visited made
    none (no usable sentence)."""
    docids, queries, unusable = list(corpus), [], 0
    for i in np.random.default_rng(settings.seed).permutation(len(docids)):
        if settings.max_queries is not None and len(queries) >= settings.max_queries:
            break
        query = ict_query(docids[i], corpus[docids[i]], int(i), settings)
        if query is None:
            unusable += 1
        else:
            queries.append(query)
    return queries, unusable


def candidate_list(
    query: IctQuery, scores_k: Sequence[float], docids_k: Sequence[str]
) -> list[tuple[str, float]]:
    """``[(docid, score)]`` of a query's retrieved ``docids_k`` / ``scores_k`` (``[k]``, best
    first) with the positive in the source document's place and score, or, when the source
    was not retrieved, in the last place with a score just below the last retrieved."""
    ranked = [(d, float(s)) for d, s in zip(docids_k, scores_k, strict=True)]
    docids = list(docids_k)
    if query.source in docids:
        at = docids.index(query.source)
        score = ranked[at][1]
    else:
        at = len(ranked) - 1
        score = math.nextafter(ranked[at][1], -math.inf)
    ranked[at] = (query.positive, score)
    return ranked


def candidate_lists(
    queries: Sequence[IctQuery], search: Search, depth: int, *, progress: bool = True
) -> list[list[tuple[str, float]]]:
    """``candidate_list`` of each query from ``search(query texts, depth)``, in chunks of
    ``QUERY_CHUNK`` queries (a progress bar over the chunks)."""
    out = []
    starts = range(0, len(queries), QUERY_CHUNK)
    for start in tqdm(starts, desc="retrieve", unit="chunk", disable=not progress):
        chunk = queries[start : start + QUERY_CHUNK]
        scores_qk, docids_qk = search([q.query for q in chunk], depth)
        out += [candidate_list(*row) for row in zip(chunk, scores_qk, docids_qk, strict=True)]
    return out


def dense_search(
    encoder: Encoder,
    tokenizer: TextTokenizer,
    corpus: dict[str, str],
    *,
    max_length: int = 128,
    batch_size: int = 32,
    progress: bool = True,
) -> Search:
    """A ``Search`` over ``corpus``, encoded once into a ``DenseIndex`` (a progress bar);
    queries are encoded (in the encoder's query format) at each call, each passage and query
    truncated to ``max_length`` tokens."""
    index = DenseIndex.build(
        encoder, tokenizer, corpus, max_length=max_length, batch_size=batch_size, progress=progress
    )

    def search(queries: Sequence[str], k: int) -> tuple[np.ndarray, list[list[str]]]:
        texts = [encoder_query(tokenizer, q, "default") for q in queries]
        queries_qd = encode_texts(
            encoder, tokenizer, texts, max_length=max_length, batch_size=batch_size
        )
        return index.search(queries_qd, k)

    return search


@dataclasses.dataclass(frozen=True)
class IncludedTrain:
    """Training lists written after the ICT ones: the candidate file's ``records`` as read,
    its judgments ``qrels`` and the source ``documents`` they name (in corpus order)."""

    records: list[dict]
    qrels: dict[str, dict[str, int]]
    documents: dict[str, str]


def read_included(
    candidates_path: str, qrels_path: str, corpus: dict[str, str], ict_qids: set[str]
) -> IncludedTrain:
    """The lists of ``candidates_path`` (docids without text read from the source ``corpus``)
    and ``qrels_path`` to write with the ICT lists.

    Raises:
        DataFormatError: a malformed file; a qid of either file in ``ict_qids``; a docid of a
            candidate or of a positive judgment missing from ``corpus`` (each naming the file).
    """
    queries = read_candidates(candidates_path, corpus)
    qrels = read_qrels(qrels_path)
    listed = {c.docid for q in queries for c in q.candidates}
    positives = {d for judged in qrels.values() for d, grade in judged.items() if grade > 0}
    for path, qids, docids in (
        (candidates_path, [q.qid for q in queries], listed),
        (qrels_path, list(qrels), positives),
    ):
        clashes = [qid for qid in qids if qid in ict_qids]
        if clashes:
            raise DataFormatError(path, None, f"qid {clashes[0]!r} is also an ICT query's qid")
        missing = sorted(docids - corpus.keys())
        if missing:
            raise DataFormatError(
                path, None, f"docid {missing[0]!r} is not in the corpus ({len(missing)} missing)"
            )
    records = [record for _, record in iter_json_records(candidates_path)]
    named = listed | positives
    return IncludedTrain(records, qrels, {d: t for d, t in corpus.items() if d in named})


def excluded_docids(qrels_paths: Iterable[str]) -> set[str]:
    """Every docid judged (any grade) in the qrels files."""
    return {
        docid for path in qrels_paths for judged in read_qrels(path).values() for docid in judged
    }


def _source(path: str) -> dict[str, str]:
    """A source file as ``provenance.json`` records it: its path and sha256."""
    return {"path": str(path), "sha256": hashlib.sha256(as_path(path).read_bytes()).hexdigest()}


def _provenance(
    corpus_path: str,
    exclude_qrels: Sequence[str],
    include_train: tuple[str, str] | None,
    settings: IctSettings,
    search_info: dict,
    counts: dict[str, int],
) -> dict:
    """What ``provenance.json`` holds: the sources (path, sha256; ``include_train`` None when
    not given), settings and counts."""
    included = None
    if include_train is not None:
        included = {"candidates": _source(include_train[0]), "qrels": _source(include_train[1])}
    return {
        "method": "inverse cloze task (Lee et al. 2019), resrank_jax.data.ict",
        "sources": {
            "corpus": _source(corpus_path),
            "exclude_qrels": [_source(p) for p in exclude_qrels],
            "include_train": included,
        },
        "settings": dataclasses.asdict(settings),
        "search": search_info,
        "sentence_break": SENTENCE_BREAK.pattern,
        "counts": counts,
    }


def generate_ict(
    output_dir: str,
    corpus_path: str,
    exclude_qrels: Sequence[str],
    make_search: Callable[[dict[str, str]], Search],
    settings: IctSettings,
    *,
    search_info: dict,
    include_train: tuple[str, str] | None = None,
    progress: bool = True,
) -> dict:
    """Reads the corpus, drops the documents judged in ``exclude_qrels``, makes the queries
    and their lists with ``make_search(kept corpus)`` and writes them to ``output_dir``
    (``write_ict``), followed by the lists of ``include_train`` (``(candidates, qrels)``,
    ``read_included``) when given; returns the provenance (``search_info``: what it records
    of the search, e.g. the encoder and its length).

    Raises:
        ConfigError: ``output_dir`` already holds one of ``OUTPUT_FILES``.
        UserError: no document is left or none has a usable sentence.
        DataFormatError: a malformed corpus or qrels file (with the file and line); an
            included qid or docid that ``read_included`` refuses.
    """
    out = as_path(output_dir)
    if any((out / name).exists() for name in OUTPUT_FILES):
        raise ConfigError(f"{output_dir} already holds ICT files; delete them or choose another")
    corpus = read_corpus_texts(corpus_path)
    excluded = excluded_docids(exclude_qrels)
    kept = {d: t for d, t in corpus.items() if d not in excluded}
    if not kept:
        raise UserError(f"{corpus_path}: every document is judged in {list(exclude_qrels)}")
    queries, unusable = ict_queries(kept, settings)
    if not queries:
        raise UserError(
            f"{corpus_path}: no document has two sentences, one of >= {settings.min_words} words"
        )
    included = None
    if include_train is not None:
        included = read_included(*include_train, corpus, {q.qid for q in queries})
    lists = candidate_lists(queries, make_search(kept), settings.depth, progress=progress)
    counts = {
        "documents": len(corpus),
        "excluded": len(corpus) - len(kept),
        "without_sentence": unusable,
        "queries": len(queries),
        "sentence_removed": sum(q.removed for q in queries),
        "included_lists": len(included.records) if included else 0,
        "included_judgments": sum(map(len, included.qrels.values())) if included else 0,
    }
    provenance = _provenance(
        corpus_path, exclude_qrels, include_train, settings, search_info, counts
    )
    write_ict(output_dir, kept, queries, lists, provenance, included=included)
    return provenance


def _write_lines(path: epath.Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def write_ict(
    output_dir: str,
    kept: dict[str, str],
    queries: Sequence[IctQuery],
    lists: Sequence[list[tuple[str, float]]],
    provenance: dict,
    *,
    included: IncludedTrain | None = None,
) -> None:
    """Writes ``OUTPUT_FILES`` into ``output_dir`` (made if missing): each query's list
    (``lists[i]`` of ``queries[i]``), its qrels line, the ``kept`` corpus and the positives,
    and after them the ``included`` lists, judgments and documents (those not kept)."""
    out = as_path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    included = included or IncludedTrain([], {}, {})
    records = [
        {"qid": q.qid, "query": q.query, "candidates": [{"docid": d, "score": s} for d, s in r]}
        for q, r in zip(queries, lists, strict=True)
    ]
    _write_lines(
        out / "candidates.jsonl",
        (json.dumps(rec, ensure_ascii=False) for rec in [*records, *included.records]),
    )
    judgments = [(q.qid, q.positive, 1) for q in queries]
    judgments += [(qid, d, g) for qid, judged in included.qrels.items() for d, g in judged.items()]
    _write_lines(out / "qrels.txt", (f"{qid} 0 {d} {g}" for qid, d, g in judgments))
    docs = [*kept.items(), *((q.positive, q.positive_text) for q in queries)]
    docs += [(d, t) for d, t in included.documents.items() if d not in kept]
    _write_lines(
        out / "corpus.jsonl",
        (json.dumps({"_id": d, "title": "", "text": t}, ensure_ascii=False) for d, t in docs),
    )
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2) + "\n")
