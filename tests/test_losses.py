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
