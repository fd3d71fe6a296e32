"""A trained reranker as one artifact (``resrank export RUN_DIR OUT_DIR``): it loads without
its Orbax run (``load_ranker``, ``--model DIR``) and scores bit-identically to the run."""

import contextlib
import io
import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from train_runs import ROOT

from resrank_jax import Candidate, ModelRanker, build_ranker, export_artifact, load_ranker
from resrank_jax.cli import main as cli_main
from resrank_jax.config import config_to_json, resolve_config
from resrank_jax.evaluation import evaluate_ranker, load_dataset
from resrank_jax.model_card import evaluation_results
from resrank_jax.rerank.factory import ranker_from_run
from resrank_jax.tasks.dense import DenseTask
from resrank_jax.train.loop import run_training
from tests.gcs_emulator import BUCKET, gcs_emulator  # noqa: F401  (the fixture)

GATED = [
    "model.resrank.phi=linear",
    "model.resrank.residual=gated",
    "model.resrank.query_vector=gated",
    "steps=2",
    "checkpoint_every=2",
]
E2RANK = [  # a decoder encoder: pooling token, chat template and instructions travel too
    "model.mode=e2rank",
    "model.encoder=tiny-decoder",
    "data.list_size=4",
    "data.prompt_max_length=120",
    "data.instructions=scifact",
    "steps=2",
    "checkpoint_every=2",
]
PASSAGE_LENGTH = 32
N_QUERIES = 3


@pytest.fixture(scope="module")
def dl19():
    return load_dataset(
        ROOT / "data/trec-dl19/candidates.jsonl", ROOT / "data/trec-dl19/qrels.txt", name="DL19"
    )


def scores(ranker, queries) -> list[np.ndarray]:
    return [ranker.rank(qc.query, qc.candidates).scores for qc in queries]


@pytest.fixture(scope="module")
def gated(tmp_path_factory, dl19):
    """A trained gated ResRank run (with DL19 numbers recorded in it), the rankers
    ``ranker_from_run`` gives (ResRank, and dense on the same model), their scores and the
    run's artifact."""
    tmp = tmp_path_factory.mktemp("artifact")
    run = tmp / "run"
    run_training(resolve_config("tiny", GATED), run, progress=False)
    ranker = ranker_from_run("resrank", str(run), PASSAGE_LENGTH)
    dense = ModelRanker(DenseTask(ranker.task.recipe, ranker.task.encoder_tokenizer), ranker.model)
    queries = dl19.queries[:N_QUERIES]
    reference = {"resrank": scores(ranker, queries), "dense": scores(dense, queries[:1])}
    metrics = evaluate_ranker(ranker, dl19, max_queries=N_QUERIES, progress=False)
    (run / "eval-dl19.json").write_text(json.dumps(metrics))  # as eval.py --metrics-json
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # ``resrank export RUN_DIR OUT_DIR``
        assert cli_main(["export", str(run), str(tmp / "artifact")]) == 0
    assert "exported resrank (step 2)" in out.getvalue()
    return run, tmp / "artifact", ranker.model, reference, metrics


def test_loaded_artifact_scores_bit_identically(gated, dl19):
    run, artifact, _, reference, _ = gated
    assert not (artifact / "checkpoints").exists()
    loaded = load_ranker(artifact, passage_max_length=PASSAGE_LENGTH)
    assert isinstance(loaded, ModelRanker) and loaded.name == "resrank"
    queries = dl19.queries[:N_QUERIES]
    for got, want in zip(scores(loaded, queries), reference["resrank"], strict=True):
        np.testing.assert_array_equal(got, want)
    via_model = build_ranker("resrank", model=str(artifact), passage_max_length=PASSAGE_LENGTH)
    for got, want in zip(scores(via_model, queries), reference["resrank"], strict=True):
        np.testing.assert_array_equal(got, want)
    in_run = load_ranker(run / "export", passage_max_length=PASSAGE_LENGTH)  # the loop's export
    np.testing.assert_array_equal(scores(in_run, queries[:1])[0], reference["resrank"][0])
    dense = load_ranker(artifact, "dense", passage_max_length=PASSAGE_LENGTH)
    np.testing.assert_array_equal(scores(dense, queries[:1])[0], reference["dense"][0])
    with pytest.raises(ValueError, match="cannot serve ranker 'e2rank'"):
        build_ranker("e2rank", model=str(artifact))


def test_head_file_holds_exactly_the_params_outside_the_backbones(gated):
    from flax import nnx

    _, artifact, model, _, _ = gated  # the model of ``load_trained(run)``
    params = {
        "/".join(map(str, path)): np.asarray(var.get_value())
        for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }
    outside = {
        k: v for k, v in params.items() if not k.startswith(("encoder/backbone/", "reranker/"))
    }
    assert set(outside) == {"gate", "projector/kernel", "projector/bias"}
    head = load_file(str(artifact / "head.safetensors"))
    assert set(head) == set(outside)
    for name, value in outside.items():
        assert head[name].shape == value.shape
        np.testing.assert_array_equal(head[name], value)
    info = json.loads((artifact / "resrank.json").read_text())
    assert info["task"] == "resrank" and info["format_version"] == 1
    assert info["model"]["resrank"]["residual"] == "gated"
    assert info["recipe"]["passage_max_length"] == PASSAGE_LENGTH
    assert set(info["head"]["params"]) == set(outside)
    for part in ("encoder", "reranker"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in (artifact / part).iterdir()
        }
    assert not list(artifact.rglob("*.pkl")) and not list(artifact.rglob("*.bin"))


def test_model_card_names_the_preset_steps_and_evaluation(gated):
    _, artifact, _, _, metrics = gated
    card = (artifact / "README.md").read_text()
    assert "preset: `tiny`" in card
    assert "model.resrank.residual=gated" in card and "steps=2" in card
    assert "- steps: 2" in card and "stage2" in card
    assert "data/scifact/candidates.train.jsonl" in card
    assert "eval-dl19.json" in card and f"{metrics['nDCG@10']:.4g}" in card


def test_rerank_takes_plain_strings(gated, dl19):
    _, artifact, _, _, _ = gated
    ranker = load_ranker(artifact, passage_max_length=PASSAGE_LENGTH)
    qc = dl19.queries[0]
    candidates = qc.candidates[:10]
    ranking = ranker.rank(qc.query, candidates)
    result = ranker.rerank(qc.query, [c.text for c in candidates])
    np.testing.assert_array_equal(result.scores, ranking.scores)
    np.testing.assert_array_equal(result.order, ranking.order)
    assert result.docids == [str(i) for i in ranking.order]
    assert list(result) == [(int(i), float(ranking.scores[i])) for i in ranking.order]
    first = Candidate(candidates[0].docid, candidates[0].text)
    mixed = ranker.rerank(qc.query, [first, *(c.text for c in candidates[1:])])
    assert mixed.docids[list(mixed.order).index(0)] == candidates[0].docid
    np.testing.assert_array_equal(mixed.scores, ranking.scores)
    with pytest.raises(TypeError, match="not one string"):
        ranker.rerank(qc.query, "one text")


@pytest.mark.usefixtures("gcs_emulator")
def test_an_artifact_at_a_url_loads(gated, dl19):
    from resrank_jax.artifact import is_artifact
    from resrank_jax.paths import copy_tree

    _, artifact, _, reference, _ = gated
    url = f"gs://{BUCKET}/artifacts/gated"
    copy_tree(artifact, url)
    assert is_artifact(url)
    loaded = build_ranker("resrank", model=url, passage_max_length=PASSAGE_LENGTH)
    np.testing.assert_array_equal(scores(loaded, dl19.queries[:1])[0], reference["resrank"][0])


def test_evaluation_numbers_beside_the_run(tmp_path):
    """``experiment.py`` trains into ``OUT/train`` and writes ``OUT/results.json``: its
    numbers belong to the run only when its config is the run's."""
    config = {"steps": 3}
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "config.json").write_text(json.dumps(config))
    m = {"nDCG@10": 0.5, "MRR@10": 0.4, "R@100": 0.3, "MAP": 0.2, "queries": 7}
    results = {"config": config, "metrics": {"DL19": {"resrank (trained)": m}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert evaluation_results(tmp_path / "train") == [
        ("results.json", "metrics / DL19 / resrank (trained)", m)
    ]
    results["config"] = {"steps": 4}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert evaluation_results(tmp_path / "train") == []


def test_cli_export_of_a_bad_run_dir_is_one_line(tmp_path, capsys):
    main = cli_main  # resrank export RUN_DIR OUT_DIR
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no such run directory" in err and "\n" not in err
    (tmp_path / "not-a-run").mkdir()
    assert main(["export", str(tmp_path / "not-a-run"), str(tmp_path / "out")]) == 2
    assert "not a training run" in capsys.readouterr().err
    run = tmp_path / "no-checkpoint"
    run.mkdir()
    (run / "config.json").write_text(config_to_json(resolve_config("tiny")))
    assert main(["export", str(run), str(tmp_path / "out")]) == 2
    assert "no committed checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["export", str(run), str(tmp_path / "out")]) == 2  # --force writes into it
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow  # about 2 minutes on 2 cores (three loads of the tiny decoder's tokenizer)
def test_e2rank_round_trip(tmp_path, dl19):
    run, artifact = tmp_path / "run", tmp_path / "artifact"
    run_training(resolve_config("tiny", E2RANK), run, progress=False)
    export_artifact(run, artifact)
    assert sorted(p.name for p in artifact.iterdir()) == ["README.md", "encoder", "resrank.json"]
    queries = [qc for qc in dl19.queries[:2]]
    queries = [type(qc)(qc.qid, qc.query, qc.candidates[:8]) for qc in queries]
    want = scores(ranker_from_run("e2rank", str(run), PASSAGE_LENGTH), queries)
    loaded = load_ranker(artifact, passage_max_length=PASSAGE_LENGTH)
    assert loaded.task.recipe.instructions == "scifact"
    for got, ref in zip(scores(loaded, queries), want, strict=True):
        np.testing.assert_array_equal(got, ref)
