"""Tests of weightflow_jax.geometry.sphere: identities over thousands of float32 cases,
exact values, the antipodal convention, and finite values/gradients at edge cases."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from hypothesis import given, settings, strategies as st
import numpy as np
import pytest

from weightflow_jax.geometry import sphere as S
from tests.geometry import _cases

BATCH = 2000  # cases per hypothesis example (a multiple of the 5 angle groups)
DIMS = st.sampled_from([2, 3, 784])  # few shapes: compiled functions are reused
SEEDS = st.integers(0, 2**32 - 1)
HSET = settings(max_examples=10, deadline=None)

# Module-level jitted functions, shared by all tests (they broadcast over the batch axis).
exp = jax.jit(S.exp)
log = jax.jit(S.log)
dist = jax.jit(S.dist)
proj = jax.jit(S.proj)
geodesic = jax.jit(S.geodesic)
cond_velocity = jax.jit(S.cond_velocity)
normalize = jax.jit(S.normalize)


def _np(a) -> np.ndarray:
    return np.asarray(a)


def _norms(a) -> np.ndarray:
    return np.linalg.norm(_np(a).astype(np.float64), axis=-1)


# ----------------------------------------------------------------------------------------
# properties over batches


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_exp_of_log_returns_y(seed, dim):
    x, y, _ = _cases.point_pairs(seed, dim, BATCH)
    v = log(x, y)
    assert v.dtype == jnp.float32
    np.testing.assert_allclose(_np(exp(x, v)), y, atol=2e-5, rtol=0)


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_log_of_exp_returns_v(seed, dim):
    x, v, _ = _cases.tangent_vectors(seed, dim, BATCH, max_norm=math.pi - 0.05)
    np.testing.assert_allclose(_np(log(x, exp(x, v))), v, atol=2e-5, rtol=0)


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_dist_symmetric_matches_reference_and_log_norm(seed, dim):
    x, y, _ = _cases.point_pairs(seed, dim, BATCH)
    d = _np(dist(x, y))
    np.testing.assert_array_equal(d, _np(dist(y, x)))
    assert np.all((d >= 0) & (d <= np.float32(math.pi)))
    np.testing.assert_allclose(d, _cases.ref_dist(x, y), atol=2e-6, rtol=0)
    np.testing.assert_allclose(_norms(log(x, y)), d, atol=5e-6, rtol=0)
    # exact groups: y == x gives 0, y == -x gives pi
    k = BATCH // _cases.N_GROUPS
    np.testing.assert_array_equal(d[BATCH - 2 * k:BATCH - k], 0.0)
    np.testing.assert_allclose(d[BATCH - k:], math.pi, atol=1e-6)


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_geodesic_endpoints_and_constant_speed(seed, dim):
    x0, x1, _ = _cases.point_pairs(seed, dim, BATCH)
    t = np.random.default_rng(seed).uniform(0.0, 1.0, BATCH).astype(np.float32)
    zeros, ones = np.zeros_like(t), np.ones_like(t)
    np.testing.assert_allclose(_np(geodesic(x0, x1, zeros)), x0, atol=1e-6, rtol=0)
    np.testing.assert_allclose(_np(geodesic(x0, x1, ones)), x1, atol=2e-5, rtol=0)
    xt = geodesic(x0, x1, t)
    d = _np(dist(x0, x1))
    np.testing.assert_allclose(_norms(xt), 1.0, atol=1e-6)
    np.testing.assert_allclose(_np(dist(x0, xt)), t * d, atol=1e-5, rtol=0)
    np.testing.assert_allclose(_np(dist(xt, x1)), (1 - t) * d, atol=1e-5, rtol=0)


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_tangent_vectors_are_orthogonal_to_base_point(seed, dim):
    x, y, _ = _cases.point_pairs(seed, dim, BATCH)
    rng = np.random.default_rng(seed + 1)
    u = (rng.standard_normal((BATCH, dim)) * 10.0 ** rng.uniform(-6, 2, (BATCH, 1))
         ).astype(np.float32)
    t = rng.uniform(0.0, 1.0, BATCH).astype(np.float32)
    xt = geodesic(x, y, t)
    cases = {
        "proj": (x, proj(x, u), _norms(u)),
        "log": (x, log(x, y), np.full(BATCH, math.pi)),
        "cond_velocity": (xt, cond_velocity(xt, y, t), None),
    }
    for name, (base, vec, scale) in cases.items():
        scale = _norms(vec) if scale is None else scale
        dots = np.abs(np.sum(_np(base).astype(np.float64) * _np(vec), axis=-1))
        assert np.all(dots <= 1e-6 * (1.0 + scale)), name


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_exp_stays_on_sphere_for_any_vector(seed, dim):
    rng = np.random.default_rng(seed)
    x = _cases.unit_rows(rng, BATCH, dim).astype(np.float32)
    # arbitrary (not even tangent) vectors of norms 1e-30 .. 1e30, and zero rows
    v = (rng.standard_normal((BATCH, dim)) * 10.0 ** rng.uniform(-30, 30, (BATCH, 1))
         ).astype(np.float32)
    v[:10] = 0.0
    out = exp(x, v)
    assert np.all(np.isfinite(_np(out)))
    np.testing.assert_allclose(_norms(out), 1.0, atol=1e-6)
    # exp(x, 0) renormalizes x: equal up to one float32 ulp (1.2e-7 near 1).
    np.testing.assert_allclose(_np(out[:10]), x[:10], atol=2.5e-7, rtol=0)


@HSET
@given(seed=SEEDS, dim=DIMS)
def test_cond_velocity_is_log_over_remaining_time(seed, dim):
    x0, x1, _ = _cases.point_pairs(seed, dim, BATCH)
    t = np.random.default_rng(seed).uniform(0.0, 0.99, BATCH).astype(np.float32)
    xt = geodesic(x0, x1, t)
    u = _np(cond_velocity(xt, x1, t))
    np.testing.assert_allclose(u * (1 - t)[:, None], _np(log(xt, x1)), atol=1e-6, rtol=1e-5)
    # Along the geodesic the conditional velocity has constant length dist(x0, x1).
    np.testing.assert_allclose(_norms(u), _np(dist(x0, x1)), atol=1e-3, rtol=0)


@settings(max_examples=6, deadline=None)
@given(seed=SEEDS, dim=st.sampled_from([3, 50]))
def test_gradient_of_sq_dist_is_minus_twice_log(seed, dim):
    # Riemannian gradient of d(x, y)^2 in y is -2 log_y(x) (checked away from the
    # antipode, where log_y is discontinuous, and from x == y, where both are 0 anyway).
    x, y, theta = _cases.point_pairs(seed, dim, BATCH)
    keep = (theta > 1e-3) & (theta < math.pi - 1e-2)
    g = _np(proj(y, _GRAD_SQ_DIST_Y(x, y)))
    np.testing.assert_allclose(g[keep], -2 * _np(log(y, x))[keep], atol=5e-4, rtol=0)
    assert np.all(np.isfinite(g))


_GRAD_SQ_DIST_Y = jax.jit(jax.grad(lambda x, y: jnp.sum(S.sq_dist(x, y)), argnums=1))


# ----------------------------------------------------------------------------------------
# exact values and conventions


@jax.jit
def _exact_cases(e, h):
    return {
        "exp_quarter": (S.exp(e[0], h * e[1]), e[1]),
        "exp_half": (S.exp(e[0], 2 * h * e[1]), -e[0]),
        "log": (S.log(e[0], e[1]), h * e[1]),
        "dist": (S.dist(e[0], e[1]), h),
        "geodesic_mid": (S.geodesic(e[0], e[1], 0.5), (e[0] + e[1]) / jnp.sqrt(2.0)),
        "proj": (S.proj(e[0], jnp.array([3.0, 2.0, -1.0])), jnp.array([0.0, 2.0, -1.0])),
        "inner": (S.inner(e[0] + e[1], 2 * e[1]), 2.0),
        "cond_velocity": (S.cond_velocity(e[0], e[1], 0.5), 2 * h * e[1]),
        "cond_velocity_t1": (S.cond_velocity(e[0], e[0], 1.0), jnp.zeros(3)),
    }


def test_exact_values():
    out = _exact_cases(np.eye(3, dtype=np.float32), np.float32(math.pi / 2))
    for name, (got, want) in out.items():
        np.testing.assert_allclose(_np(got), _np(want), atol=1e-6, rtol=0, err_msg=name)


@jax.jit
def _normalize_cases(zeros, tiny, huge, z3):
    g = jax.grad(lambda x: jnp.sum(S.normalize(x) * jnp.arange(3.0)))(z3)
    return S.normalize(zeros), S.normalize(tiny), S.normalize(huge), g


def test_normalize_zero_tiny_and_huge():
    tiny = np.array([3e-25, 4e-25, 0.0], np.float32)  # squares underflow float32
    huge = np.array([3e30, -4e30, 0.0], np.float32)  # squares overflow float32
    zeros, tiny, huge, g = _normalize_cases(np.zeros((2, 3), np.float32), tiny, huge,
                                            np.zeros(3, np.float32))
    np.testing.assert_array_equal(_np(zeros), np.tile([1, 0, 0], (2, 1)))  # e_0
    np.testing.assert_allclose(_np(tiny), [0.6, 0.8, 0.0], atol=1e-6)
    np.testing.assert_allclose(_np(huge), [0.6, -0.8, 0.0], atol=1e-6)
    np.testing.assert_array_equal(_np(g), 0.0)
    np.testing.assert_allclose(_np(normalize(np.array([0.0, 2.0, 0.0], np.float32))), [0, 1, 0])


def test_normalize_and_exp_gradients_are_exact_and_do_not_depend_on_the_max_entry():
    """normalize / exp use a max-abs scale that is a constant for differentiation (x/|x|
    and |v| do not depend on it): the Jacobian of normalize is (I - u u^T) / |x| also at
    ties of the largest entry, and the same under jit. (Through max's own VJP, which divides
    by the count of entries equal to the maximum, a jitted train step got NaN gradients when
    XLA recomputed |x| in the backward pass with another rounding.)"""
    for x in (np.array([1.0, -1.0, 1.0, 0.5], np.float32),  # ties of the max-abs entry
              np.array([0.3, -2.0, 0.7, 0.1], np.float32)):
        u = x / np.linalg.norm(x)
        want = (np.eye(4) - np.outer(u, u)) / np.linalg.norm(x)
        for jac in (jax.jacrev(S.normalize), jax.jit(jax.jacrev(S.normalize))):
            np.testing.assert_allclose(_np(jac(jnp.asarray(x))), want, atol=1e-6)
    x = np.array([1.0, 0.0, 0.0], np.float32)
    v = np.array([0.0, 0.5, -0.5], np.float32)
    g = jax.jit(jax.grad(lambda v: jnp.sum(S.exp(jnp.asarray(x), v) * jnp.arange(3.0))))(v)
    # By hand: y = cos r x + sin r v / r (unit), exp = normalize(y), Jacobian (I - y y^T) J_y.
    r = np.linalg.norm(v)
    y = np.cos(r) * x + np.sin(r) * v / r
    a = np.arange(3.0) - (y @ np.arange(3.0)) * y
    want = (-np.sin(r) * (x @ a) * v / r + np.sin(r) / r * a
            + (np.cos(r) / r - np.sin(r) / r**2) * (v @ a) * v / r)
    np.testing.assert_allclose(_np(g), want, atol=1e-5)


@jax.jit
def _antipodal_cases(x):
    v = S.log(x, -x)
    return v, S.antipodal_direction(x), S.exp(x, v)


def test_antipodal_convention():
    # least aligned axis: |x_k| minimal, first index on ties -> e_0, already tangent
    x = np.array([[0.0, 0.6, 0.0, 0.8], [3.0, -2.0, 0.5, 1.0]], np.float32)
    x = _np(normalize(x))
    v, direction, back = (_np(a) for a in _antipodal_cases(x))
    np.testing.assert_allclose(v[0], [math.pi, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(direction[0], [1, 0, 0, 0], atol=1e-7)
    # second row: axis 2 is least aligned; direction = normalized proj_x(e_2)
    expect = np.array([0.0, 0.0, 1.0, 0.0]) - x[1, 2] * x[1]
    np.testing.assert_allclose(direction[1], expect / np.linalg.norm(expect), atol=1e-6)
    np.testing.assert_allclose(v[1], math.pi * direction[1], atol=1e-6)
    np.testing.assert_allclose(_norms(v), math.pi, atol=1e-6)
    assert np.all(np.abs(np.sum(v * x, -1)) < 1e-6)
    np.testing.assert_allclose(back, -x, atol=1e-6)
    # 0-sphere: no tangent space; log is zero, never NaN
    np.testing.assert_array_equal(_np(log(np.array([1.0]), np.array([-1.0]))), [0.0])


def test_jacobian_of_log_at_base_point_is_projection():
    x = _np(normalize(np.array([1.0, -2.0, 0.5, 3.0], np.float32)))
    jac_log = jax.jit(jax.jacfwd(S.log, argnums=1))(x, x)
    np.testing.assert_allclose(_np(jac_log), np.eye(4) - np.outer(x, x), atol=1e-6)
    jac_exp = jax.jit(jax.jacrev(S.exp, argnums=1))(x, np.zeros(4, np.float32))
    np.testing.assert_allclose(_np(jac_exp), np.eye(4) - np.outer(x, x), atol=1e-6)


def test_broadcasting_and_vmap_agree():
    x, y, _ = _cases.point_pairs(3, 5, 50)
    t = np.linspace(0, 1, 50, dtype=np.float32)

    @jax.jit
    def run(x, y, t):
        return (jax.vmap(S.log)(x, y), S.log(x, y),
                S.log(x[0], y), S.log(jnp.broadcast_to(x[0], y.shape), y),
                jax.vmap(S.geodesic)(x, y, t), S.geodesic(x, y, t),
                jax.vmap(S.dist, in_axes=(None, 0))(x[0], y), S.dist(x[0], y))

    out = [_np(o) for o in run(x, y, t)]
    for a, b in zip(out[::2], out[1::2]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert jax.eval_shape(S.dist, x.reshape(5, 10, 5), y.reshape(5, 10, 5)).shape == (5, 10)


def test_float32_is_kept_and_float64_not_needed():
    assert not jax.config.jax_enable_x64
    x = jax.ShapeDtypeStruct((10, 4), jnp.float32)
    for fun in (S.log, S.exp, S.dist, S.sq_dist, S.proj, lambda a, b: S.geodesic(a, b, 0.5),
                lambda a, b: S.cond_velocity(a, b, 0.5)):
        assert jax.eval_shape(fun, x, x).dtype == jnp.float32
    # integer input becomes the default float
    assert jax.eval_shape(S.normalize, jax.ShapeDtypeStruct((3,), jnp.int32)).dtype == (
        jnp.float32)


def test_random_uniform():
    sample = jax.jit(S.random_uniform, static_argnums=1)
    z = _np(sample(jax.random.key(0), (20000, 3)))
    assert z.shape == (20000, 3) and z.dtype == np.float32
    np.testing.assert_allclose(_norms(z), 1.0, atol=1e-6)
    # uniform on S^2: mean 0, each coordinate uniform on [-1, 1] (variance 1/3)
    assert np.all(np.abs(z.mean(0)) < 0.03)
    np.testing.assert_allclose(z.var(0), 1 / 3, atol=0.02)
    assert np.array_equal(z, _np(sample(jax.random.key(0), (20000, 3))))
    with pytest.raises(ValueError, match="ambient axis"):
        S.random_uniform(jax.random.key(0), ())


# ----------------------------------------------------------------------------------------
# no NaN values, no NaN gradients


def _edge_pairs(dim: int):
    """Awkward (x, y) pairs: equal, antipodal, near-antipodal, near, off-sphere zero."""
    rng = np.random.default_rng(dim)
    x = _cases.unit_rows(rng, 8, dim).astype(np.float32)
    noise = rng.standard_normal((8, dim)).astype(np.float32)
    ys = [
        x,
        -x,
        _np(normalize(-x + 1e-6 * noise)),
        _np(normalize(-x + 1e-3 * noise)),
        _np(normalize(x + 1e-7 * noise)),
        _np(normalize(x + 1e-4 * noise)),
        -x * np.float32(1 + 1e-7),  # antipodal up to rounding, slightly off the sphere
    ]
    xs = np.concatenate([x] * len(ys))
    ys = np.concatenate(ys)
    return xs, ys


_T_EDGE = (0.0, 0.5, 1.0 - 1e-7, 1.0)


@jax.jit
def _edge_values_and_grads(x, y, t, w):
    """Values of dist, log, geodesic and cond_velocity (on the path and off it), and the
    gradient in (x, y, t) of a weighted sum of all of them.

    One combined function keeps compilation cheap; a NaN in the gradient of any part
    propagates into the gradient of the sum. (exp is inside geodesic; sq_dist = dist**2.)
    """
    def total(x, y, t):
        xt = S.geodesic(x, y, t)
        vals = {
            "dist": S.dist(x, y)[..., None],
            "log": S.log(x, y),
            "geodesic": xt,
            "cond_velocity": S.cond_velocity(x, y, t),
            "cond_velocity_on_path": S.cond_velocity(xt, y, t),
        }
        return sum(jnp.sum(v * w) for v in vals.values()), vals

    grads, vals = jax.grad(total, argnums=(0, 1, 2), has_aux=True)(x, y, t)
    return vals, grads


@pytest.mark.parametrize("dim", [1, 3, pytest.param(65, marks=pytest.mark.slow)])
def test_no_nan_values_or_gradients_at_edge_cases(dim):
    x, y = _edge_pairs(dim)
    w = np.cos(np.arange(x.size)).reshape(x.shape).astype(np.float32)
    for t_val in _T_EDGE:
        t = np.full(x.shape[0], t_val, np.float32)
        vals, grads = _edge_values_and_grads(x, y, t, w)
        for name, v in vals.items():
            assert np.all(np.isfinite(_np(v))), (name, t_val)
        for what, g in zip(("grad_x", "grad_y", "grad_t"), grads):
            assert np.all(np.isfinite(_np(g))), (what, t_val)


@jax.jit
def _exp_and_grads(x, v):
    out = S.exp(x, v)
    gx, gv = jax.grad(lambda x, v: jnp.sum(S.exp(x, v) ** 3), argnums=(0, 1))(x, v)
    return out, gx, gv, S.log(x, out)


@pytest.mark.parametrize("scale", [0.0, 1e-30, 1e-12, 1e-7, 1e-3])
def test_exp_tiny_vectors_exact_and_finite_gradient(scale):
    rng = np.random.default_rng(1)
    x = _cases.unit_rows(rng, 4, 6).astype(np.float32)
    v = (scale * _cases.tangent_rows(rng, x.astype(np.float64))).astype(np.float32)
    out, gx, gv, back = _exp_and_grads(x, v)
    np.testing.assert_allclose(_np(out), x + v, atol=1e-6)
    assert np.all(np.isfinite(_np(gx))) and np.all(np.isfinite(_np(gv)))
    np.testing.assert_allclose(_np(back), v, atol=1e-6)  # log of the result returns v


def test_zero_points_off_sphere_do_not_produce_nan():
    z = np.zeros(3, np.float32)
    e = np.eye(3, dtype=np.float32)[0]
    funs = (S.dist, S.log, lambda a, b: S.geodesic(a, b, 0.3))

    @jax.jit
    def run(a, b):
        return [(f(a, b), jax.grad(lambda a, b: jnp.sum(f(a, b)), argnums=(0, 1))(a, b))
                for f in funs]

    for a, b in ((z, z), (z, e), (e, z)):
        for leaf in jax.tree.leaves(run(a, b)):
            assert np.all(np.isfinite(_np(leaf)))


def test_transport_is_an_isometry_and_gives_the_geodesic_velocity():
    sphere = S
    key = jax.random.split(jax.random.key(42), 3)
    x0 = sphere.normalize(jax.random.normal(key[0], (5, 7)))
    x1 = sphere.normalize(jax.random.normal(key[1], (5, 7)))
    u = sphere.proj(x0, jax.random.normal(key[2], (5, 7)))
    t = 0.3
    xt = sphere.geodesic(x0, x1, t)
    moved = sphere.transport(x0, xt, u)
    np.testing.assert_allclose(sphere.inner(moved, xt), 0.0, atol=1e-5)      # tangent at y
    np.testing.assert_allclose(jnp.linalg.norm(moved, axis=-1),
                               jnp.linalg.norm(u, axis=-1), rtol=1e-5)       # isometry
    # along the geodesic, the transported initial velocity is the path's velocity
    np.testing.assert_allclose(sphere.transport(x0, xt, sphere.log(x0, x1)),
                               sphere.cond_velocity(xt, x1, t), atol=1e-4)
    # antipodal: falls back to the projection, finite
    anti = sphere.transport(x0, -x0, u)
    assert bool(jnp.all(jnp.isfinite(anti)))
