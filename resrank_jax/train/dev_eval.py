"""nDCG@10 on held-out dev queries during training (``eval_every``), and the best-dev
checkpoint (``keep_best``).

The dev set is the last ``data.dev_queries`` queries of ``data.candidates`` (left out of the
training lists by ``load_lists``), ranked over their candidates with the model's own ranker
(``ModelRanker``: the same prompt and score as training) and judged by ``data.qrels``. With
``data.candidate_order=shuffled`` each dev list is shuffled too (``evaluation.shuffled``, seed
``DEV_SHUFFLE_SEED`` for every run), so a reranker trained on shuffled lists is measured as it
will be used, not on the first-stage order it never saw.
"""

from __future__ import annotations

import jax
from flax import nnx
from jax.experimental import multihost_utils

from resrank_jax.data.formats import read_candidates, read_corpus, read_qrels
from resrank_jax.evaluation import Dataset, rerank_dataset, score_run, shuffled
from resrank_jax.rerank.model_ranker import ModelRanker
from resrank_jax.train.checkpoint import Checkpointer

DEV_SHUFFLE_SEED = 0


def dev_dataset(data) -> Dataset:
    """The held-out queries of ``data`` (a ``DataConfig``) with their judgments."""
    corpus = read_corpus(data.file("corpus"))
    queries = read_candidates(data.file("candidates"), corpus)[-data.dev_queries :]
    qrels = read_qrels(data.file("qrels"))
    dev = Dataset("dev", queries, {q.qid: qrels.get(q.qid, {}) for q in queries}, rel_level=1)
    return shuffled(dev, DEV_SHUFFLE_SEED) if data.candidate_order == "shuffled" else dev


class DevEval:
    """Ranks the dev set with the run's current params; with ``keep_best`` saves the state of
    each new best nDCG@10 into ``checkpoints_best/`` (one kept)."""

    def __init__(self, run) -> None:
        self.dataset = dev_dataset(run.cfg.data)
        self.best = float("-inf")
        self.ranker: ModelRanker | None = None  # one compiled score for every evaluation
        self.best_ckpt = (
            Checkpointer(run.out / "checkpoints_best", keep=1, async_save=False)
            if run.cfg.keep_best
            else None
        )
        if self.best_ckpt is not None and self.best_ckpt.latest_step() is not None:
            meta = self.best_ckpt.restore_meta(self.best_ckpt.latest_step())
            self.best = meta["dev_ndcg@10"]

    def evaluate(self, run, iterator) -> float:
        """nDCG@10 of the current params (every process calls it: params are gathered)."""
        params = run.state["params"]
        if jax.process_count() > 1:
            params = multihost_utils.process_allgather(params, tiled=True)
        model = nnx.merge(run.graphdef, params, run.rest)
        self.ranker = self.ranker.with_model(model) if self.ranker else ModelRanker(run.task, model)
        ranked, _ = rerank_dataset(self.ranker, self.dataset, progress=False)
        ndcg = float(score_run(ranked, self.dataset, max_queries=None)["nDCG@10"])
        if self.best_ckpt is not None and ndcg > self.best:
            self.best = ndcg
            meta = {**run.pos.meta(iterator.state), "dev_ndcg@10": ndcg, "config": run.config_json}
            self.best_ckpt.save(run.pos.global_step, run.state, meta, force=True)
        return ndcg

    def close(self) -> None:
        if self.best_ckpt is not None:
            self.best_ckpt.close()
