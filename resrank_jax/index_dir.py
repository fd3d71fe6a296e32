"""A dense index on disk and retrieval with a ranker's own encoder (``resrank index`` and
``resrank rerank --index``): the ResRank paper's unified index, where passage vectors are
computed once and serve both first-stage retrieval and the reranker's embedding cache.

A directory holds ``index.json`` (what made it: encoder fingerprint, passage length, the
ranker source, the corpus file), ``vectors.npz`` (``DenseIndex.save``: docids and
L2-normalised vectors ``[M, E]``) and ``corpus.jsonl`` (``{"docid", "text"}`` per line: the
texts the vectors were made from, which the reranker reads).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from resrank_jax.data.formats import QueryCandidates
from resrank_jax.data.requests import RerankRequests, read_corpus_texts
from resrank_jax.errors import ConfigError
from resrank_jax.rerank.base import Candidate
from resrank_jax.rerank.encode import encode_texts
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.retrieval import DenseIndex

MANIFEST, VECTORS, CORPUS = "index.json", "vectors.npz", "corpus.jsonl"
FORMAT = "resrank-dense-index"
QUERY_BATCH = 32  # queries per encoder call and per search


@dataclasses.dataclass
class SavedIndex:
    """An index with the texts its vectors were made from and its manifest."""

    index: DenseIndex
    texts: dict[str, str]
    manifest: dict[str, Any]


def build_index(
    ranker: ModelRanker,
    corpus: Mapping[str, str],
    *,
    through_cache: bool = False,
    progress: bool = True,
) -> DenseIndex:
    """The vectors ``[M, E]`` of every text in ``corpus`` by ``ranker``'s encoder at its
    recipe's passage length: the very vectors its embedding cache would hold.
    ``through_cache``: take the vectors the ranker's cache already has, encode only the rest
    and keep them there too (a corpus the reranker has partly seen; memory grows with M; no
    progress bar)."""
    if not through_cache:
        return DenseIndex.build(
            ranker.model.encoder,
            ranker.task.encoder_tokenizer,
            dict(corpus),
            max_length=ranker.task.recipe.passage_max_length,
            batch_size=ranker.batch_size,
            progress=progress,
        )
    passages = [Candidate(docid, text) for docid, text in corpus.items()]
    vectors = ranker.passage_embeddings(passages, {})
    return DenseIndex(list(corpus), vectors, ranker.encoder_key)


def write_index(
    directory: str | Path, index: DenseIndex, texts: Mapping[str, str], source: dict[str, Any]
) -> None:
    """Writes ``index`` and its ``texts`` to ``directory`` (created; an existing index there is
    an error: delete it first). ``source``: what made it (ranker flags, corpus path)."""
    out = Path(directory)
    if (out / MANIFEST).exists():
        raise ConfigError(f"{out} already holds an index; delete it or choose another --output")
    out.mkdir(parents=True, exist_ok=True)
    with (out / CORPUS).open("w", encoding="utf-8") as f:
        for docid in index.docids:
            f.write(json.dumps({"docid": docid, "text": texts[docid]}, ensure_ascii=False) + "\n")
    index.save(out / VECTORS)
    fingerprint, max_length = index.encoder_key
    manifest = {
        "format": FORMAT,
        "documents": len(index.docids),
        "dim": int(index.vectors.shape[1]),
        "encoder": fingerprint,
        "passage_max_length": max_length,
        "source": source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def read_index(directory: str | Path) -> SavedIndex:
    """The index written by ``write_index``; a directory without one is a ``ConfigError``."""
    path = Path(directory)
    if not (path / MANIFEST).is_file():
        raise ConfigError(
            f"{path}: not an index directory (no {MANIFEST}); build one with `resrank index`"
        )
    manifest = json.loads((path / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{path / MANIFEST}: format {manifest.get('format')!r}, not {FORMAT!r}")
    index = DenseIndex.load(path / VECTORS)
    return SavedIndex(index, read_corpus_texts(path / CORPUS), manifest)


def check_same_encoder(saved: SavedIndex, ranker: ModelRanker, where: str) -> None:
    """Refuses an index whose vectors another encoder (or passage length) made."""
    if saved.index.encoder_key != ranker.encoder_key:
        source = saved.manifest.get("source", {})
        raise ConfigError(
            f"{where}: made by another encoder or passage length ({source}, length "
            f"{saved.index.encoder_key[1]}) than this ranker's (length "
            f"{ranker.encoder_key[1]}); build the index with the same --model/--checkpoint"
        )


def retrieve(
    ranker: ModelRanker, saved: SavedIndex, topics: Mapping[str, str], k: int
) -> RerankRequests:
    """The top-``k`` documents of each topic by cosine with ``ranker``'s encoder (its query
    format), as candidate lists with retrieval scores; the retrieved documents' vectors go
    into the ranker's embedding cache, so reranking encodes no passage again."""
    qids = list(topics)
    out: list[QueryCandidates] = []
    for start in range(0, len(qids), QUERY_BATCH):
        chunk = qids[start : start + QUERY_BATCH]
        q_qe = encode_texts(
            ranker.model.encoder,
            ranker.task.encoder_tokenizer,
            [ranker.task.query_input(topics[q]) for q in chunk],
            max_length=ranker.task.recipe.query_max_length,
            batch_size=QUERY_BATCH,
        )
        scores, docids = saved.index.search(q_qe, k)
        for qid, row_scores, row_docids in zip(chunk, scores, docids, strict=True):
            cands = [
                Candidate(d, saved.texts[d], float(s))
                for d, s in zip(row_docids, row_scores, strict=True)
            ]
            out.append(QueryCandidates(qid, topics[qid], cands))
    retrieved = sorted({c.docid for qc in out for c in qc.candidates})
    rows = saved.index.rows(retrieved)
    ranker.cache.add(
        ranker.encoder_key, [saved.texts[d] for d in retrieved], saved.index.vectors[rows]
    )
    return RerankRequests(out)
