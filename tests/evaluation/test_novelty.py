"""Tests for nearest-checkpoint novelty, checkpoint spacing and the baselines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import evaluation as ev
from weightflow_jax import mlp, symmetry
from weightflow_jax.geometry import product

SIZES = (6, 5, 4, 3)
RUNS, PER_RUN = 2, 4


def _np(p):
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in p]


@pytest.fixture(scope="module")
def zoo():
    """Checkpoints near a reference (as in a real zoo), aligned to it; run-major order."""
    ref = _np(mlp.init(jax.random.key(0), SIZES, w_std=0.7, b_std=0.2))
    rng = np.random.default_rng(0)
    n = RUNS * PER_RUN
    ck = [(np.stack([w + 0.15 * rng.normal(size=w.shape) for _ in range(n)]).astype(np.float32),
           np.stack([b + 0.15 * rng.normal(size=b.shape) for _ in range(n)]).astype(np.float32))
          for w, b in ref]
    ck = _np(symmetry.align(ck, ref))
    run_id = np.repeat(np.arange(RUNS), PER_RUN)
    step = np.tile(np.arange(PER_RUN) * 10, RUNS)
    return ref, ck, run_id, step


def _flat(p):
    return np.asarray(mlp.flatten(p), np.float64)


def _brute(queries, refs, spec, allowed=None):
    qn = jax.tree.leaves(queries)[0].shape[0]
    rn = jax.tree.leaves(refs)[0].shape[0]
    d = np.array([[float(product.dist(spec, jax.tree.map(lambda a: a[i], queries),
                                      jax.tree.map(lambda a: a[j], refs)))
                   for j in range(rn)] for i in range(qn)])
    if allowed is not None:
        d = np.where(allowed, d, np.inf)
    return d.min(1), d.argmin(1)


def test_permuted_checkpoint_has_distance_zero_after_alignment(zoo):
    ref, ck, _, _ = zoo
    pick = [5, 2]
    perms = [symmetry.random_permutations(jax.random.key(i), SIZES) for i in range(2)]
    nets = [symmetry.permute([(w[i], b[i]) for w, b in ck], p) for i, p in zip(pick, perms)]
    samples = [(np.stack([np.asarray(n[l][0]) for n in nets]),
                np.stack([np.asarray(n[l][1]) for n in nets])) for l in range(len(ck))]
    assert np.abs(_flat(samples) - _flat([(w[pick], b[pick]) for w, b in ck])).max() > 0.1
    out = ev.nearest_checkpoint(samples, ck, ref)
    assert out["l2_index"].tolist() == pick and out["geodesic_index"].tolist() == pick
    assert np.all(out["l2"] < 1e-5) and np.all(out["geodesic"] < 1e-5)
    raw = ev.nearest_checkpoint(samples, ck, align=False)
    assert np.all(raw["l2"] > 0.1)


def test_nearest_neighbors_match_brute_force(zoo):
    ref, ck, _, _ = zoo
    rng = np.random.default_rng(1)
    q = [(w[:3] + 0.3 * rng.normal(size=w[:3].shape).astype(np.float32),
          b[:3] + 0.3 * rng.normal(size=b[:3].shape).astype(np.float32)) for w, b in ck]
    spec = symmetry.euclidean_spec(3)
    d, i = ev.nearest_neighbors(q, ck, spec, k_candidates=2, query_chunk=2, ref_chunk=3)
    bd, bi = _brute(q, ck, spec)
    np.testing.assert_allclose(d, bd, rtol=1e-5)
    assert i.tolist() == bi.tolist()
    cq = symmetry.canonicalize(q)
    cc = symmetry.canonicalize(ck)
    gspec = symmetry.manifold_spec(3)
    d, i = ev.nearest_neighbors(cq, cc, gspec, k_candidates=2, query_chunk=2, ref_chunk=3)
    bd, bi = _brute(cq, cc, gspec)
    np.testing.assert_allclose(d, bd, rtol=1e-4)
    assert i.tolist() == bi.tolist()
    out = ev.nearest_checkpoint(q, ck, ref, align=False)
    np.testing.assert_allclose(out["geodesic"], bd, rtol=1e-4)


@pytest.mark.parametrize("window", [None, 0, 1])
def test_checkpoint_spacing_window(zoo, window):
    _, ck, run_id, step = zoo
    sp = ev.checkpoint_spacing(ck, run_id, order=step, window=window)
    pos = ev.run_positions(run_id, step)
    assert pos.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    n = run_id.size
    w = 2 ** 30 if window is None else window
    allowed = ~((run_id[:, None] == run_id[None, :])
                & (np.abs(pos[:, None] - pos[None, :]) <= w))
    bd, bi = _brute(ck, ck, symmetry.euclidean_spec(3), allowed)
    np.testing.assert_allclose(sp["l2"], bd, rtol=1e-5)
    assert sp["l2_index"].tolist() == bi.tolist()
    assert np.all(sp["l2_index"] != np.arange(n))
    if window is None:
        assert np.all(run_id[sp["l2_index"]] != run_id)
    sub = ev.checkpoint_spacing(ck, run_id, order=step, window=window, num_queries=3)
    assert sub["query_index"].size == 3
    np.testing.assert_allclose(sub["l2"], sp["l2"][sub["query_index"]], rtol=1e-6)


def test_novelty_summary_and_evaluator(zoo):
    ref, ck, run_id, step = zoo
    samples = [(w[:3] + 0.05, b[:3]) for w, b in ck]
    res = ev.NoveltyEvaluator(ck, ref, run_id, order=step, num_spacing_queries=None).run(samples)
    for m in ("l2", "geodesic"):
        for k in ("mean", "std", "median", "min", "spacing_mean", "ratio",
                  "frac_below_spacing"):
            assert np.isfinite(res[f"{m}_{k}"])
        np.testing.assert_allclose(res[f"{m}_ratio"],
                                   res[f"{m}_mean"] / res[f"{m}_spacing_mean"], rtol=1e-6)
    assert res["l2_per_network"].shape == (3,)
    for k, v in ev.run_coverage(res["l2_index_per_network"], run_id).items():
        assert res[k] == v, k
    assert res["runs_total"] == RUNS
    assert res["window"] == "whole run"


def test_nearest_per_run_pairwise_refines_the_reference_alignment(zoo):
    ref, ck, run_id, step = zoo
    rng = np.random.default_rng(1)
    queries = _np(symmetry.align([(w[:5] + 0.3 * rng.normal(size=w[:5].shape),
                                   b[:5] + 0.3 * rng.normal(size=b[:5].shape)) for w, b in ck],
                                 ref))
    base, _ = ev.nearest_neighbors(queries, ck, symmetry.euclidean_spec(3))
    d, idx = ev.nearest_per_run_pairwise(queries, ck, run_id)
    assert np.all(d <= base + 1e-5) and np.all(idx >= 0)
    for i in range(5):  # the distance is the one of a permuted query to that checkpoint
        q = [(w[i], b[i]) for w, b in queries]
        c = [(w[idx[i]], b[idx[i]]) for w, b in ck]
        perms = symmetry.weight_matching(q, c)
        want = min(float(np.linalg.norm(_flat(symmetry.permute(q, perms)) - _flat(c))),
                   float(np.linalg.norm(_flat(q) - _flat(c))))
        np.testing.assert_allclose(d[i], want, rtol=1e-5)
    # A checkpoint with its neurons shuffled (not re-aligned to the reference) is at
    # distance 0 of its run's candidate: each run gets its own permutation.
    perms = [rng.permutation(h) for h in SIZES[1:-1]]
    shuffled = symmetry.permute([(w[5], b[5]) for w, b in ck], perms)
    one = [(np.asarray(w)[None], np.asarray(b)[None]) for w, b in shuffled]
    two = [(w[[0, 5]], b[[0, 5]]) for w, b in ck]
    assert ev.nearest_neighbors(one, two, symmetry.euclidean_spec(3))[0][0] > 0.5
    d1, i1 = ev.nearest_per_run_pairwise(one, two, run_id[[0, 5]])
    assert d1[0] < 1e-4 and i1[0] == 1
    # exclude_run: never a checkpoint of the excluded run; a query with no run left: inf.
    d2, i2 = ev.nearest_per_run_pairwise(queries, ck, run_id, exclude_run=np.zeros(5))
    assert np.all(run_id[i2] == 1)
    d3, i3 = ev.nearest_per_run_pairwise(one, [(w[5:6], b[5:6]) for w, b in ck],
                                         run_id[5:6], exclude_run=[1])
    assert np.isinf(d3[0]) and i3[0] == -1
    with pytest.raises(ValueError, match=r"run_id must be shaped \(8,\)"):
        ev.nearest_per_run_pairwise(queries, ck, run_id[:3])
    with pytest.raises(ValueError, match=r"exclude_run must be shaped \(5,\)"):
        ev.nearest_per_run_pairwise(queries, ck, run_id, exclude_run=[0])


def test_pairwise_spacing_and_nearest_checkpoint(zoo):
    ref, ck, run_id, step = zoo
    plain = ev.checkpoint_spacing(ck, run_id, order=step)
    pair = ev.checkpoint_spacing(ck, run_id, order=step, pairwise=True)
    assert np.all(pair["l2"] <= plain["l2"] + 1e-5)
    assert np.all(run_id[pair["l2_index"]] != run_id)
    np.testing.assert_array_equal(pair["geodesic"], plain["geodesic"])
    with pytest.raises(ValueError, match="pass window=None"):
        ev.checkpoint_spacing(ck, run_id, order=step, window=1, pairwise=True)
    samples = [(w[:3] + 0.2, b[:3]) for w, b in ck]
    near = ev.nearest_checkpoint(samples, ck, ref, run_id=run_id)
    aligned = _np(symmetry.align(samples, ref))
    d, i = ev.nearest_per_run_pairwise(aligned, ck, run_id)
    np.testing.assert_allclose(near["l2"], d, rtol=1e-6)
    assert near["l2_index"].tolist() == i.tolist()
    assert np.all(near["l2"] <= ev.nearest_checkpoint(samples, ck, ref)["l2"] + 1e-5)


def test_run_coverage_counts_runs_and_matches_random_draws():
    run_id = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    cov = ev.run_coverage(np.array([0, 2, 1, 5, 9]), run_id)
    assert cov["runs_total"] == 4 and cov["runs_covered"] == 3
    assert cov["max_run_share"] == pytest.approx(3 / 5)
    share = np.array([3, 2, 4, 1]) / 10
    assert cov["runs_covered_uniform"] == pytest.approx(np.sum(1 - (1 - share) ** 5))
    # The expectation is what random checkpoints reach, on average.
    rng = np.random.default_rng(0)
    draws = [ev.run_coverage(rng.integers(0, 10, 5), run_id)["runs_covered"]
             for _ in range(4000)]
    assert np.mean(draws) == pytest.approx(cov["runs_covered_uniform"], abs=0.05)
    one = ev.run_coverage(np.array([3, 4, 3]), run_id)
    assert one["runs_covered"] == 1 and one["max_run_share"] == 1.0
    with pytest.raises(ValueError, match="holds 0..10 but there are 10 checkpoints"):
        ev.run_coverage(np.array([0, 10]), run_id)
    with pytest.raises(ValueError, match="non-empty"):
        ev.run_coverage(np.array([], np.int64), run_id)
    with pytest.raises(ValueError, match="integer"):
        ev.run_coverage(np.array([0.0, 1.0]), run_id)
    with pytest.raises(ValueError, match="run_id must be"):
        ev.run_coverage(np.array([0]), run_id.reshape(2, 5))


def test_noisy_checkpoints_match_target_distance(zoo):
    _, ck, run_id, step = zoo
    target = 0.8
    noisy, info = ev.noisy_checkpoints(jax.random.key(0), ck, 6, target, rtol=0.005)
    assert [w.shape[0] for w, _ in noisy] == [6, 6, 6]
    d, _ = ev.nearest_neighbors(noisy, ck, symmetry.euclidean_spec(3))
    np.testing.assert_allclose(d.mean(), target, rtol=0.006)
    np.testing.assert_allclose(info["mean_distance"], d.mean(), rtol=1e-5)
    assert len(set(info["source_index"].tolist())) == 6
    sets = ev.baseline_sets(jax.random.key(1), ck, 4, target_distance=target, run_id=run_id,
                            step=step)
    assert sorted(sets) == ["checkpoints", "checkpoints+noise", "trained_ensemble"]
    assert ev.final_checkpoints(run_id, step).tolist() == [3, 7]
    ids = np.array([2, 0, 0, 1, 2, 1, 0])
    idx = ev.random_checkpoint_per_run(ids, 0)
    np.testing.assert_array_equal(ids[idx], [0, 1, 2])
    np.testing.assert_array_equal(idx, ev.random_checkpoint_per_run(ids, 0))
    draws = {tuple(ev.random_checkpoint_per_run(ids, s)) for s in range(20)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="non-empty"):
        ev.random_checkpoint_per_run(np.array([], np.int64), 0)
    np.testing.assert_array_equal(sets["trained_ensemble"][0][0], ck[0][0][[3, 7]])
    sel, idx = ev.random_checkpoints(jax.random.key(2), ck, 3)
    np.testing.assert_array_equal(sel[1][1], ck[1][1][idx])
    with pytest.raises(ValueError, match="target_distance must be > 0"):
        ev.noisy_checkpoints(jax.random.key(0), ck, 2, 0.0)


def test_novelty_bad_input(zoo):
    ref, ck, _, _ = zoo
    other = _np(jax.vmap(lambda k: mlp.init(k, (6, 7, 3)))(jax.random.split(jax.random.key(0),
                                                                          2)))
    with pytest.raises(ValueError, match=r"layer sizes \(6, 7, 3\) but the checkpoints have"):
        ev.nearest_checkpoint(other, ck, ref)
    with pytest.raises(ValueError, match="needs the zoo's reference"):
        ev.nearest_checkpoint([(w[:1], b[:1]) for w, b in ck], ck)
    assert jnp.all(jnp.isfinite(jnp.asarray(ck[0][0])))
