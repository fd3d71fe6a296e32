"""An HTTP reranking service (FastAPI): one ranker, its embedding cache and a micro-batcher.

``create_app(ranker)`` serves

- ``POST /rerank``: one rank_llm request ``{"query": {"text", "qid"}, "candidates": [{"docid",
  "score", "doc"}]}`` (``query`` may be a plain string; ``doc`` a string or a dict with one of
  ``RANK_LLM_TEXT_KEYS``, as ``resrank rerank --requests`` reads) -> the rank_llm result:
  the same query and candidate objects, best first, each ``score`` the reranker's, plus
  ``ranker`` and ``stats``;
- ``POST /rerank_batch``: a JSON list of such requests -> the list of results;
- ``GET /health``: ``status``, ``ranker``, ``cached_passages`` and the batcher's counters.

With ``depth``, only the first ``depth`` candidates are reranked and the rest follow in their
given order, scores strictly decreasing down the list (``resrank rerank --depth``'s rule).
The ranker is not thread-safe, so one worker thread (``MicroBatcher``) runs it: it takes up to
``max_batch`` queued requests, waiting at most ``max_wait_ms`` after the first, and ranks them
in one ``Ranker.rerank_batch`` call while the event loop keeps serving. A malformed request
is a 4xx whose JSON ``error`` names the field (``candidates[2].doc: ...``); a ranker failure is
a 500 with a one-line ``error``. Neither stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from resrank_jax.data.requests import RANK_LLM_TEXT_KEYS, rank_llm_doc_text
from resrank_jax.rerank.base import Candidate, Ranker, RerankResult
from resrank_jax.rerank_run import head_then_tail

DEFAULT_MAX_CANDIDATES = 1000
MAX_BATCH_REQUESTS = 256  # requests in one POST /rerank_batch
NOT_JSON = "the body must be JSON, sent with Content-Type: application/json"

log = logging.getLogger(__name__)


def _str_or_int(value: Any, field: str) -> Any:
    """``value`` if a string or an integer (one error for the union, not one per member)."""
    if isinstance(value, str) or type(value) is int:
        return value
    raise ValueError(f"{field} must be a string or an integer, not {type(value).__name__}")


class QueryIn(BaseModel):
    """A rank_llm query: ``text`` and an optional ``qid``; other fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    text: str
    qid: str | int | None = None

    _qid = field_validator("qid", mode="before")(lambda v: _str_or_int(v, "qid"))


class CandidateIn(BaseModel):
    """A rank_llm candidate: ``docid``, first-stage ``score`` and ``doc`` (a string, or a dict
    with a text field); other fields are kept."""

    model_config = ConfigDict(extra="allow", strict=True)
    docid: str | int
    score: float = 0.0
    doc: Any

    _docid = field_validator("docid", mode="before")(lambda v: _str_or_int(v, "docid"))

    @field_validator("doc")
    @classmethod
    def _has_text(cls, doc: Any) -> Any:
        if isinstance(doc, str) or (isinstance(doc, dict) and rank_llm_doc_text(doc) is not None):
            return doc
        keys = "/".join(RANK_LLM_TEXT_KEYS)
        if isinstance(doc, dict):
            raise ValueError(f"doc has no text field ({keys}) with a string")
        raise ValueError(f"doc must be a string or an object with a text field ({keys})")

    def candidate(self) -> Candidate:
        """This candidate as the ranker takes it."""
        text = self.doc if isinstance(self.doc, str) else rank_llm_doc_text(self.doc)
        return Candidate(str(self.docid), text, self.score)


class RerankRequest(BaseModel):
    """One rank_llm request; a plain-string ``query`` is read as ``{"text": query}``."""

    model_config = ConfigDict(extra="allow")
    query: QueryIn
    candidates: list[CandidateIn] = Field(min_length=1)

    @field_validator("query", mode="before")
    @classmethod
    def _plain_query(cls, query: Any) -> Any:
        return {"text": query} if isinstance(query, str) else query


RerankBatch = Annotated[list[RerankRequest], Field(min_length=1, max_length=MAX_BATCH_REQUESTS)]


class RankerError(Exception):
    """The ranker failed on a request (a 500 for the client)."""


@dataclasses.dataclass
class _Job:
    query: str
    docs: list[Candidate]
    future: Future = dataclasses.field(default_factory=Future)
    queued: float = dataclasses.field(default_factory=time.perf_counter)


class MicroBatcher:
    """Runs a ranker on one worker thread: ``submit`` queues a request; the worker ranks up to
    ``max_batch`` queued requests in one ``rerank_batch`` call, waiting at most
    ``max_wait_ms`` after the first for more. ``batches``/``requests`` count what it ran."""

    def __init__(self, ranker: Ranker, max_batch: int = 8, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1, max_wait_ms >= 0: {max_batch}, {max_wait_ms}")
        self.ranker, self.max_batch, self.max_wait = ranker, max_batch, max_wait_ms / 1000
        self.batches = self.requests = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="resrank-batcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ranks what is queued, then ends the worker."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def submit(self, query: str, docs: list[Candidate]) -> Future:
        """A future of ``(RerankResult, stats)`` for ``docs`` under ``query``."""
        if self._thread is None:
            raise RuntimeError("the batcher is not running")
        job = _Job(query, docs)
        self._queue.put(job)
        return job.future

    def _take(self) -> list[_Job]:
        """The next batch ([] once stopped): the first job, then any that arrive within
        ``max_wait`` of it, up to ``max_batch``."""
        first = self._queue.get()
        if first is None:
            return []
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            jobs.append(job)
        return jobs

    def _work(self) -> None:
        while jobs := self._take():
            live = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if live:
                self._rank(live)

    def _rank(self, jobs: list[_Job]) -> None:
        """One ``rerank_batch`` call; if it fails, each job alone, so only the bad one fails."""
        start = time.perf_counter()
        self.batches += 1
        try:
            results = self.ranker.rerank_batch([j.query for j in jobs], [j.docs for j in jobs])
            done = list(zip(jobs, results, strict=True))
        except Exception as err:
            if len(jobs) > 1:
                for job in jobs:
                    self._rank([job])
            else:
                log.exception("ranker failed on query %r", jobs[0].query)
                jobs[0].future.set_exception(err)
            return
        self.requests += len(jobs)
        end = time.perf_counter()
        for job, result in done:
            timing = {
                "batch_size": len(jobs),
                "queue_ms": (start - job.queued) * 1000,
                "rank_ms": (end - start) * 1000,
            }
            job.future.set_result((result, timing))


def ranked_candidates(request: RerankRequest, head: RerankResult) -> list[dict]:
    """The request's candidate objects best first, ``score`` the reranker's: the reranked head
    (``head`` ranks the first ``len(head)``), then the rest in given order, scores strictly
    decreasing."""
    given = [c.model_dump(exclude_unset=True) for c in request.candidates]
    order, scores = head_then_tail(head.order, head.scores, len(given))
    return [{**given[i], "score": s} for i, s in zip(order, scores, strict=True)]


def _where(loc: Sequence[str | int]) -> str:
    """``("body", "candidates", 2, "doc")`` -> ``candidates[2].doc``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "body"


def _reason(error: dict) -> str:
    if error["type"] == "json_invalid":
        at, why = error["loc"][-1], error.get("ctx", {}).get("error", "")
        return f"body: invalid JSON at character {at} ({why})"
    return f"{_where(error['loc'])}: {error['msg'].removeprefix('Value error, ')}"


def validation_reason(errors: Sequence[dict]) -> str:
    """One line naming each invalid field and why."""
    return "; ".join(_reason(e) for e in errors)


async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
    if isinstance(err.body, bytes):  # a body FastAPI did not read as JSON
        return JSONResponse({"error": NOT_JSON}, 415)
    errors = err.errors()
    status = 400 if any(e["type"] == "json_invalid" for e in errors) else 422
    detail = [{k: e[k] for k in ("loc", "msg", "type")} for e in errors]
    return JSONResponse({"error": validation_reason(errors), "detail": detail}, status)


async def _failed(_: Request, err: RankerError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, 500)


def _list_errors(request: RerankRequest, limit: int, where: tuple[int, ...]) -> list[dict]:
    """The errors of one request's candidate list: more than ``limit``, or a docid twice."""
    loc = ("body", *where, "candidates")
    if len(request.candidates) > limit:
        msg = f"{len(request.candidates)} candidates, more than this service takes ({limit})"
        return [{"loc": loc, "msg": msg, "type": "too_long"}]
    errors, seen = [], set()
    for j, c in enumerate(request.candidates):
        if str(c.docid) in seen:
            msg = f"duplicate docid {c.docid!r}"
            errors.append({"loc": (*loc, j, "docid"), "msg": msg, "type": "duplicate"})
        seen.add(str(c.docid))
    return errors


def _check_lists(requests: Sequence[RerankRequest], limit: int, batch: bool) -> None:
    """A ``RequestValidationError`` for the ``_list_errors`` of ``requests``."""
    errors = [
        e for i, r in enumerate(requests) for e in _list_errors(r, limit, (i,) if batch else ())
    ]
    if errors:
        raise RequestValidationError(errors)


def create_app(
    ranker: Ranker,
    *,
    depth: int | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 5.0,
    name: str | None = None,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
) -> FastAPI:
    """The service of ``ranker`` (module docstring); ``name`` (default ``ranker.name``) is
    what responses call it. The batcher is ``app.state.batcher``, started by the app's
    lifespan."""
    if depth is not None and depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    name = name or ranker.name
    batcher = MicroBatcher(ranker, max_batch, max_wait_ms)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            batcher.stop()

    app = FastAPI(title=f"resrank serve: {name}", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(RankerError, _failed)

    async def rank(requests: Sequence[RerankRequest], batch: bool) -> list[dict]:
        _check_lists(requests, max_candidates, batch)
        futures = [
            batcher.submit(r.query.text, [c.candidate() for c in r.candidates[:depth]])
            for r in requests
        ]
        try:
            outcomes = await asyncio.gather(*map(asyncio.wrap_future, futures))
        except Exception as err:
            line = " ".join(str(err).split()) or type(err).__name__
            raise RankerError(f"{name} failed: {type(err).__name__}: {line}") from err
        return [
            {
                "query": r.query.model_dump(exclude_unset=True),
                "candidates": ranked_candidates(r, result),
                "ranker": name,
                "stats": {**{k: int(v) for k, v in result.stats.items()}, **timing},
            }
            for r, (result, timing) in zip(requests, outcomes, strict=True)
        ]

    @app.post("/rerank")
    async def rerank(request: RerankRequest) -> dict:
        """Reranks one rank_llm request."""
        return (await rank([request], batch=False))[0]

    @app.post("/rerank_batch")
    async def rerank_batch(requests: RerankBatch) -> list[dict]:
        """Reranks a list of rank_llm requests."""
        return await rank(requests, batch=True)

    @app.get("/health")
    async def health() -> dict:
        """Liveness, the ranker's name, its cached passages and the batcher's counters."""
        cache = getattr(ranker, "cache", None)
        return {
            "status": "ok",
            "ranker": name,
            "cached_passages": len(cache) if cache is not None else 0,
            "requests": batcher.requests,
            "batches": batcher.batches,
        }

    return app


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0
) -> Iterator[str]:
    """Serves ``app`` with uvicorn on a background thread (``port`` 0: a free one) and yields
    its base URL (``http://127.0.0.1:PORT``); shuts it down on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
