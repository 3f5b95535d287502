"""Zoo preprocessing (alignment + canonical form, cached) and loss barriers."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.zoo._util import small_config, teacher_data
from weightflow_jax import mlp, symmetry
from weightflow_jax.zoo import build, preprocessing as pp, store

DATA = teacher_data()
_LOGITS = jax.jit(jax.vmap(mlp.forward, in_axes=(0, None)))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    c = small_config(tmp_path_factory.mktemp("zoos") / "zoo", num_runs=4)
    return store.load_zoo(build.build_zoo(c, data=DATA, progress=False))


def _logits(params):
    return np.asarray(_LOGITS([(jnp.asarray(w), jnp.asarray(b)) for w, b in params],
                              jnp.asarray(DATA.x_test)))


def test_exact_preserves_function_and_caches(zoo, monkeypatch):
    out = pp.preprocess(zoo, "exact")
    ref_idx = zoo.final_indices()[0]
    assert out.reference_index == ref_idx
    for (w, b), (w0, b0) in zip(out.reference, zoo.select(ref_idx)):
        np.testing.assert_array_equal(w, w0)
    before = _logits(zoo.params)
    np.testing.assert_allclose(_logits(out.params), before, rtol=1e-5, atol=1e-5)
    back = symmetry.decanonicalize(out.canonical)
    np.testing.assert_allclose(_logits(back), before, rtol=1e-4, atol=1e-4)
    assert symmetry.is_canonical(out.canonical)
    assert out.canonical.log_scale.shape == (zoo.num_snapshots,)
    # The reference aligns to itself unchanged.
    for (w, _), (w0, _) in zip(out.params, zoo.params):
        np.testing.assert_allclose(w[ref_idx], w0[ref_idx])
    # Alignment brings the final networks closer to the reference.
    fin = zoo.final_indices()[1:]
    ref_vec = np.asarray(mlp.flatten(out.reference))
    d_before = np.linalg.norm(np.asarray(mlp.flatten(zoo.select(fin))) - ref_vec, axis=1)
    d_after = np.linalg.norm(np.asarray(mlp.flatten([(w[fin], b[fin]) for w, b in out.params]))
                             - ref_vec, axis=1)
    assert np.all(d_after <= d_before + 1e-5) and np.any(d_after < d_before - 1e-3)
    # Cached next to the zoo; the second call does not realign.
    cache = os.path.join(zoo.path, "preprocessed", f"{out.key}.npz")
    assert os.path.exists(cache)

    def boom(*a, **k):
        raise AssertionError("align called although cached")

    monkeypatch.setattr(symmetry, "align", boom)
    again = pp.preprocess(zoo.path, "exact")
    for (w, b), (w2, b2) in zip(out.canonical.layers, again.canonical.layers):
        np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(out.canonical.log_scale, again.canonical.log_scale)


def test_thesis_mode_keeps_predictions(zoo):
    out = pp.preprocess(zoo, "thesis", cache=False)
    assert out.canonical.log_scale is None
    pred = np.argmax(_logits(symmetry.decanonicalize(out.canonical)), -1)
    np.testing.assert_array_equal(pred, np.argmax(_logits(zoo.params), -1))


def test_unaligned_and_custom_reference(zoo):
    raw = pp.preprocess(zoo, "none", align=False, cache=False)
    assert raw.canonical is None and raw.key == "raw-none"
    for (w, _), (w0, _) in zip(raw.params, zoo.params):
        np.testing.assert_array_equal(w, w0)
    ref = zoo.select(3)
    a = pp.preprocess(zoo, "none", reference=ref, cache=False)
    b = pp.preprocess(zoo, "none", reference=3, cache=False)
    assert a.key == b.key and a.reference_index == -1 and b.reference_index == 3
    with pytest.raises(ValueError, match="unknown preprocessing mode"):
        pp.preprocess(zoo, "sphere")
    with pytest.raises(ValueError, match="outside"):
        pp.preprocess(zoo, "none", reference=10_000)
    with pytest.raises(ValueError, match="layer sizes"):
        pp.preprocess(zoo, "none", reference=mlp.init(jax.random.key(0), (6, 7, 3)))


def test_alignment_template_sits_between_the_runs(zoo):
    template, dist = pp.alignment_template(zoo, 3)
    assert dist.shape == (4,) and np.all(np.isfinite(dist))
    # The runs' final networks are nearer to the template than to run 0's network.
    assert dist[-1] < dist[0] - 1e-3 and dist[1] <= dist[0] + 1e-6
    assert mlp.validate(template, batched=False) == zoo.layer_sizes
    out = pp.preprocess(zoo, "exact", reference="template", template_iters=3)
    assert out.reference_index == -1 and out.key != pp.preprocess(zoo, "exact").key
    for (w, b), (tw, tb) in zip(out.reference, template):
        np.testing.assert_array_equal(w, tw)
    np.testing.assert_allclose(_logits(out.params), _logits(zoo.params), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=">= 1"):
        pp.alignment_template(zoo, 0)
    with pytest.raises(ValueError, match="unknown reference"):
        pp.preprocess(zoo, "exact", reference="mean")
    with pytest.raises(ValueError, match="align=True"):
        pp.preprocess(zoo, "exact", reference="template", align=False)


def test_run_scope_moves_each_trajectory_as_one(zoo):
    """``scope="run"`` permutes every snapshot of a run like the run's final network: the
    final snapshots match the per-snapshot alignment, functions are kept, and distances
    between a run's snapshots are the raw ones (one permutation per run is an isometry)."""
    per_snap = pp.preprocess(zoo, "exact")
    per_run = pp.preprocess(zoo, "exact", scope="run")
    assert per_run.key != per_snap.key and "perrun" in per_run.key
    fin = zoo.final_indices()
    for (w, b), (ws, bs) in zip(per_run.params, per_snap.params):
        np.testing.assert_array_equal(w[fin], ws[fin])
        np.testing.assert_array_equal(b[fin], bs[fin])
    np.testing.assert_allclose(_logits(per_run.params), _logits(zoo.params), rtol=1e-5,
                               atol=1e-5)
    perms = pp.run_permutations(zoo, per_snap.reference)
    assert [p.shape for p in perms] == [(zoo.num_runs, h) for h in zoo.layer_sizes[1:-1]]
    for i in (0, 1, zoo.num_snapshots // 2, zoo.num_snapshots - 1):
        want = symmetry.permute(zoo.select(i), [jnp.asarray(p[zoo.run_id[i]]) for p in perms])
        for (w, b), (ww, wb) in zip([(w[i], b[i]) for w, b in per_run.params], want):
            np.testing.assert_array_equal(w, np.asarray(ww))
            np.testing.assert_array_equal(b, np.asarray(wb))

    def flat(params):
        return np.concatenate([np.concatenate([w.reshape(len(w), -1), b], 1)
                               for w, b in params], 1)

    same_run = zoo.run_id[1:] == zoo.run_id[:-1]
    raw, aligned = flat(zoo.params), flat(per_run.params)
    np.testing.assert_allclose(np.linalg.norm(np.diff(aligned, axis=0), axis=1)[same_run],
                               np.linalg.norm(np.diff(raw, axis=0), axis=1)[same_run],
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="alignment scope"):
        pp.preprocess(zoo, "exact", scope="trajectory")
    with pytest.raises(ValueError, match="align=True"):
        pp.preprocess(zoo, "exact", scope="run", align=False)


def test_loss_barrier_values():
    key = jax.random.key(1)
    a = mlp.init(jax.random.fold_in(key, 0), (6, 5, 3), w_std=1.0)
    b = mlp.init(jax.random.fold_in(key, 1), (6, 5, 3), w_std=1.0)
    x, y = jnp.asarray(DATA.x_test), jnp.asarray(DATA.y_test)
    assert abs(float(pp.loss_barrier(a, a, x, y))) < 1e-6
    got = float(pp.loss_barrier(a, b, x, y, num_points=11))
    ts = np.linspace(0, 1, 11)

    def loss(p):
        z = np.asarray(mlp.forward(p, x), np.float64)
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        return -np.mean(logp[np.arange(len(y)), np.asarray(y)])

    ls = np.array([loss([((1 - t) * wa + t * wb, (1 - t) * ba + t * bb)
                         for (wa, ba), (wb, bb) in zip(a, b)]) for t in ts])
    want = np.max(ls - ((1 - ts) * ls[0] + ts * ls[-1]))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert got >= 0
    # vmappable over pairs
    pa = jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), a, b)
    pb = jax.tree_util.tree_map(lambda u, v: jnp.stack([v, u]), a, b)
    both = jax.vmap(lambda p, q: pp.loss_barrier(p, q, x, y, num_points=11))(pa, pb)
    np.testing.assert_allclose(both, [got, got], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="num_points"):
        pp.loss_barrier(a, b, x, y, num_points=1)


def test_barrier_report(zoo):
    rep = pp.barrier_report(zoo, DATA.x_test, DATA.y_test, num_pairs=100, num_points=5)
    assert rep["num_pairs"] == 6  # all pairs of 4 runs
    for k in ("before", "after", "before_std", "after_std"):
        assert np.isfinite(rep[k]) and rep[k] >= 0
    one = store.Zoo(zoo.params, np.zeros_like(zoo.run_id), zoo.step, zoo.epoch, zoo.metrics,
                    dict(zoo.meta, num_runs=1))
    with pytest.raises(ValueError, match="two runs"):
        pp.barrier_report(one, DATA.x_test, DATA.y_test)
