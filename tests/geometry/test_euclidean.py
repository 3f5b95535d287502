"""Tests of weightflow_jax.geometry.euclidean: exact values, identities, finite gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax.geometry import euclidean as E


@jax.jit
def _ops(x, y, u, t):
    return {
        "retract": E.retract(x),
        "inner": E.inner(x, u),
        "proj": E.proj(x, u),
        "exp": E.exp(x, u),
        "log": E.log(x, y),
        "dist": E.dist(x, y),
        "sq_dist": E.sq_dist(x, y),
        "geodesic": E.geodesic(x, y, t),
        "cond_velocity": E.cond_velocity(x, y, t),
        "exp_log": E.exp(x, E.log(x, y)),
    }


def test_values_match_flat_space_formulas():
    rng = np.random.default_rng(0)
    x, y, u = (rng.standard_normal((50, 7)).astype(np.float32) for _ in range(3))
    t = rng.uniform(0, 1, 50).astype(np.float32)
    t[:3] = [0.0, 1.0, 1.0 - 1e-7]
    out = {k: np.asarray(v) for k, v in _ops(x, y, u, t).items()}
    tc = t[:, None]
    want = {
        "retract": x,
        "inner": np.sum(x * u, -1),
        "proj": u,
        "exp": x + u,
        "log": y - x,
        "dist": np.linalg.norm(y - x, axis=-1),
        "sq_dist": np.sum((y - x) ** 2, -1),
        "geodesic": (1 - tc) * x + tc * y,
        "cond_velocity": (y - x) / np.maximum(1 - tc, 1e-5),
        "exp_log": y,
    }
    for k in want:
        np.testing.assert_allclose(out[k], want[k], rtol=1e-5, atol=1e-5, err_msg=k)
    np.testing.assert_array_equal(out["geodesic"][0], x[0])
    np.testing.assert_allclose(out["geodesic"][1], y[1], atol=1e-6)
    # x + t (y - x) moves with constant velocity y - x; cond_velocity at x_t is exactly that
    xt = E.geodesic(x, y, t)
    np.testing.assert_allclose(np.asarray(E.cond_velocity(xt, y, t))[3:], (y - x)[3:],
                               rtol=1e-3, atol=1e-3)


def test_dist_gradient_is_finite_at_equal_points():
    x = np.arange(4.0, dtype=np.float32)
    g = jax.jit(jax.grad(lambda a, b: E.dist(a, b), argnums=(0, 1)))(x, x)
    for gi in g:
        np.testing.assert_array_equal(np.asarray(gi), 0.0)
    gt = jax.grad(lambda t: jnp.sum(E.cond_velocity(x, x + 1, t)))(1.0)
    assert np.isfinite(float(gt))


def test_random_normal():
    z = np.asarray(jax.jit(E.random_normal, static_argnums=(1, 2, 3))(
        jax.random.key(0), (20000,), jnp.float32, 0.1))
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.std(), 0.1, rtol=0.03)
    assert abs(z.mean()) < 0.003
