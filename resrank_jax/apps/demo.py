"""The main job: train ResRank pairs from real pretrained weights (all-MiniLM-L6-v2 encoder,
SmolLM2-135M-Instruct reranker) dual-stage on SciFact train, as published (SPEC defaults) and
in our gated variant, then rerank BM25 top-100 of SciFact test and TREC DL19 with every
ranker, print one table, and save JSON, markdown and an nDCG-vs-latency plot. On SciFact it
also retrieves the top 100 from the whole corpus with each trained encoder (a dense index) and
reranks them with that model's ResRank (retrieve-then-rerank with one encoder).

    resrank demo [--full | --reduced] [--generative] [--output-dir runs/demo]
    python -m resrank_jax.apps.demo ...   (the same)

Defaults fit ~15 minutes on 2 CPU cores (query subsets, short passages); ``--full`` ranks all
queries after one pass over the training lists (hours on 2 cores: README); ``--reduced`` is
the seconds-scale mode the test suite runs. ``--generative`` adds the generative listwise baseline
(SmolLM2-135M-Instruct, window 20/10) on the DL19 queries, about 160 s a query on 2 cores.
Rerunning resumes the training runs and the evaluation: each finished (set, ranker) entry is
journaled in ``OUTPUT_DIR/eval_journal.jsonl`` (``apps/eval_journal.py``) and not ranked
again while the sizes and trained runs are the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import time
from pathlib import Path

from resrank_jax.apps.eval_journal import EvalJournal
from resrank_jax.apps.experiment import eval_datasets
from resrank_jax.apps.plot import quality_latency_svg
from resrank_jax.config import resolve_config
from resrank_jax.data.bundled import data_dir
from resrank_jax.data.requests import read_corpus_texts
from resrank_jax.evaluation import Dataset, evaluate_ranker, format_table
from resrank_jax.hf.packaged import packaged_weights
from resrank_jax.index_dir import SavedIndex, build_index, retrieve
from resrank_jax.rerank.base import IdentityRanker
from resrank_jax.rerank.factory import build_ranker, run_rankers
from resrank_jax.rss import PHASES
from resrank_jax.sharding import mesh_shape_for_batch
from resrank_jax.train.loop import run_training

SPEC_PRESET = "smollm2-135m-spec"
# Both trained ResRank models, reported side by side: as published, and our gated variant.
TRAINED = {"trained SPEC": SPEC_PRESET, "trained gated": "smollm2-135m"}
RETRIEVAL_DEPTH = 100  # dense retrieval rows: candidates per query from the whole corpus


@dataclasses.dataclass(frozen=True)
class DemoSize:
    steps: int
    train_queries: int
    dl19_queries: int
    scifact_queries: int
    passage_max_length: int
    whole_corpus: bool = True  # dense retrieval rows: SciFact's corpus, else the candidates


SIZES = {
    "reduced": DemoSize(
        steps=4,
        train_queries=16,
        dl19_queries=2,
        scifact_queries=2,
        passage_max_length=32,
        whole_corpus=False,
    ),
    "default": DemoSize(
        steps=30, train_queries=400, dl19_queries=10, scifact_queries=20, passage_max_length=128
    ),
    # 200 steps x 4 lists = one pass over SciFact's 809 training lists
    "full": DemoSize(
        steps=200, train_queries=0, dl19_queries=0, scifact_queries=0, passage_max_length=128
    ),
}


def scifact_corpus(dataset: Dataset, max_queries: int, whole: bool) -> dict[str, str]:
    """SciFact's whole corpus (``docid -> text``), or only the candidates of the ranked
    queries (the reduced mode)."""
    if whole:
        return read_corpus_texts(data_dir() / "scifact/corpus.jsonl")
    queries = dataset.queries[: max_queries or None]
    return {c.docid: c.text for qc in queries for c in qc.candidates}


def dense_retrieval_rows(
    label: str, rankers: dict, dataset: Dataset, max_queries: int, corpus: dict[str, str]
) -> dict[str, dict]:
    """``dataset``'s queries answered from ``corpus``: the top ``RETRIEVAL_DEPTH`` by the
    trained encoder (an index made through the rankers' shared cache, so passages ranked
    before are not encoded again), then those lists reranked by the trained ResRank with the
    index's vectors (the paper's unified index). ``index_seconds``: building the index and
    retrieving."""
    started = time.perf_counter()
    index = build_index(rankers["dense"], corpus, through_cache=True, progress=False)
    saved = SavedIndex(index, corpus, {})
    topics = {qc.qid: qc.query for qc in dataset.queries[: max_queries or None]}
    requests = retrieve(rankers["resrank"], saved, topics, RETRIEVAL_DEPTH)
    index_s = time.perf_counter() - started
    retrieved = dataclasses.replace(
        dataset, name=f"{dataset.name} dense top-{RETRIEVAL_DEPTH}", queries=requests.queries
    )
    rows = {}
    for name, ranker in (
        (f"dense retrieval ({label} encoder)", IdentityRanker("dense retrieval")),
        (f"dense retrieval + resrank ({label})", rankers["resrank"]),
    ):
        m = evaluate_ranker(ranker, retrieved, max_queries=max_queries or None)
        m |= {"ranker": name, "index_seconds": index_s}
        rows[f"{retrieved.name} ({m['queries']} q of {len(corpus)} docs) / {name}"] = m
    return rows


def main(argv=None) -> int:
    """``python -m resrank_jax.apps.demo``: the same command as ``resrank demo``."""
    from resrank_jax.cli import run_subcommand

    return run_subcommand("demo", argv)


def run(args: argparse.Namespace) -> int:
    """The demo with ``resrank demo``'s flags (``resrank_jax/cli/demo.py``)."""
    size = SIZES["full" if args.full else "reduced" if args.reduced else "default"]
    out = Path(args.output_dir)
    started = time.perf_counter()
    packaged_weights("all-minilm-l6-v2"), packaged_weights("smollm2-135m-instruct")  # fail early

    print(f"[1/3] training ResRank (MiniLM encoder + SmolLM2 reranker) on SciFact train: {size}")
    qps = resolve_config(SPEC_PRESET).data.queries_per_step
    overrides = [
        f"steps={size.steps}",
        f"checkpoint_every={max(1, size.steps // 4)}",
        f"data.max_queries={size.train_queries}",
        f"data.passage_max_length={min(size.passage_max_length, 64)}",
        f"mesh={mesh_shape_for_batch(qps)}",  # any device count (8 TPU cores, 1 CPU)
    ]
    train_summary = {
        label: run_training(resolve_config(preset, overrides), out / preset)
        for label, preset in TRAINED.items()
    }
    train_s = time.perf_counter() - started

    print("[2/3] loading rankers")
    with PHASES.phase("load rankers"):
        named, trained, dl19_only = load_rankers(out, size, args.generative)
    print("[3/3] reranking")
    journal = EvalJournal(out / "eval_journal.jsonl", fingerprint(out, size, args.generative))
    if journal.entries:
        print(f"resuming the evaluation: {len(journal.entries)} entries already done")
    with PHASES.phase("evaluation"):
        rows, points = evaluate_all(named, trained, dl19_only, size, journal)
    table = format_table(rows)
    print(table)
    total_s = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    (out / "results.json").write_text(
        json.dumps(
            {
                "size": dataclasses.asdict(size),
                "generative": args.generative,
                "train": train_summary,
                "train_seconds": train_s,
                "total_seconds": total_s,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    quality_latency_svg(
        points, out / "ndcg_vs_latency.svg", title="nDCG@10 vs latency per query (2-core CPU)"
    )
    print(
        f"saved {out / 'results.md'}, {out / 'results.json'}, {out / 'ndcg_vs_latency.svg'}; "
        f"{total_s / 60:.1f} min in all"
    )
    return 0


def fingerprint(out: Path, size: DemoSize, generative: bool) -> dict:
    """What the evaluation depends on: the sizes and each trained run's config and step."""
    runs = {}
    for preset in TRAINED.values():
        config = (out / preset / "config.json").read_bytes()
        steps = json.loads((out / preset / "summary.json").read_text())["steps"]
        runs[preset] = {"config_sha256": hashlib.sha256(config).hexdigest(), "steps": steps}
    return {"size": dataclasses.asdict(size), "generative": generative, "runs": runs}


def load_rankers(out: Path, size: DemoSize, generative: bool) -> tuple[list, dict, list]:
    """The rankers of the table: ``(name, ranker)`` pairs for every set, the trained runs'
    rankers by label, and the DL19-only generative baseline when asked for."""
    kw = dict(passage_max_length=size.passage_max_length)
    named = [
        ("bm25", IdentityRanker("bm25")),
        ("dense (zero-shot MiniLM)", build_ranker("dense", model="all-minilm-l6-v2", **kw)),
        ("e2rank mode (zero-shot MiniLM)", build_ranker("e2rank", model="all-minilm-l6-v2", **kw)),
    ]
    trained = {label: run_rankers(str(out / preset), **kw) for label, preset in TRAINED.items()}
    for label, rankers in trained.items():
        named += [
            (f"dense ({label} encoder)", rankers["dense"]),
            (f"resrank ({label}, single pass)", rankers["resrank"]),
        ]
    dl19_only = []
    if generative:
        name = "generative window 20/10 (zero-shot SmolLM2)"
        dl19_only.append((name, build_ranker("generative", model="smollm2-135m-instruct")))
    return named, trained, dl19_only


def _ranker_entry(name, ranker, dataset, max_queries) -> tuple[dict, list]:
    """One journal entry: ``ranker`` on ``dataset``, its table row and quality/latency point."""
    m = evaluate_ranker(ranker, dataset, max_queries=max_queries or None)
    m["ranker"] = name
    return {f"{dataset.name} ({m['queries']} q) / {name}": m}, [{**m, "dataset": dataset.name}]


def _retrieval_entry(label, rankers, dataset, max_queries, corpus) -> tuple[dict, list]:
    """One journal entry of ``dense_retrieval_rows`` (no quality/latency points)."""
    return dense_retrieval_rows(label, rankers, dataset, max_queries, corpus()), []


def evaluate_all(
    named: list, trained: dict, dl19_only: list, size: DemoSize, journal: EvalJournal
) -> tuple[dict[str, dict], list[dict]]:
    """Every ranker on DL19 and SciFact (BM25 also on all queries), and the dense retrieval
    rows of SciFact; returns the table's rows and the quality/latency points. Entries the
    ``journal`` holds are taken from it; each new one is journaled when it finishes."""
    rows, points = {}, []

    def entry(key: str, compute) -> None:
        done = journal.get(key)
        if done is None:
            new_rows, new_points = compute()
            journal.put(key, new_rows, new_points)
            done = journal.get(key)
        rows.update(done["rows"])
        points.extend(done["points"])

    for dataset, max_queries in eval_datasets(size.dl19_queries, size.scifact_queries):
        full_bm25 = evaluate_ranker(IdentityRanker("bm25"), dataset, progress=False)
        full_bm25["ranker"] = "bm25"
        rows[f"{dataset.name} (all {full_bm25['queries']} q)"] = full_bm25
        extra = dl19_only if dataset.name == "DL19" else []
        for name, ranker in [*named, *extra]:
            one = functools.partial(_ranker_entry, name, ranker, dataset, max_queries)
            entry(f"{dataset.name} / {name}", one)
        if dataset.name == "SciFact-test":  # the corpus is read once, and only if needed
            corpus = functools.cache(
                functools.partial(scifact_corpus, dataset, max_queries, size.whole_corpus)
            )
            for label, rankers in trained.items():
                retrieval = functools.partial(
                    _retrieval_entry, label, rankers, dataset, max_queries, corpus
                )
                entry(f"{dataset.name} / dense retrieval ({label})", retrieval)
    return rows, points


if __name__ == "__main__":
    raise SystemExit(main())
