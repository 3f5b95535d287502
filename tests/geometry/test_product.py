"""Tests of weightflow_jax.geometry.product: factor-wise agreement with the sphere and
Euclidean maps, the product metric, vmap/jit/grad, sampling, sizes and input checks."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from weightflow_jax import geometry
from weightflow_jax.geometry import Euclidean, Sphere, euclidean as E, product as P, sphere as S

SIZES = (5, 4, 3)  # MLP 5-4-3: W1 (4, 5), b1 (4,), W2 (3, 4), b2 (3,)
SPEC = [(Sphere(1), Euclidean()), (Sphere(2), Euclidean())]
SHAPES = [((4, 5), (4,)), ((3, 4), (3,))]
BATCH = 240


def _np(a) -> np.ndarray:
    return np.asarray(a)


def _random_tree(rng: np.random.Generator, batch: int) -> list:
    """A batch of ambient (not normalized) MLP parameter trees, float32."""
    return [tuple(rng.standard_normal((batch,) + s).astype(np.float32) for s in layer)
            for layer in SHAPES]


def _on_manifold(tree: list) -> list:
    """Normalizes rows of W1 and the whole of W2 (batched trees), in numpy."""
    (w1, b1), (w2, b2) = tree
    w1 = w1 / np.linalg.norm(w1, axis=-1, keepdims=True)
    w2 = w2 / np.linalg.norm(w2.reshape(w2.shape[0], -1), axis=-1)[:, None, None]
    return [(w1.astype(np.float32), b1), (w2.astype(np.float32), b2)]


def _point_pairs(seed: int):
    """Batched x, y on the manifold with edge cases mixed in: y == x, y == -x on spheres."""
    rng = np.random.default_rng(seed)
    x = _on_manifold(_random_tree(rng, BATCH))
    y = _on_manifold(_random_tree(rng, BATCH))
    k = BATCH // 8
    for (wx, bx), (wy, by) in zip(x, y):
        wy[:k], by[:k] = wx[:k], bx[:k]  # equal points
        wy[k:2 * k] = -wx[k:2 * k]  # antipodal spheres
        # close points
        wy[2 * k:3 * k] = wx[2 * k:3 * k] + 1e-4 * rng.standard_normal(wx[:k].shape)
    y = _on_manifold(y)
    t = rng.uniform(0.0, 1.0, BATCH).astype(np.float32)
    t[:4] = [0.0, 1.0, 1.0 - 1e-7, 0.5]
    u = _random_tree(rng, BATCH)
    return x, y, u, t


@jax.jit
@jax.vmap
def _product_ops(x, y, u, t):
    v = P.log(SPEC, x, y)
    return {
        "retract": P.retract(SPEC, u),
        "proj": P.proj(SPEC, x, u),
        "exp": P.exp(SPEC, x, P.proj(SPEC, x, u)),
        "log": v,
        "geodesic": P.geodesic(SPEC, x, y, t),
        "cond_velocity": P.cond_velocity(SPEC, x, y, t),
        "inner": P.inner(SPEC, x, v, u),
        "sq_norm": P.sq_norm(SPEC, x, v),
        "sq_dist": P.sq_dist(SPEC, x, y),
        "dist": P.dist(SPEC, x, y),
        "sq_dist_per_leaf": P.sq_dist_per_leaf(SPEC, x, y),
    }


@jax.jit
def _manual_ops(x, y, u, t):
    """The same quantities from the sphere/Euclidean modules by hand (batched)."""
    (w1x, b1x), (w2x, b2x) = x
    (w1y, b1y), (w2y, b2y) = y
    (w1u, b1u), (w2u, b2u) = u
    n = w2x.shape[0]
    flat = lambda a: a.reshape(n, -1)  # noqa: E731
    back = lambda a: a.reshape(n, 3, 4)  # noqa: E731
    t1 = t[:, None]  # per-row t for W1 (n, 4)
    w1v = S.log(w1x, w1y)
    w2v = back(S.log(flat(w2x), flat(w2y)))
    v = [(w1v, b1y - b1x), (w2v, b2y - b2x)]
    sq_leaf = [(jnp.sum(S.dist(w1x, w1y) ** 2, -1), jnp.sum((b1y - b1x) ** 2, -1)),
               (S.dist(flat(w2x), flat(w2y)) ** 2, jnp.sum((b2y - b2x) ** 2, -1))]
    sq = sum(jax.tree.leaves(sq_leaf))
    w1p, w2p = S.proj(w1x, w1u), back(S.proj(flat(w2x), flat(w2u)))
    return {
        "retract": [(S.normalize(w1u), b1u), (back(S.normalize(flat(w2u))), b2u)],
        "proj": [(w1p, b1u), (w2p, b2u)],
        "exp": [(S.exp(w1x, w1p), b1x + b1u), (back(S.exp(flat(w2x), flat(w2p))), b2x + b2u)],
        "log": v,
        "geodesic": [(S.geodesic(w1x, w1y, t1), E.geodesic(b1x, b1y, t)),
                     (back(S.geodesic(flat(w2x), flat(w2y), t)), E.geodesic(b2x, b2y, t))],
        "cond_velocity": [
            (S.cond_velocity(w1x, w1y, t1), E.cond_velocity(b1x, b1y, t)),
            (back(S.cond_velocity(flat(w2x), flat(w2y), t)), E.cond_velocity(b2x, b2y, t))],
        "inner": sum(jnp.sum((a * b).reshape(n, -1), -1)
                     for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(u))),
        "sq_norm": sum(jnp.sum((a * a).reshape(n, -1), -1) for a in jax.tree.leaves(v)),
        "sq_dist": sq,
        "dist": jnp.sqrt(sq),
        "sq_dist_per_leaf": sq_leaf,
    }


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_factorwise_equals_manual_per_factor_results(seed):
    x, y, u, t = _point_pairs(seed)
    got = _product_ops(x, y, u, t)
    want = _manual_ops(x, y, u, t)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert g.shape == w.shape and g.dtype == jnp.float32, path
        assert np.all(np.isfinite(_np(g))), path
        np.testing.assert_allclose(_np(g), _np(w), rtol=1e-5, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path))


def test_sq_dist_is_sum_of_squared_sphere_distances_explicit():
    # one point, computed with plain numpy float64 arccos
    rng = np.random.default_rng(123)
    x = jax.tree.map(lambda a: a[0], _point_pairs(0)[0])
    y = jax.tree.map(lambda a: a[0], _on_manifold(_random_tree(rng, 1)))
    ang = lambda a, b: np.arccos(np.clip(np.sum(a * b, -1), -1, 1))  # noqa: E731
    (w1x, b1x), (w2x, b2x) = [[np.float64(a) for a in layer] for layer in x]
    (w1y, b1y), (w2y, b2y) = [[np.float64(a) for a in layer] for layer in y]
    per_leaf = [(np.sum(ang(w1x, w1y) ** 2), np.sum((b1x - b1y) ** 2)),
                (ang(w2x.ravel(), w2y.ravel()) ** 2, np.sum((b2x - b2y) ** 2))]
    got, total, zero = jax.jit(lambda x, y: (
        P.sq_dist_per_leaf(SPEC, x, y), P.sq_dist(SPEC, x, y), P.sq_dist(SPEC, x, x)))(x, y)
    assert isinstance(got, list) and isinstance(got[0], tuple)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(per_leaf)):
        assert g.shape == ()
        np.testing.assert_allclose(float(g), w, rtol=1e-5)
    np.testing.assert_allclose(float(total), sum(jax.tree.leaves(per_leaf)), rtol=1e-5)
    assert float(zero) == 0.0


@jax.jit
@jax.vmap
def _grads(x, y, t):
    """Gradients of sq_dist in (x, y), and of a CFM-style loss |u_t|^2 in (x, y, t)."""
    g_sq = jax.grad(lambda x, y: P.sq_dist(SPEC, x, y), argnums=(0, 1))(x, y)
    g_cfm = jax.grad(lambda x, y, t: P.sq_norm(SPEC, x, P.cond_velocity(SPEC, x, y, t)),
                     argnums=(0, 1, 2))(x, y, t)
    return g_sq, g_cfm


def test_grads_under_vmap_and_jit():
    x, y, u, t = _point_pairs(1)
    (gx, gy), g_cfm = _grads(x, y, t)
    for g in jax.tree.leaves(((gx, gy), g_cfm)):
        assert np.all(np.isfinite(_np(g)))
    k = BATCH // 8
    # zero gradient of sq_dist at x == y (the first k points are equal)
    for g in jax.tree.leaves((gx, gy)):
        np.testing.assert_allclose(_np(g)[:k], 0.0, atol=1e-6)
    # Riemannian gradient in y is -2 log_y(x), away from antipodal spheres
    ops = _product_ops(y, x, gy, t)  # log_y(x) and proj_y(grad)
    for g, w in zip(jax.tree.leaves(ops["proj"]), jax.tree.leaves(ops["log"])):
        np.testing.assert_allclose(_np(g)[2 * k:], -2 * _np(w)[2 * k:], atol=5e-4)


def test_geodesic_endpoints_and_speed():
    x0, x1, u, t = _point_pairs(2)
    z, o = np.zeros_like(t), np.ones_like(t)
    for a, b in zip(jax.tree.leaves(_product_ops(x0, x1, u, z)["geodesic"]),
                    jax.tree.leaves(x0)):
        np.testing.assert_allclose(_np(a), b, atol=1e-6)
    for a, b in zip(jax.tree.leaves(_product_ops(x0, x1, u, o)["geodesic"]),
                    jax.tree.leaves(x1)):
        np.testing.assert_allclose(_np(a), b, atol=2e-5)
    xt = _product_ops(x0, x1, u, t)["geodesic"]
    np.testing.assert_allclose(_np(_product_ops(x0, xt, u, t)["sq_dist"]),
                               t**2 * _np(_product_ops(x0, x1, u, t)["sq_dist"]),
                               atol=1e-4, rtol=1e-4)


def test_retract_puts_points_on_manifold_and_is_idempotent():
    rng = np.random.default_rng(3)
    u = jax.tree.map(lambda a: a[0], _random_tree(rng, 1))
    r, rr = jax.jit(lambda u: (P.retract(SPEC, u), P.retract(SPEC, P.retract(SPEC, u))))(u)
    (w1, b1), (w2, b2) = jax.tree.map(np.asarray, r)
    np.testing.assert_allclose(_np(np.linalg.norm(w1, axis=-1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(float(np.linalg.norm(w2)), 1.0, atol=1e-6)
    np.testing.assert_array_equal(_np(b1), u[0][1])
    np.testing.assert_array_equal(_np(b2), u[1][1])
    for a, b in zip(jax.tree.leaves(rr), jax.tree.leaves(r)):
        np.testing.assert_allclose(_np(a), _np(b), atol=1e-7)


def test_leading_axes_are_independent_spheres():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    got = jax.jit(lambda a: [P.retract(Sphere(k), a) for k in (1, 2, 3)])(a)
    a64 = a.astype(np.float64)
    want = [a64 / np.linalg.norm(a64, axis=-1, keepdims=True),
            a64 / np.linalg.norm(a64.reshape(2, 12), axis=-1)[:, None, None],
            a64 / np.linalg.norm(a64)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(_np(g), w, atol=1e-6)
    assert P.dims(Sphere(1), a) == 6 * 3
    assert P.dims(Sphere(2), a) == 2 * 11
    assert P.dims(Sphere(3), a) == 23
    assert P.dims(Euclidean(), a) == 24


def test_dims_of_mlp_spec_and_shape_structs():
    like = [tuple(jax.ShapeDtypeStruct(s, jnp.float32) for s in layer) for layer in SHAPES]
    # W1: 4 spheres S^4 -> 16; b1: 4; W2: one S^11 -> 11; b2: 3
    assert P.dims(SPEC, like) == 16 + 4 + 11 + 3
    assert P.dims(Sphere(1), np.zeros((7, 1))) == 0  # 0-spheres have dimension 0


def test_random_normal_projected():
    like = [(np.zeros((400, 5), np.float32), np.zeros((8000,), np.float32)),
            (np.zeros((3, 4), np.float32), np.zeros((3,), np.int32))]
    spec = SPEC
    structs = jax.tree.map(lambda z: jax.ShapeDtypeStruct(z.shape, z.dtype), like)
    sample = jax.jit(lambda k: P.random_normal_projected(k, spec, structs, 0.1))
    a = sample(jax.random.key(0))
    b = sample(jax.random.key(0))
    c = sample(jax.random.key(1))
    # concrete arrays as like_tree give the same shapes (int leaves become float32)
    shapes = jax.eval_shape(lambda k: P.random_normal_projected(k, spec, like), jax.random.key(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(a)
    assert all(s.shape == la.shape and s.dtype == jnp.float32
               for s, la in zip(jax.tree.leaves(shapes), jax.tree.leaves(a)))
    assert jax.tree.structure(a) == jax.tree.structure(like)
    for la, lb, lc, ll in zip(*(jax.tree.leaves(t) for t in (a, b, c, like))):
        assert la.shape == ll.shape and la.dtype == jnp.float32
        np.testing.assert_array_equal(_np(la), _np(lb))
        assert not np.array_equal(_np(la), _np(lc))
    (w1, b1), (w2, b2) = jax.tree.map(np.asarray, a)
    np.testing.assert_allclose(_np(np.linalg.norm(w1, axis=-1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(float(np.linalg.norm(w2)), 1.0, atol=1e-6)
    np.testing.assert_allclose(float(np.std(b1)), 0.1, rtol=0.05)
    assert abs(float(np.mean(b1))) < 0.006
    # uniform directions: the mean of 400 unit rows in R^5 is near 0
    assert float(np.linalg.norm(np.mean(w1, axis=0))) < 0.2
    # leaves get different keys: the same shapes do not give the same numbers
    assert not np.array_equal(_np(b2), _np(w2[:, 0]))


def test_dict_trees_and_single_factor_spec():
    spec = {"w": Sphere(1), "b": Euclidean()}
    x = {"w": np.eye(3, dtype=np.float32), "b": np.zeros(3, np.float32)}
    y = {"w": np.roll(np.eye(3, dtype=np.float32), 1, axis=0), "b": np.ones(3, np.float32)}
    d, v = jax.jit(lambda x, y: (P.sq_dist_per_leaf(spec, x, y),
                                 P.log(Sphere(1), x["w"][0], x["w"][1])))(x, y)
    assert set(d) == {"w", "b"}
    np.testing.assert_allclose(float(d["w"]), 3 * (math.pi / 2) ** 2, rtol=1e-6)
    np.testing.assert_allclose(float(d["b"]), 3.0)
    np.testing.assert_allclose(_np(v), [0, math.pi / 2, 0], atol=1e-7)


def test_factors_are_frozen_pytree_leaves():
    assert jax.tree.leaves(SPEC) == [Sphere(1), Euclidean(), Sphere(2), Euclidean()]
    assert Sphere() == Sphere(1) and hash(Sphere(2)) == hash(Sphere(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        Sphere(1).ndim = 2  # type: ignore[misc]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="ndim must be an int >= 1"):
            Sphere(bad)  # type: ignore[arg-type]
    assert geometry.Sphere is Sphere and geometry.Euclidean is Euclidean
    assert geometry.sphere is S and geometry.euclidean is E and geometry.product is P


def _one_point():
    rng = np.random.default_rng(5)
    return jax.tree.map(lambda a: a[0], _on_manifold(_random_tree(rng, 1)))


def test_structure_mismatch_raises_value_error():
    x = _one_point()
    with pytest.raises(ValueError, match="same pytree structure"):
        P.log(SPEC, x, [list(layer) for layer in x])  # lists instead of tuples
    with pytest.raises(ValueError, match="same pytree structure"):
        P.sq_dist(SPEC[:1], x, x)  # missing a layer
    with pytest.raises(ValueError, match="same pytree structure"):
        P.retract(SPEC, x[0])
    with pytest.raises(ValueError, match=r"spec leaf \[1\]\[0\] is 3"):
        P.retract([(Sphere(1), Euclidean()), (3, Euclidean())], x)
    with pytest.raises(ValueError, match=r"leaf \[0\]\[1\]: Sphere\(ndim=1\) needs a leaf of "
                                         r"rank >= 1, got shape \(\)"):
        P.retract([(Sphere(1), Sphere(1)), (Sphere(2), Euclidean())],
                  [(x[0][0], jnp.float32(1.0)), x[1]])
    with pytest.raises(ValueError, match=r"Sphere\(ndim=2\) needs a leaf of rank >= 2"):
        P.retract([(Sphere(1), Sphere(2)), (Sphere(2), Euclidean())], x)
    with pytest.raises(ValueError, match="x has shape"):
        y = [(x[0][0][:2], x[0][1]), x[1]]
        P.log(SPEC, x, y)
    with pytest.raises(ValueError, match="t must be a scalar"):
        P.geodesic(SPEC, x, x, jnp.ones(2))
    # a batched tree passed without vmap: Sphere(2) would silently span the batch for
    # W2 but the shapes still match, so only structure/rank errors can be caught; the
    # docstring says to vmap. Check validate() as the public entry point:
    P.validate(SPEC, x)
    with pytest.raises(ValueError, match="points"):
        P.validate(SPEC, x[0], name="points")
