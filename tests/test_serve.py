"""`resrank serve`: a real uvicorn server on 127.0.0.1 queried with httpx.

Rankings over HTTP equal `Ranker.rerank` in-process (string and dict docs, /rerank_batch,
concurrent clients), the micro-batcher batches requests that arrive together, --depth keeps
the tail in its given order, and malformed requests or ranker failures get an error that
names the cause while the service keeps serving. Cheap on purpose: the packaged MiniLM at
passage length 32 on 3 DL19 queries of 10 candidates; stub rankers for failures.
"""

import itertools
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from resrank_jax.cli import main
from resrank_jax.data.formats import read_candidates
from resrank_jax.rerank.base import IdentityRanker
from resrank_jax.rerank.factory import build_ranker
from resrank_jax.serve import create_app, serve_in_thread, validation_reason

DL19 = "data/trec-dl19/candidates.jsonl"
N_QUERIES, N_DOCS = 3, 10


@pytest.fixture(scope="module")
def ranker():
    return build_ranker("dense", model="all-minilm-l6-v2", passage_max_length=32)


@pytest.fixture(scope="module")
def queries():
    return [(qc.qid, qc.query, qc.candidates[:N_DOCS]) for qc in read_candidates(DL19)[:N_QUERIES]]


@pytest.fixture(scope="module")
def references(ranker, queries):
    """``qid -> [(docid, score)]`` best first from ``ranker.rerank`` in-process (computed
    before any server runs: the ranker is not thread-safe)."""
    out = {}
    for qid, query, cands in queries:
        result = ranker.rerank(query, [c.text for c in cands])
        out[qid] = [(cands[i].docid, float(result.scores[i])) for i in result.order]
    return out


@pytest.fixture(scope="module")
def client(ranker, references):
    app = create_app(ranker, max_batch=8, max_wait_ms=5, max_candidates=50)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def request_of(qid, query, cands, doc=lambda i, text: text) -> dict:
    """A rank_llm request; ``doc(i, text)`` is candidate ``i``'s ``doc`` field."""
    return {
        "query": {"text": query, "qid": qid},
        "candidates": [
            {"docid": c.docid, "score": c.score, "doc": doc(i, c.text)} for i, c in enumerate(cands)
        ],
    }


def ranked(result: dict) -> list[tuple[str, float]]:
    return [(c["docid"], c["score"]) for c in result["candidates"]]


def assert_same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [d for d, _ in got] == [d for d, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=0, atol=1e-6)


def post_ok(client: httpx.Client, path: str, body) -> dict | list:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def test_rerank_string_docs_equal_in_process_rerank(client, queries, references):
    for qid, query, cands in queries:
        result = post_ok(client, "/rerank", request_of(qid, query, cands))
        assert result["query"] == {"text": query, "qid": qid}
        assert result["ranker"] == "dense"
        assert_same_ranking(ranked(result), references[qid])
        assert result["stats"]["model_calls"] >= 1


def test_rerank_dict_docs_and_plain_query_equal_in_process_rerank(client, queries, references):
    keys = ("contents", "segment")
    for qid, query, cands in queries:
        body = request_of(qid, query, cands, doc=lambda i, text: {keys[i % 2]: text, "id": i})
        body["query"] = query
        result = post_ok(client, "/rerank", body)
        assert result["query"] == {"text": query}
        assert_same_ranking(ranked(result), references[qid])
        given = {c["docid"]: c["doc"] for c in body["candidates"]}
        assert all(c["doc"] == given[c["docid"]] for c in result["candidates"])


def test_rerank_batch_equals_single_calls(client, queries):
    bodies = [request_of(*q) for q in queries]
    singles = [post_ok(client, "/rerank", b) for b in bodies]
    batch = post_ok(client, "/rerank_batch", bodies)
    assert len(batch) == len(singles)
    for got, want in zip(batch, singles, strict=True):
        assert got["query"] == want["query"]
        assert_same_ranking(ranked(got), ranked(want))


def test_concurrent_clients_each_get_their_own_ranking(client, queries, references):
    n = 8
    start = threading.Barrier(n)

    def one(i: int) -> tuple[str, dict]:
        qid, query, cands = queries[i % len(queries)]
        start.wait()
        return qid, post_ok(client, "/rerank", request_of(qid, query, cands))

    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(one, range(n)))
    for qid, result in answers:
        assert result["query"]["qid"] == qid
        assert_same_ranking(ranked(result), references[qid])


def test_micro_batcher_ranks_requests_that_arrive_together_in_one_call(ranker, queries):
    """A long wait makes batching deterministic: 8 requests of one /rerank_batch are queued
    before the worker's wait ends (one call), and 8 simultaneous clients share calls."""
    app = create_app(ranker, max_batch=8, max_wait_ms=1000)
    bodies = [request_of(*queries[i % len(queries)]) for i in range(8)]
    start = threading.Barrier(len(bodies))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        batch = post_ok(client, "/rerank_batch", bodies)
        assert [r["stats"]["batch_size"] for r in batch] == [8] * 8
        assert client.get("/health").json()["batches"] == 1

        def one(body: dict) -> dict:
            start.wait()
            return post_ok(client, "/rerank", body)

        with ThreadPoolExecutor(len(bodies)) as pool:
            answers = list(pool.map(one, bodies))
        health = client.get("/health").json()
    assert health["requests"] == 16
    assert health["batches"] - 1 < len(bodies)
    assert max(r["stats"]["batch_size"] for r in answers) > 1


class BlockingRanker(IdentityRanker):
    """Identity ranking that blocks until ``release`` is set (a long model call)."""

    def __init__(self) -> None:
        super().__init__()
        self.running, self.release = threading.Event(), threading.Event()

    def _rank(self, query, candidates):
        self.running.set()
        self.release.wait(30)
        return super()._rank(query, candidates)


def test_event_loop_keeps_answering_while_the_ranker_runs():
    ranker = BlockingRanker()
    body = {"query": "q", "candidates": [{"docid": d, "doc": d} for d in "abc"]}
    with (
        serve_in_thread(create_app(ranker)) as url,
        httpx.Client(base_url=url) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(client.post, "/rerank", json=body, timeout=60)
        assert ranker.running.wait(30)
        assert client.get("/health", timeout=5).json()["status"] == "ok"
        ranker.release.set()
        assert pending.result().status_code == 200


MALFORMED = {
    "invalid JSON": (
        b'{"query": {"text": "q"}, "candidates": [',
        400,
        "body: invalid JSON at character",
    ),
    "missing query": ({"candidates": [{"docid": "a", "doc": "x"}]}, 422, "query: Field required"),
    "query text not a string": (
        {"query": {"text": 5}, "candidates": [{"docid": "a", "doc": "x"}]},
        422,
        "query.text: Input should be a valid string",
    ),
    "candidates not a list": (
        {"query": "q", "candidates": {"docid": "a"}},
        422,
        "candidates: Input should be a valid list",
    ),
    "empty candidates": ({"query": "q", "candidates": []}, 422, "candidates: List should have"),
    "doc without text": (
        {"query": "q", "candidates": [{"docid": "a", "doc": "x"}, {"docid": "b", "doc": {"t": 1}}]},
        422,
        "candidates[1].doc: doc has no text field",
    ),
    "doc missing": ({"query": "q", "candidates": [{"docid": "a"}]}, 422, "candidates[0].doc"),
    "score not a number": (
        {"query": "q", "candidates": [{"docid": "a", "doc": "x", "score": "high"}]},
        422,
        "candidates[0].score: Input should be a valid number",
    ),
    "docid not a string or integer": (
        {"query": "q", "candidates": [{"docid": 1.5, "doc": "x"}]},
        422,
        "candidates[0].docid: docid must be a string or an integer, not float",
    ),
    "duplicate docid": (
        {"query": "q", "candidates": [{"docid": "a", "doc": "x"}, {"docid": "a", "doc": "y"}]},
        422,
        "candidates[1].docid: duplicate docid 'a'",
    ),
    "too many candidates": (
        {"query": "q", "candidates": [{"docid": str(i), "doc": "x"} for i in range(51)]},
        422,
        "candidates: 51 candidates, more than this service takes (50)",
    ),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_gets_4xx_naming_the_field_then_service_keeps_serving(
    client, queries, references, case
):
    body, status, reason = MALFORMED[case]
    if isinstance(body, bytes):
        response = client.post(
            "/rerank", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = client.post("/rerank", json=body)
    assert response.status_code == status, response.text
    assert reason in response.json()["error"]
    qid, query, cands = queries[0]
    assert_same_ranking(
        ranked(post_ok(client, "/rerank", request_of(qid, query, cands))), references[qid]
    )


def test_body_not_sent_as_json_gets_415_saying_so(client):
    form = {"content-type": "application/x-www-form-urlencoded"}  # what curl -d sends
    response = client.post("/rerank", content=b'{"query": "q"}', headers=form)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["error"]


def test_malformed_batch_names_the_request_index(client, queries):
    good = request_of(*queries[0])
    bad = {"query": "q", "candidates": [{"docid": "a", "doc": {"title": "only a title"}}]}
    response = client.post("/rerank_batch", json=[good, bad])
    assert response.status_code == 422
    assert response.json()["error"].startswith("[1].candidates[0].doc:")
    assert client.post("/rerank_batch", json=good).status_code == 422  # not a list
    assert client.post("/rerank_batch", json=[]).status_code == 422
    assert len(post_ok(client, "/rerank_batch", [good])) == 1


def test_validation_reason_joins_fields_in_one_line():
    errors = [
        {"loc": ("body", 2, "candidates", 0, "doc"), "msg": "Value error, bad", "type": "v"},
        {"loc": ("body", "query"), "msg": "Field required", "type": "missing"},
    ]
    assert validation_reason(errors) == "[2].candidates[0].doc: bad; query: Field required"


class FailingRanker(IdentityRanker):
    """Identity ranking, except for the query ``boom``."""

    def _rank(self, query, candidates):
        if query == "boom":
            raise RuntimeError("the model\nexploded")
        return super()._rank(query, candidates)


def test_ranker_error_is_500_with_one_line_and_service_keeps_serving():
    docs = [{"docid": d, "doc": d} for d in "abc"]
    app = create_app(FailingRanker(), max_wait_ms=500)
    start = threading.Barrier(2)

    def post(query: str) -> httpx.Response:
        start.wait()
        return client.post("/rerank", json={"query": query, "candidates": docs})

    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        with ThreadPoolExecutor(2) as pool:  # likely one batch: only "boom" fails
            boom, fine = pool.map(post, ["boom", "fine"])
        assert boom.status_code == 500
        assert boom.json()["error"] == "identity failed: RuntimeError: the model exploded"
        assert fine.status_code == 200
        assert (
            client.post("/rerank_batch", json=[{"query": "boom", "candidates": docs}]).status_code
            == 500
        )
        assert [
            c["docid"]
            for c in post_ok(client, "/rerank", {"query": "q", "candidates": docs})["candidates"]
        ] == list("abc")


def test_depth_reranks_the_head_and_keeps_the_tail_in_given_order(ranker, queries):
    depth = 3
    qid, query, cands = queries[0]
    head = ranker.rerank(query, [c.text for c in cands[:depth]])
    want_head = [cands[i].docid for i in head.order]
    with serve_in_thread(create_app(ranker, depth=depth)) as url:
        result = httpx.post(f"{url}/rerank", json=request_of(qid, query, cands), timeout=120)
    assert result.status_code == 200, result.text
    got = ranked(result.json())
    assert [d for d, _ in got] == want_head + [c.docid for c in cands[depth:]]
    np.testing.assert_allclose([s for _, s in got[:depth]], np.sort(head.scores)[::-1], atol=1e-6)
    scores = [s for _, s in got]
    assert all(a > b for a, b in itertools.pairwise(scores))


def test_health_reports_ranker_and_cached_passages(client, ranker, queries):
    post_ok(client, "/rerank", request_of(*queries[0]))
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["ranker"] == "dense"
    assert health["cached_passages"] == len(ranker.cache) >= N_DOCS


def test_cli_help_lists_the_service_flags(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--port", "--max-batch", "--max-wait-ms", "--depth"))


@pytest.mark.parametrize("flags", [["--max-batch", "0"], ["--port", "70000"], ["--depth", "0"]])
def test_cli_rejects_impossible_settings(flags, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--ranker", "dense", "--model", "all-minilm-l6-v2", *flags])
    assert exit_.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_cli_without_uvicorn_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn fails as if missing
    assert main(["serve", "--ranker", "dense", "--model", "all-minilm-l6-v2"]) == 2
    assert "pip install 'resrank_jax[serve]'" in capsys.readouterr().err
