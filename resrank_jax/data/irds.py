"""ir_datasets integration: register local collections under an id (works offline), and read
any ir_datasets id (local or from its cache) as candidate lists + qrels.

    register_local("resrank/scifact/test", corpus="data/scifact/corpus.jsonl",
                   queries="data/scifact/queries.jsonl", qrels="data/scifact/qrels.test.txt",
                   run="data/scifact/bm25.test.run")
    queries, qrels = load_irds("resrank/scifact/test", depth=100)
"""

from __future__ import annotations

import functools
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from resrank_jax.data.formats import QrelsFormat, QueryCandidates
from resrank_jax.errors import ConfigError
from resrank_jax.rerank.base import Candidate


class _BeirDoc(NamedTuple):  # ir_datasets document classes are NamedTuples
    doc_id: str
    title: str
    text: str

    def default_text(self) -> str:
        return f"{self.title} {self.text}" if self.title else self.text


@functools.cache
def _plain_jsonl_docs_class() -> type:
    """ir_datasets' ``JsonlDocs`` read line by line. Its own ``docs_iter`` reads from a docstore
    once one exists: a pickled file (``corpus.jsonl.pklz4``) it builds beside the corpus (here
    inside the installed package), so a planted or stale file would be unpickled. This class
    never builds, reads or unpickles one."""
    from ir_datasets.formats import JsonlDocs

    class PlainJsonlDocs(JsonlDocs):
        def docs_iter(self):
            return self._iter()

        def docs_store(self, field="doc_id", options=None):
            raise NotImplementedError(
                f"{self.docs_path(force=False)}: resrank_jax's local collections have no "
                "docstore (it would be a pickled file); iterate docs_iter()"
            )

        def docs_count(self):
            return None

    return PlainJsonlDocs


def register_local(
    name: str, *, corpus: str | Path, queries: str | Path, qrels: str | Path, run: str | Path
) -> None:
    """Registers BEIR-style local files (``corpus.jsonl``, ``queries.jsonl``, TREC qrels and a
    TREC first-stage run) as the ir_datasets id ``name``. Registering an existing id again is
    a no-op."""
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import GenericQuery, JsonlQueries, TrecQrels, TrecScoredDocs
    from ir_datasets.util import LocalDownload

    if name in ir_datasets.registry:
        return
    docs = _plain_jsonl_docs_class()(
        LocalDownload(Path(corpus).absolute()),
        doc_cls=_BeirDoc,
        mapping={"doc_id": "_id", "title": "title", "text": "text"},
        namespace=name,
        lang="en",
    )
    dataset = Dataset(
        docs,
        JsonlQueries(
            LocalDownload(Path(queries).absolute()),
            query_cls=GenericQuery,
            mapping={"query_id": "_id", "text": "text"},
            lang="en",
        ),
        TrecQrels(LocalDownload(Path(qrels).absolute()), {0: "not relevant", 1: "relevant"}),
        TrecScoredDocs(LocalDownload(Path(run).absolute())),
    )
    ir_datasets.registry.register(name, dataset)


def load_irds(
    dataset_id: str, *, depth: int | None = 100, need_qrels: bool = True
) -> tuple[list[QueryCandidates], dict[str, dict[str, int]]]:
    """Candidate lists (the dataset's scored docs, top ``depth`` by score or all of them for
    ``None``, texts from its doc store) for every query that has scored docs, and its qrels
    (``{}`` for a dataset without qrels when not ``need_qrels``)."""
    import ir_datasets

    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise ConfigError(f"unknown ir_datasets id {dataset_id!r}") from None
    has_qrels = dataset.has_qrels()
    for part in ("queries", "qrels", "scoreddocs", "docs"):
        if part == "qrels" and not need_qrels:
            continue
        if not getattr(dataset, f"has_{part}")():
            raise ConfigError(
                f"ir_datasets {dataset_id!r} has no {part}; it cannot serve reranking"
            )
    texts = {q.query_id: q.default_text() for q in dataset.queries_iter()}
    scored = defaultdict(list)
    for sd in dataset.scoreddocs_iter():
        scored[sd.query_id].append((sd.score, sd.doc_id))
    tops = {}
    for qid, hits in scored.items():
        if qid not in texts:
            raise ValueError(f"ir_datasets {dataset_id!r}: scored docs for unknown query {qid!r}")
        tops[qid] = sorted(hits, key=lambda h: -h[0])[:depth]
    needed = {d for hits in tops.values() for _, d in hits}
    # one pass over docs_iter (a docstore would unpickle its files; see _plain_jsonl_docs_class)
    docs = {d.doc_id: d.default_text() for d in dataset.docs_iter() if d.doc_id in needed}
    missing = sorted(needed - set(docs))
    if missing:
        raise ValueError(
            f"ir_datasets {dataset_id!r}: scored docs not in the corpus: {missing[:5]}"
        )
    out = [
        QueryCandidates(qid, texts[qid], [Candidate(d, docs[d], float(s)) for s, d in hits])
        for qid, hits in tops.items()
    ]
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    for q in dataset.qrels_iter() if has_qrels else ():
        qrels[q.query_id][q.doc_id] = int(q.relevance)
    return out, dict(qrels)


def irds_qrels_format(dataset_id: str) -> QrelsFormat:
    """The qrels convention of an ir_datasets id: ``"trec"`` for TREC Deep Learning ids (a
    ``trec-dl*`` component, e.g. ``msmarco-passage/trec-dl-2019/judged``), whose binary
    measures count rel >= 2; ``"beir"`` (rel >= 1, trec_eval's default) for every other id,
    e.g. ``beir/trec-covid`` or the packaged ``resrank/scifact/test``."""
    return "trec" if any(part.startswith("trec-dl") for part in dataset_id.split("/")) else "beir"


def register_bundled_collections(data_dir: str | Path | None = None) -> None:
    """Registers the packaged SciFact copy (``data_dir``, default
    ``resrank_jax.data.bundled.data_dir()``) as ``resrank/scifact/{train,test}``."""
    from resrank_jax.data.bundled import data_dir as bundled_dir

    d = Path(data_dir if data_dir is not None else bundled_dir()) / "scifact"
    for split in ("train", "test"):
        register_local(
            f"resrank/scifact/{split}",
            corpus=d / "corpus.jsonl",
            queries=d / "queries.jsonl",
            qrels=d / f"qrels.{split}.txt",
            run=d / f"bm25.{split}.run",
        )
