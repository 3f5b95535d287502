"""Log-likelihoods by change of variables, against analytic densities."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.linalg import expm
from scipy.stats import multivariate_normal

from weightflow_jax import sampling
from weightflow_jax.flows import FlowSpace
from weightflow_jax.symmetry import Canonical

STD = 0.1


def _linear_setup(seed=0, diagonal=False):
    """A euclidean flow with the linear field v(x) = A x on flat coordinates."""
    space = FlowSpace("euclidean", (3, 2, 2))
    one = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), space.coord_shapes())
    flat, unravel = ravel_pytree(one)
    d = flat.shape[0]
    rng = np.random.default_rng(seed)
    a = (np.diag(rng.normal(0, 0.5, d)) if diagonal
         else 0.4 * rng.normal(size=(d, d)) / np.sqrt(d)).astype(np.float32)
    aj = jnp.asarray(a)

    def pred(x, t):  # velocity parameterization
        return jax.vmap(lambda xi: unravel(aj @ ravel_pytree(xi)[0]))(x)

    m = expm(a.astype(np.float64))
    x0 = STD * rng.normal(size=(3, d))
    x1 = x0 @ m.T
    want = multivariate_normal(np.zeros(d), STD ** 2 * m @ m.T).logpdf(x1)
    coords = jax.vmap(unravel)(jnp.asarray(x1, jnp.float32))
    return space, pred, coords, want, a


def test_prior_log_density():
    geo = FlowSpace("geometric", (2, 1), canonical_mode="thesis")  # W on S^1, b in R
    x = Canonical([(jnp.array([[0.6, 0.8]]), jnp.array([0.3]))], None)
    want = -math.log(2 * math.pi) + multivariate_normal(0.0, STD ** 2).logpdf(0.3)
    np.testing.assert_allclose(float(sampling.prior_log_density(geo, x, STD)), want, rtol=1e-6)
    np.testing.assert_allclose(sampling.log_sphere_area(3), math.log(4 * math.pi))
    np.testing.assert_allclose(sampling.log_sphere_area(2), math.log(2 * math.pi))
    flat = FlowSpace("euclidean", (2, 1))
    want = multivariate_normal(np.zeros(3), STD ** 2 * np.eye(3)).logpdf([0.6, 0.8, 0.3])
    np.testing.assert_allclose(float(sampling.prior_log_density(flat, x, STD)), want, rtol=1e-6)


@pytest.mark.parametrize("solver,steps,tol", [("tsit5", 8, 1e-4), ("euler", 400, 1e-2)])
def test_linear_field_exact_divergence_matches_gaussian(solver, steps, tol):
    space, pred, coords, want, _ = _linear_setup()
    got = sampling.log_likelihood(space, pred, coords, solver=solver, steps=steps, t_end=1.0,
                                  parameterization="velocity", prior_std=STD)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, want, atol=tol)


def test_linear_field_hutchinson():
    # Diagonal field: Rademacher probes give the trace exactly (eps_i^2 = 1).
    space, pred, coords, want, _ = _linear_setup(seed=1, diagonal=True)
    got = sampling.log_likelihood(space, pred, coords, divergence_method="hutchinson",
                                  key=jax.random.key(0), solver="tsit5", steps=8, t_end=1.0,
                                  parameterization="velocity", prior_std=STD)
    np.testing.assert_allclose(got, want, atol=2e-3)
    # General field: unbiased, error ~ sqrt(2 |A_sym|_F^2 / num_probes) per network.
    space, pred, coords, want, a = _linear_setup(seed=2)
    probes = 512
    got = sampling.log_likelihood(space, pred, coords, divergence_method="hutchinson",
                                  key=jax.random.key(1), num_probes=probes, solver="tsit5",
                                  steps=8, t_end=1.0, parameterization="velocity",
                                  prior_std=STD)
    sym = 0.5 * (a + a.T)
    sd = math.sqrt(2 * (np.sum(sym ** 2) - np.sum(np.diag(sym) ** 2)) / probes)
    assert np.all(np.abs(got - want) < 5 * sd + 2e-3)
    assert not np.allclose(got, want, atol=1e-6)  # it is an estimate


def test_geometric_flow_on_circle_matches_analytic_density():
    # W is one point of S^1 (theta), b is Euclidean. Field: d theta/dt = a sin(theta),
    # db/dt = c b. Then tan(theta_t / 2) = tan(theta_0 / 2) e^{a t} and b_1 = e^c b_0.
    a, c = 0.8, -0.5
    space = FlowSpace("geometric", (2, 1), canonical_mode="thesis")

    def pred(x, t):
        (w, b), = x.layers  # w (n, 1, 2), b (n, 1)
        w0, w1 = w[..., 0], w[..., 1]
        vw = a * w1[..., None] * jnp.stack([-w1, w0], axis=-1)
        return Canonical([(vw, c * b)], None)

    theta1 = np.array([-1.9, -0.4, 0.7, 2.2])
    b1 = np.array([0.05, -0.12, 0.2, 0.0])
    x1 = Canonical([(jnp.asarray(np.stack([np.cos(theta1), np.sin(theta1)], -1)[:, None, :],
                                 jnp.float32), jnp.asarray(b1[:, None], jnp.float32))], None)
    u = np.tan(theta1 / 2) * np.exp(-a)
    log_jac = -a + np.log(1.0 / np.cos(theta1 / 2) ** 2) - np.log1p(u ** 2)
    want = (-math.log(2 * math.pi) + log_jac
            + multivariate_normal(0.0, STD ** 2 * math.exp(2 * c)).logpdf(b1))
    got = sampling.log_likelihood(space, pred, x1, steps=1000, t_end=1.0,
                                  parameterization="velocity", prior_std=STD)
    np.testing.assert_allclose(got, want, atol=1e-2)
    hutch = sampling.log_likelihood(space, pred, x1, steps=1000, t_end=1.0,
                                    parameterization="velocity", prior_std=STD,
                                    divergence_method="hutchinson", key=jax.random.key(3),
                                    num_probes=256, probe="gaussian")
    # per probe the sphere part is (g . e_theta)^2 a cos(theta) with g . e_theta ~ N(0, 1):
    # integrated error <= |a| sqrt(2 / 256) ~ 0.07 per network
    assert np.all(np.abs(hutch - want) < 0.3)
    assert not np.allclose(hutch, got, atol=1e-6)


def test_likelihood_bad_input():
    geo = FlowSpace("geometric", (2, 1), canonical_mode="thesis")
    x1 = Canonical([(jnp.array([[[1.0, 0.0]]]), jnp.zeros((1, 1)))], None)
    pred = lambda x, t: x
    with pytest.raises(ValueError, match="only the exp-map steps solver='euler'"):
        sampling.log_likelihood(geo, pred, x1, solver="tsit5")
    with pytest.raises(ValueError, match="'midpoint' is a sampling solver"):
        sampling.log_likelihood(geo, pred, x1, solver="midpoint")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        sampling.log_likelihood(geo, pred, x1, divergence_method="hutchinson")
    with pytest.raises(ValueError, match="unknown divergence method"):
        sampling.log_likelihood(geo, pred, x1, divergence_method="trace")
    with pytest.raises(ValueError, match="t_end must lie in"):
        sampling.log_likelihood(geo, pred, x1, t_end=1.5)
    on_spheres = FlowSpace("normalized", (2, 1), canonical_mode="thesis", prior="spheres")
    with pytest.raises(ValueError, match="has no density there"):
        sampling.prior_log_density(on_spheres, jax.tree.map(lambda a: a[0], x1))
