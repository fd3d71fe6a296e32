"""Losses against hand-computed cases and loop-based NumPy references, with masks."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from resrank_jax import losses

RNG = np.random.default_rng(0)
B, N = 3, 6


def random_lists(seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(B, N)).astype(np.float32) * 0.3
    labels = rng.integers(0, 4, size=(B, N)).astype(np.float32)
    mask = np.ones((B, N), np.int32)
    mask[1, 4:] = 0
    mask[2, 1] = 0
    return scores, labels, mask


def np_ranknet(scores, labels, mask, kappa, first=False):
    num = den = 0.0
    for b in range(scores.shape[0]):
        valid = [i for i in range(scores.shape[1]) if mask[b, i]]
        order = sorted(valid, key=lambda i: (-labels[b, i], i))
        rank = {i: r + 1 for r, i in enumerate(order)}
        for i, j in itertools.permutations(valid, 2):
            if labels[b, i] > labels[b, j]:
                w = 1.0 / (rank[i] + rank[j]) if first else 1.0
                num += w * math.log1p(math.exp(-kappa * (scores[b, i] - scores[b, j])))
                den += w
    return num / den


def np_listmle(scores, labels, mask, kappa):
    out = []
    for b in range(scores.shape[0]):
        valid = [i for i in range(scores.shape[1]) if mask[b, i]]
        order = sorted(valid, key=lambda i: (-labels[b, i], i))
        s = [kappa * scores[b, i] for i in order]
        out.append(sum(np.log(np.sum(np.exp(s[k:]))) - s[k] for k in range(len(s))))
    return np.mean(out)


def np_softmax(x):
    e = np.exp(x - np.max(x))
    return e / e.sum()


def np_listnet(scores, labels, mask, kappa):
    out = []
    for b in range(scores.shape[0]):
        v = mask[b].astype(bool)
        p = np_softmax(labels[b, v])
        out.append(-np.sum(p * np.log(np_softmax(kappa * scores[b, v]))))
    return np.mean(out)


def np_kl(student, teacher, mask, t):
    out = []
    for b in range(student.shape[0]):
        v = mask[b].astype(bool)
        p, q = np_softmax(teacher[b, v] / t), np_softmax(student[b, v] / t)
        out.append(np.sum(p * np.log(p / q)))
    return np.mean(out)


def test_ranknet_hand_computed():
    # two candidates, the better one scored 0.1 lower: softplus(-10 * -0.1) = log(1 + e)
    loss = losses.ranknet(jnp.array([[0.2, 0.3]]), jnp.array([[1.0, 0.0]]), jnp.ones((1, 2)))
    assert float(loss) == pytest.approx(math.log1p(math.e), rel=1e-6)


@pytest.mark.parametrize("first", [False, True])
def test_ranknet_matches_numpy(first):
    scores, labels, mask = random_lists()
    got = losses.ranknet(scores, labels, mask, kappa=10.0, weighting="first" if first else None)
    assert float(got) == pytest.approx(np_ranknet(scores, labels, mask, 10.0, first), rel=1e-5)


def test_listmle_listnet_kl_match_numpy():
    scores, labels, mask = random_lists(1)
    assert float(losses.listmle(scores, labels, mask, kappa=2.0)) == pytest.approx(
        np_listmle(scores, labels, mask, 2.0), rel=1e-5
    )
    assert float(losses.listnet(scores, labels, mask, kappa=2.0)) == pytest.approx(
        np_listnet(scores, labels, mask, 2.0), rel=1e-5
    )
    teacher = RNG.normal(size=(B, N)).astype(np.float32)
    assert float(losses.kl_distillation(scores, teacher, mask, temperature=0.5)) == pytest.approx(
        np_kl(scores, teacher, mask, 0.5), rel=1e-5
    )


def test_listmle_hand_computed():
    # order (0, 1): -log(e^a / (e^a + e^b)) - log(1) with a = 1, b = 0
    loss = losses.listmle(
        jnp.array([[1.0, 0.0]]), jnp.array([[2.0, 1.0]]), jnp.ones((1, 2)), kappa=1.0
    )
    assert float(loss) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_masked_candidates_change_nothing():
    scores, labels, mask = random_lists(2)
    garbage = scores.copy()
    garbage[mask == 0] = 1e3
    wild_labels = labels.copy()
    wild_labels[mask == 0] = 99
    for fn in (losses.ranknet, losses.listnet, losses.listmle):
        a = fn(scores, labels, mask)
        b = fn(garbage, wild_labels, mask)
        assert float(a) == pytest.approx(float(b), rel=1e-6), fn.__name__


@pytest.mark.parametrize("fn", [losses.ranknet, losses.listnet, losses.listmle])
def test_permutation_invariance(fn):
    scores, labels, mask = random_lists(3)
    perm = RNG.permutation(N)
    a = fn(scores, labels, mask)
    b = fn(scores[:, perm], labels[:, perm], mask[:, perm])
    if fn is losses.listmle:  # ties are broken by index, so use distinct labels here
        labels = np.argsort(RNG.random((B, N))).astype(np.float32)
        a, b = fn(scores, labels, mask), fn(scores[:, perm], labels[:, perm], mask[:, perm])
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_gradients_are_finite_with_masks_and_one_item_lists():
    scores, labels, mask = random_lists(4)
    mask[0] = 0
    mask[0, 0] = 1  # a one-item list: no pairs, no list term
    for fn in (losses.ranknet, losses.listnet, losses.listmle):
        g = jax.grad(lambda s, fn=fn: fn(s, labels, mask))(jnp.asarray(scores))
        assert np.isfinite(np.asarray(g)).all(), fn.__name__
        assert float(jnp.abs(g[0]).max()) == 0.0, fn.__name__
        assert float(jnp.abs(g[mask == 0]).max()) == 0.0, fn.__name__


def np_infonce(q, d, pos, tau, doc_mask):
    out = []
    for b in range(q.shape[0]):
        logits = np.array([q[b] @ d[m] / tau for m in range(d.shape[0]) if doc_mask[m]])
        index = int(np.sum(doc_mask[: pos[b]]))
        out.append(-(logits[index] - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()))
    return np.mean(out)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_infonce_matches_numpy_with_masked_docs():
    q = unit(RNG.normal(size=(4, 8))).astype(np.float32)
    d = unit(RNG.normal(size=(12, 8))).astype(np.float32)
    pos = np.array([0, 3, 6, 9])
    doc_mask = np.ones(12, np.int32)
    doc_mask[[2, 11]] = 0
    got = losses.infonce(q, d, pos, temperature=0.05, doc_mask_m=doc_mask)
    assert float(got) == pytest.approx(np_infonce(q, d, pos, 0.05, doc_mask), rel=1e-5)


def test_combine_returns_every_term():
    total, metrics = losses.combine(
        {"rank": jnp.array(2.0), "ret": jnp.array(3.0)}, {"rank": 2.0, "ret": 1.0}
    )
    assert (
        float(total) == 7.0 and float(metrics["loss/rank"]) == 2.0 and float(metrics["loss"]) == 7.0
    )
    with pytest.raises(KeyError, match="listmle"):
        losses.combine({"rank": jnp.array(1.0)}, {"listmle": 1.0})


def test_unknown_weighting_is_an_error():
    with pytest.raises(ValueError, match="weighting"):
        losses.ranknet(jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.ones((1, 2)), weighting="lambda")


def test_sharded_infonce_and_ranknet_equal_single_device():
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from resrank_jax import make_mesh

    mesh = make_mesh((2, 2, 2))
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    q = unit(RNG.normal(size=(8, 16))).astype(np.float32)
    d = unit(RNG.normal(size=(32, 16))).astype(np.float32)  # 8 lists x 4 candidates
    pos = np.arange(8) * 4
    single = losses.infonce(q, d, pos, temperature=0.03)
    sharded_q, sharded_d = jax.device_put(q, rows), jax.device_put(d, rows)
    assert len(sharded_d.sharding.device_set) == 8
    sharded = jax.jit(lambda a, b, p: losses.infonce(a, b, p, temperature=0.03))(
        sharded_q, sharded_d, jax.device_put(pos, rows)
    )
    assert float(sharded) == pytest.approx(float(single), rel=1e-6)
    # every query sees all 32 documents: the global batch, not the 4 on its own device
    local = np.mean(
        [
            float(
                losses.infonce(
                    q[i : i + 2], d[4 * i : 4 * i + 8], pos[i : i + 2] - 4 * i, temperature=0.03
                )
            )
            for i in range(0, 8, 2)
        ]
    )
    assert abs(local - float(single)) > 1e-3
    scores, labels, mask = (np.tile(x, (8 // B + 1, 1))[:8] for x in random_lists(5))
    single_rank = losses.ranknet(scores, labels, mask)
    sharded_rank = jax.jit(losses.ranknet)(
        *(jax.device_put(x, rows) for x in (scores, labels, mask))
    )
    assert float(sharded_rank) == pytest.approx(float(single_rank), rel=1e-6)


def np_infonce_excluding(q, d, pos, tau, excluded):
    """Loop reference: query ``b``'s softmax runs over the columns not in ``excluded[b]``."""
    out = []
    for b in range(q.shape[0]):
        cols = [m for m in range(d.shape[0]) if m == pos[b] or m not in excluded[b]]
        logits = np.array([float(q[b] @ d[m]) / tau for m in cols], np.float64)
        top = logits.max()
        lse = top + np.log(np.sum(np.exp(logits - top)))
        out.append(lse - logits[cols.index(pos[b])])
    return float(np.mean(out))


def np_same_doc_excluded(docids, labels, k, pos):
    """For each query: every column holding a docid of one of its positives (judged, label
    > 0, or its target), found by comparing docid strings."""
    b_count = len(docids) // k
    excluded = []
    for b in range(b_count):
        keys = {docids[b * k + j] for j in range(k) if labels[b * k + j] > 0} | {docids[pos[b]]}
        excluded.append({m for m, doc in enumerate(docids) if doc in keys})
    return excluded


# 3 lists x 3 candidates; "d0" (query 0's target) reappears in query 1's list (column 4),
# "d7" is a second judged positive of query 2 (column 7, not its target) and reappears in
# query 0's list (column 2): a negative for query 0, excluded for query 2
DUP_DOCIDS = ["d0", "d1", "d7", "d3", "d0", "d5", "d6", "d7", "d8"]
DUP_LABELS = np.array([1, 0, 0, 1, 0, 0, 1, 2, 0])
DUP_POS = np.array([0, 3, 6])


def dup_batch(seed=1):
    rng = np.random.default_rng(seed)
    q = unit(rng.normal(size=(3, 8))).astype(np.float32)
    d = unit(rng.normal(size=(9, 8))).astype(np.float32)
    keys = np.array([int(s[1:]) for s in DUP_DOCIDS], np.int32)
    return q, d, keys


def test_infonce_without_mask_counts_a_duplicate_positive_as_negative():
    q, d, _ = dup_batch()
    got = float(losses.infonce(q, d, DUP_POS, temperature=0.05))
    naive = np_infonce_excluding(q, d, DUP_POS, 0.05, [set(), set(), set()])
    assert got == pytest.approx(naive, rel=1e-5)
    assert naive == pytest.approx(np_infonce(q, d, DUP_POS, 0.05, np.ones(9)), rel=1e-6)


def test_same_doc_positive_mask_marks_copies_and_other_judged_positives():
    _, _, keys = dup_batch()
    lists = np.repeat(np.arange(3), 3)
    mask = np.asarray(losses.same_doc_positive_mask(keys, DUP_LABELS > 0, lists, 3))
    want = np.zeros((3, 9), bool)
    for b, cols in enumerate(np_same_doc_excluded(DUP_DOCIDS, DUP_LABELS, 3, DUP_POS)):
        want[b, sorted(cols)] = True
    np.testing.assert_array_equal(mask, want)
    assert mask[0, 4] and not mask[0, 2]  # the copy of "d0"; "d7" stays query 0's negative
    assert mask[2, 7] and mask[2, 2]  # query 2's second positive and its copy
    # the target is added even when it is not judged (a teacher top-1)
    unjudged = np.asarray(
        losses.same_doc_positive_mask(keys, np.zeros(9, bool), lists, 3, target_b=DUP_POS)
    )
    assert unjudged[0].nonzero()[0].tolist() == [0, 4] and unjudged[2].nonzero()[0].tolist() == [6]


def test_infonce_false_negative_mask_matches_numpy():
    q, d, keys = dup_batch()
    lists = np.repeat(np.arange(3), 3)
    fn_mask = losses.same_doc_positive_mask(keys, DUP_LABELS > 0, lists, 3)
    got = float(losses.infonce(q, d, DUP_POS, temperature=0.05, false_negative_mask_bm=fn_mask))
    excluded = np_same_doc_excluded(DUP_DOCIDS, DUP_LABELS, 3, DUP_POS)
    want = np_infonce_excluding(q, d, DUP_POS, 0.05, excluded)
    assert got == pytest.approx(want, rel=1e-5)
    naive = float(losses.infonce(q, d, DUP_POS, temperature=0.05))
    assert abs(got - naive) > 1e-3
    # only query 0's duplicate: exactly that column leaves query 0's denominator
    only_dup = np.zeros((3, 9), bool)
    only_dup[0, 4] = True
    got_dup = losses.infonce(q, d, DUP_POS, temperature=0.05, false_negative_mask_bm=only_dup)
    want_dup = np_infonce_excluding(q, d, DUP_POS, 0.05, [{4}, set(), set()])
    assert float(got_dup) == pytest.approx(want_dup, rel=1e-5)


def test_infonce_excludes_a_judged_positive_that_is_not_the_target():
    q, d, _ = dup_batch()
    only_second = np.zeros((3, 9), bool)
    only_second[2, 7] = True  # query 2's label-2 document, target is column 6
    got = losses.infonce(q, d, DUP_POS, temperature=0.05, false_negative_mask_bm=only_second)
    want = np_infonce_excluding(q, d, DUP_POS, 0.05, [set(), set(), {7}])
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_false_negative_mask_keeps_the_target_and_composes_with_doc_mask():
    q, d, _ = dup_batch()
    everything = np.ones((3, 9), bool)  # marks the targets too: they must stay in
    got = losses.infonce(q, d, DUP_POS, temperature=0.05, false_negative_mask_bm=everything)
    assert float(got) == pytest.approx(0.0, abs=1e-6)  # the target is the only column left
    doc_mask = np.ones(9, np.int32)
    doc_mask[8] = 0
    fn_mask = np.zeros((3, 9), bool)
    fn_mask[0, 4] = True
    got = losses.infonce(
        q, d, DUP_POS, temperature=0.05, doc_mask_m=doc_mask, false_negative_mask_bm=fn_mask
    )
    want = np_infonce_excluding(q, d, DUP_POS, 0.05, [{4, 8}, {8}, {8}])
    assert float(got) == pytest.approx(want, rel=1e-5)
    # excluded columns get exactly zero gradient through the documents
    g = jax.grad(
        lambda dd: losses.infonce(q, dd, DUP_POS, temperature=0.05, false_negative_mask_bm=fn_mask)
    )(jnp.asarray(d))
    assert np.isfinite(np.asarray(g)).all()
    only_q0 = jax.grad(
        lambda dd: losses.infonce(
            q[:1], dd, DUP_POS[:1], temperature=0.05, false_negative_mask_bm=fn_mask[:1]
        )
    )(jnp.asarray(d))
    assert float(jnp.abs(only_q0[4]).max()) == 0.0 and float(jnp.abs(only_q0[5]).max()) > 0


def test_sharded_false_negative_mask_equals_single_device():
    """8 lists x 4 candidates on 8 devices, with docids repeated across lists (on other
    devices): the mask built inside ``jit`` from sharded keys and labels and the masked loss
    equal the single-device values, which equal the NumPy reference."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from resrank_jax import make_mesh

    mesh = make_mesh((2, 2, 2))
    rows = NamedSharding(mesh, P(("data", "fsdp")))
    rng = np.random.default_rng(3)
    b, k = 8, 4
    q = unit(rng.normal(size=(b, 16))).astype(np.float32)
    d = unit(rng.normal(size=(b * k, 16))).astype(np.float32)
    keys_bk = rng.integers(0, 12, size=(b, k)).astype(np.int32)  # many repeats
    labels_bk = (rng.random((b, k)) < 0.3).astype(np.float32)
    labels_bk[:, 0] = 1.0
    pos = np.arange(b) * k
    lists = np.repeat(np.arange(b), k)

    def loss(q_bd, d_md, keys, labels, positive):
        fn_mask = losses.same_doc_positive_mask(
            keys.reshape(-1), labels.reshape(-1) > 0, lists, b, target_b=positive
        )
        value = losses.infonce(
            q_bd, d_md, positive, temperature=0.03, false_negative_mask_bm=fn_mask
        )
        return value, fn_mask

    single, single_mask = loss(q, d, keys_bk, labels_bk, pos)
    args = [jax.device_put(x, rows) for x in (q, d, keys_bk, labels_bk, pos)]
    assert len(args[1].sharding.device_set) == 8
    sharded, sharded_mask = jax.jit(loss)(*args)
    np.testing.assert_array_equal(np.asarray(sharded_mask), np.asarray(single_mask))
    assert float(sharded) == pytest.approx(float(single), rel=1e-6)
    docids = [str(x) for x in keys_bk.reshape(-1)]
    excluded = np_same_doc_excluded(docids, labels_bk.reshape(-1), k, pos)
    assert any(len(e) > 1 for e in excluded)
    want = np_infonce_excluding(q, d, pos, 0.03, excluded)
    assert float(single) == pytest.approx(want, rel=1e-5)
    assert abs(float(single) - float(losses.infonce(q, d, pos, temperature=0.03))) > 1e-3
