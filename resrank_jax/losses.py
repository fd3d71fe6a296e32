"""Ranking and retrieval losses, jitted and masking-exact.

Shapes: B lists (queries), N candidates per list, M documents in the (global) batch, D width.
``labels_bn`` are "higher is better" relevance targets: a teacher permutation becomes
``N - rank`` (rank 0 = best), qrels lists use their grades. Masked candidates (``mask_bn ==
0``) take no part in any term; a list with fewer than two valid candidates contributes no
ranking pairs. Under ``jax.jit`` with batch-sharded inputs the matrices below are computed on
the **global** batch (XLA gathers across devices), so in-batch negatives span every device.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

NEG = -1e9  # finite "minus infinity": keeps masked logits out of softmax without NaNs


def infonce(
    q_bd: jax.Array,
    d_md: jax.Array,
    positive_b: jax.Array,
    *,
    temperature: float = 0.03,
    doc_mask_m: jax.Array | None = None,
    false_negative_mask_bm: jax.Array | None = None,
) -> jax.Array:
    """Contrastive loss: query ``b``'s positive is document ``positive_b[b]`` among all ``M``
    documents (its own list's other candidates are hard negatives, every other list's
    documents are in-batch negatives). Inputs are L2-normalised; returns the mean over B.

    Args:
        q_bd: query vectors ``[B, D]``.
        d_md: document vectors ``[M, D]`` (the B lists' candidates, flattened).
        positive_b: ``[B]`` int, the column of query ``b``'s target in ``d_md``.
        doc_mask_m: ``[M]``, 0 = padding column, out of every query's softmax.
        false_negative_mask_bm: ``[B, M]`` bool, True = column ``m`` is no negative for query
            ``b`` (e.g. a copy of its positive in another list, or another judged positive of
            ``b``; see :func:`same_doc_positive_mask`): it leaves query ``b``'s softmax
            denominator (logit ``NEG``, zero gradient). The target column ``positive_b[b]``
            always stays in, whatever the mask says there.

    Under ``jax.jit`` with inputs sharded on their first axis (B rows / M rows) this is the
    global-batch value: there is no ``shard_map``, XLA gathers ``d_md`` for the ``[B, M]``
    logits, and a mask sharded on its B rows lines up with them.
    """
    logits_bm = (q_bd.astype(jnp.float32) @ d_md.astype(jnp.float32).T) / temperature
    if doc_mask_m is not None:
        logits_bm = jnp.where(doc_mask_m[None, :].astype(bool), logits_bm, NEG)
    if false_negative_mask_bm is not None:
        target_bm = jnp.arange(logits_bm.shape[1])[None, :] == positive_b[:, None]
        drop_bm = false_negative_mask_bm.astype(bool) & ~target_bm
        logits_bm = jnp.where(drop_bm, NEG, logits_bm)
    log_probs = jax.nn.log_softmax(logits_bm, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_probs, positive_b[:, None], axis=-1))


def same_doc_positive_mask(
    doc_key_m: jax.Array,
    positive_m: jax.Array,
    list_of_m: jax.Array,
    num_queries: int,
    *,
    target_b: jax.Array | None = None,
) -> jax.Array:
    """The ``false_negative_mask_bm [B, M]`` of :func:`infonce`: True where column ``m``'s
    document key equals the key of any positive of query ``b``.

    Query ``b``'s positives are the columns ``m`` with ``list_of_m[m] == b`` and
    ``positive_m[m]`` (judged relevant: qrels grade > 0, not a teacher score, which is > 0
    for every candidate), plus ``target_b[b]`` when given (the InfoNCE target, so that a
    teacher top-1 that is not judged is covered too). The positive columns themselves are
    marked as well: ``infonce`` keeps the target column, so the mask removes exactly the
    copies of the target elsewhere in the batch and every other judged positive of ``b``
    (and their copies) from ``b``'s negatives. Columns of other queries' positives are not
    touched for ``b``: they stay ``b``'s in-batch negatives unless ``b`` judged them too.

    Args:
        doc_key_m: ``[M]`` int, one key per document (e.g. a docid hash); equal keys = same
            document. Keys of padding columns do not matter while ``positive_m`` is False
            there (``infonce``'s ``doc_mask_m`` removes padding anyway).
        positive_m: ``[M]`` bool.
        list_of_m: ``[M]`` int in ``[0, num_queries)``, the query (list) that owns column
            ``m``; ``jnp.repeat(jnp.arange(B), K)`` for ``[B, K]`` lists flattened row-major.
        num_queries: ``B`` (static).
        target_b: optional ``[B]`` int column of each query's InfoNCE target.

    Pure ``jnp`` and jittable; under ``jax.jit`` with batch-sharded ``[B, K]`` keys and labels
    (flattened to ``[M]``) it sees the global batch, like ``infonce``: build the mask inside
    the step from global arrays, not per host.
    """
    doc_key_m = jnp.asarray(doc_key_m)
    list_of_m = jnp.asarray(list_of_m)
    owned_bm = (list_of_m[None, :] == jnp.arange(num_queries)[:, None]) & jnp.asarray(
        positive_m, bool
    )[None, :]
    if target_b is not None:
        owned_bm = owned_bm | (
            jnp.arange(doc_key_m.shape[0])[None, :] == jnp.asarray(target_b)[:, None]
        )
    same_mm = (doc_key_m[:, None] == doc_key_m[None, :]).astype(jnp.float32)
    # [B, M] x [M, M] count of query b's positives sharing column m's key (exact in fp32)
    return (owned_bm.astype(jnp.float32) @ same_mm) > 0.5


def teacher_ranks(labels_bn: jax.Array, mask_bn: jax.Array) -> jax.Array:
    """1-based rank of each candidate by descending label (ties: earlier index first);
    masked candidates rank after all valid ones."""
    key = jnp.where(mask_bn.astype(bool), labels_bn.astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-key, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1) + 1


def ranknet(
    scores_bn: jax.Array,
    labels_bn: jax.Array,
    mask_bn: jax.Array,
    *,
    kappa: float = 10.0,
    weighting: str | None = None,
) -> jax.Array:
    """Pairwise logistic loss ``softplus(-kappa (s_i - s_j))`` over valid pairs with
    ``label_i > label_j``, averaged over all such pairs of the batch.

    ``weighting="first"`` weights each pair by ``1 / (r_i + r_j)`` (FIRST; ``r`` = 1-based
    teacher rank) and takes the weighted mean.
    """
    s = kappa * scores_bn.astype(jnp.float32)
    labels = labels_bn.astype(jnp.float32)
    valid = mask_bn.astype(bool)
    pair_bnn = (labels[:, :, None] > labels[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    loss_bnn = jax.nn.softplus(-(s[:, :, None] - s[:, None, :]))
    if weighting is None:
        weight_bnn = pair_bnn.astype(jnp.float32)
    elif weighting == "first":
        ranks = teacher_ranks(labels_bn, mask_bn).astype(jnp.float32)
        weight_bnn = pair_bnn / (ranks[:, :, None] + ranks[:, None, :])
    else:
        raise ValueError(f"unknown ranknet weighting {weighting!r} (None or 'first')")
    return jnp.sum(loss_bnn * weight_bnn) / jnp.maximum(jnp.sum(weight_bnn), 1e-12)


def _has_list(mask_bn: jax.Array) -> jax.Array:
    return (mask_bn.astype(jnp.int32).sum(-1) >= 2).astype(jnp.float32)


def _mean_over_lists(loss_b: jax.Array, mask_bn: jax.Array) -> jax.Array:
    has = _has_list(mask_bn)
    return jnp.sum(loss_b * has) / jnp.maximum(jnp.sum(has), 1.0)


def listnet(
    scores_bn: jax.Array, labels_bn: jax.Array, mask_bn: jax.Array, *, kappa: float = 10.0
) -> jax.Array:
    """ListNet top-one cross entropy between ``softmax(labels)`` and ``softmax(kappa s)``
    over the valid candidates of each list; mean over lists."""
    valid = mask_bn.astype(bool)
    target = jax.nn.softmax(jnp.where(valid, labels_bn.astype(jnp.float32), NEG), axis=-1)
    log_p = jax.nn.log_softmax(
        jnp.where(valid, kappa * scores_bn.astype(jnp.float32), NEG), axis=-1
    )
    return _mean_over_lists(-jnp.sum(jnp.where(valid, target * log_p, 0.0), axis=-1), mask_bn)


def listmle(
    scores_bn: jax.Array, labels_bn: jax.Array, mask_bn: jax.Array, *, kappa: float = 10.0
) -> jax.Array:
    """ListMLE: negative Plackett-Luce log-likelihood of the teacher order (descending label,
    ties by index) under ``kappa s``, over valid candidates; mean over lists."""
    valid = mask_bn.astype(bool)
    key = jnp.where(valid, labels_bn.astype(jnp.float32), -jnp.inf)
    order = jnp.argsort(-key, axis=-1, stable=True)
    s_sorted = jnp.take_along_axis(kappa * scores_bn.astype(jnp.float32), order, axis=-1)
    valid_sorted = jnp.take_along_axis(valid, order, axis=-1)
    masked = jnp.where(valid_sorted, s_sorted, NEG)
    # logsumexp over the suffix i..N of the teacher order
    suffix_lse = jax.lax.cumlogsumexp(masked, axis=masked.ndim - 1, reverse=True)
    terms = jnp.where(valid_sorted, suffix_lse - s_sorted, 0.0)
    return _mean_over_lists(jnp.sum(terms, axis=-1), mask_bn)


def kl_distillation(
    student_bn: jax.Array,
    teacher_bn: jax.Array,
    mask_bn: jax.Array,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """``KL(softmax(teacher / T) || softmax(student / T))`` over valid candidates; mean over
    lists."""
    valid = mask_bn.astype(bool)
    log_p = jax.nn.log_softmax(jnp.where(valid, teacher_bn / temperature, NEG), axis=-1)
    log_q = jax.nn.log_softmax(jnp.where(valid, student_bn / temperature, NEG), axis=-1)
    kl_b = jnp.sum(jnp.where(valid, jnp.exp(log_p) * (log_p - log_q), 0.0), axis=-1)
    return _mean_over_lists(kl_b, mask_bn)


def combine(
    terms: Mapping[str, jax.Array], weights: Mapping[str, float]
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of named loss terms; returns ``(total, metrics)`` where metrics holds every
    term (``loss/<name>``) and the total (``loss``). A weight without a term is an error."""
    unknown = sorted(set(weights) - set(terms))
    if unknown:
        raise KeyError(f"loss weights name terms that were not computed: {unknown}")
    total = sum(weights[name] * terms[name] for name in weights)
    metrics = {f"loss/{name}": value for name, value in terms.items()}
    metrics["loss"] = total
    return total, metrics
