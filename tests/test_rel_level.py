"""The relevance level of binary measures comes from the qrels' source: BEIR rel >= 1, TREC DL
rel >= 2, ``--rel-level`` overrides; checked against ir_measures and hand-computed values."""

import importlib.util
import json
from pathlib import Path

import ir_measures
import pytest
from ir_measures import AP, RR, R, nDCG

from resrank_jax.data.formats import DataFormatError, read_qrels_with_format, read_run
from resrank_jax.data.irds import irds_qrels_format
from resrank_jax.evaluation import Dataset, load_dataset, score_run

# Two queries, graded 0/1/2. The candidate order (what the bm25 ranker keeps) puts a grade-1
# document above the first grade-2 one, so rel >= 1 and rel >= 2 give different numbers.
CANDIDATES = {"q1": ["a1", "a2", "a3"], "q2": ["b1", "b2", "b3"]}
GRADES = {"q1": {"a1": 1, "a2": 2, "a3": 0, "a4": 2}, "q2": {"b1": 0, "b2": 2, "b3": 1}}
# By hand. rel >= 1: q1 RR 1, R 2/3, AP (1/1 + 2/2)/3; q2 RR 1/2, R 1, AP (1/2 + 2/3)/2.
BY_HAND_REL1 = {"MRR@10": 0.75, "R@100": 5 / 6, "MAP": 0.625}
# rel >= 2: q1 RR 1/2, R 1/2, AP (1/2)/2; q2 RR 1/2, R 1, AP 1/2.
BY_HAND_REL2 = {"MRR@10": 0.5, "R@100": 0.75, "MAP": 0.375}


def write_candidates(path: Path) -> Path:
    """A candidate file with texts, first-stage scores descending in list order."""
    rows = [
        {
            "qid": qid,
            "query": f"query {qid}",
            "candidates": [
                {"docid": d, "score": float(len(docs) - i), "text": f"passage {d}"}
                for i, d in enumerate(docs)
            ],
        }
        for qid, docs in CANDIDATES.items()
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_beir_qrels(path: Path) -> Path:
    """BEIR TSV qrels with the ``query-id corpus-id score`` header."""
    rows = [f"{q}\t{d}\t{g}\n" for q, docs in GRADES.items() for d, g in docs.items()]
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(rows))
    return path


def write_trec_qrels(path: Path, grades: dict[str, dict[str, int]] = GRADES) -> Path:
    """TREC qrels ``qid 0 docid rel``."""
    path.write_text(
        "".join(f"{q} 0 {d} {g}\n" for q, docs in grades.items() for d, g in docs.items())
    )
    return path


def candidate_run() -> dict[str, list[tuple[str, float]]]:
    """The candidate order as a run (what the bm25 ranker returns), best first."""
    return {
        q: [(d, float(len(docs) - i)) for i, d in enumerate(docs)] for q, docs in CANDIDATES.items()
    }


def as_scores(run: dict[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    """A best-first run as ir_measures' ``qid -> {docid: score}``."""
    return {q: dict(ranked) for q, ranked in run.items()}


def ir_measures_reference(run: dict[str, dict[str, float]], rel: int) -> dict[str, float]:
    """The table's measures computed directly by ir_measures with an explicit ``rel``."""
    measures = {"nDCG@10": nDCG @ 10, "MRR@10": RR(rel=rel) @ 10, "R@100": R(rel=rel) @ 100}
    measures["MAP"] = AP(rel=rel)
    values = ir_measures.calc_aggregate(list(measures.values()), GRADES, run)
    return {name: values[m] for name, m in measures.items()}


def scored(dataset: Dataset) -> dict[str, float]:
    """``score_run`` of the candidate order on ``dataset``."""
    return score_run(candidate_run(), dataset, max_queries=None)


def assert_matches(metrics: dict, expected: dict[str, float]) -> None:
    """Every expected measure equals the reported one."""
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, abs=1e-9), name


@pytest.fixture
def files(tmp_path):
    """The candidate file, its BEIR qrels and the same judgments as TREC qrels."""
    return (
        write_candidates(tmp_path / "candidates.jsonl"),
        write_beir_qrels(tmp_path / "qrels.tsv"),
        write_trec_qrels(tmp_path / "qrels.txt"),
    )


def test_read_qrels_reports_the_format(tmp_path, files):
    _, beir, trec = files
    assert read_qrels_with_format(beir) == (GRADES, "beir")
    assert read_qrels_with_format(trec) == (GRADES, "trec")
    headerless = tmp_path / "headerless.tsv"  # no BEIR header: maybe TREC missing a column
    headerless.write_text("q1\ta1\t1\n")
    with pytest.raises(DataFormatError, match=r"headerless\.tsv:1: 3 columns .* neither TREC"):
        read_qrels_with_format(headerless)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("q1 0 a1 1\nq1 a2 2\n")
    with pytest.raises(DataFormatError, match=r"mixed\.txt:2: 3-column row in TREC-format"):
        read_qrels_with_format(mixed)


def test_graded_beir_qrels_count_rel_1(files):
    candidates, beir, _ = files
    dataset = load_dataset(candidates, beir)
    assert dataset.rel_level == 1
    metrics = scored(dataset)
    reference = ir_measures_reference(as_scores(candidate_run()), rel=1)
    assert_matches(metrics, reference)
    assert_matches(metrics, BY_HAND_REL1)
    assert metrics["MRR@10"] != pytest.approx(BY_HAND_REL2["MRR@10"])


def test_trec_qrels_count_rel_2_unless_binary(tmp_path, files):
    candidates, _, trec = files
    dataset = load_dataset(candidates, trec)
    assert dataset.rel_level == 2
    reference = ir_measures_reference(as_scores(candidate_run()), rel=2)
    assert_matches(scored(dataset), {**reference, **BY_HAND_REL2})
    # binary judgments written as TREC (the repository's SciFact copy): rel >= 2 would be empty
    binary = write_trec_qrels(tmp_path / "binary.txt", {"q1": {"a1": 1, "a2": 0}})
    assert load_dataset(candidates, binary).rel_level == 1


def test_rel_level_override(files):
    candidates, beir, trec = files
    assert load_dataset(candidates, beir, rel_level=2).rel_level == 2
    overridden = load_dataset(candidates, trec, rel_level=1)
    assert overridden.rel_level == 1
    assert_matches(scored(overridden), BY_HAND_REL1)
    with pytest.raises(ValueError, match="rel_level must be >= 1, got 0"):
        load_dataset(candidates, trec, rel_level=0)


def test_irds_ids_take_the_collection_convention():
    assert irds_qrels_format("msmarco-passage/trec-dl-2019") == "trec"
    assert irds_qrels_format("msmarco-document/trec-dl-2020/judged") == "trec"
    assert irds_qrels_format("beir/trec-covid") == "beir"
    assert irds_qrels_format("resrank/scifact/test") == "beir"


def test_repository_datasets_keep_their_levels():
    dl19 = load_dataset("data/trec-dl19/candidates.jsonl", "data/trec-dl19/qrels.txt")
    assert dl19.rel_level == 2
    scifact = load_dataset(
        "data/scifact/candidates.test.jsonl",
        "data/scifact/qrels/test.tsv",
        "data/scifact/corpus.jsonl",
    )
    assert scifact.rel_level == 1


@pytest.fixture(scope="module")
def eval_cli():
    """The repository's ``eval.py`` as a module."""
    spec = importlib.util.spec_from_file_location(
        "eval_cli", Path(__file__).resolve().parent.parent / "eval.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("flag", "level"), [([], 1), (["--rel-level", "2"], 2)])
def test_eval_main_bm25_with_rel_level(tmp_path, files, eval_cli, flag, level):
    candidates, beir, _ = files
    metrics_path, run_path = tmp_path / "m.json", tmp_path / "bm25.run"
    argv = ["--candidates", str(candidates), "--qrels", str(beir), "--ranker", "bm25"]
    argv += ["--metrics-json", str(metrics_path), "--run-out", str(run_path), "--quiet", *flag]
    assert eval_cli.main(argv) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics["rel_level"] == level and metrics["queries"] == 2
    assert_matches(metrics, ir_measures_reference(read_run(run_path), rel=level))
    assert_matches(metrics, BY_HAND_REL1 if level == 1 else BY_HAND_REL2)


def test_eval_rejects_rel_level_below_1(files, eval_cli, capsys):
    candidates, beir, _ = files
    argv = ["--candidates", str(candidates), "--qrels", str(beir), "--ranker", "bm25"]
    with pytest.raises(SystemExit):
        eval_cli.parse_args([*argv, "--rel-level", "0"])
    assert "--rel-level must be >= 1, got 0" in capsys.readouterr().err
