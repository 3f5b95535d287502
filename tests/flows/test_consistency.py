"""Training and sampling agree: the velocity the sampler integrates, from the prediction that
minimises the training loss, is the flow's marginal velocity.

A low flow-matching loss says nothing about the samples unless the minimiser of that loss
makes :func:`weightflow_jax.flows.predicted_velocity` (what every sampler integrates) equal
the marginal velocity ``E[u_t(x_t | x1) | x_t]`` of the path the training draws from. These
tests compute both exactly on a tiny training set (``tests/flows/_oracle.py``). The
normalized flow once failed here: its x1-prediction was renormalized onto the spheres, so
the loss's minimiser was ``E[x1 | x_t] / |E[x1 | x_t]|`` and the integrated velocity off
the marginal one by a relative error of up to 1.4 at ``t = 0`` (the samples' other failure,
an input skip the field's head cannot cancel, is caught by
``tests/models/test_consistency.py``).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.flows import _oracle
from weightflow_jax import flows, mlp
from weightflow_jax.flows import FlowSpace

SIZES = (4, 3, 2)
STD = 0.1
K = 4
TIMES = (0.0, 0.05, 0.2, 0.6)
FLAT = ("euclidean", "normalized")


def _training_set(space):
    params = jax.vmap(lambda k: mlp.init(k, SIZES, w_std=0.5, b_std=0.3))(
        jax.random.split(jax.random.key(0), K))
    return space.encode(params)


def _errors(kind, param, times):
    space = FlowSpace(kind, SIZES)
    x1s = _training_set(space)

    def one(key, t):
        k0, ki = jax.random.split(key)
        x0 = flows.sample_prior(k0, space, STD)
        i = jax.random.randint(ki, (), 0, K)
        x = flows.interpolate(space, x0, jax.tree.map(lambda a: a[i], x1s), t)
        pred = _oracle.loss_minimiser(space, x1s, x, t, param, STD)
        v = flows.predicted_velocity(space, pred, x, t, param)
        return _oracle.relative_error(v, _oracle.marginal_velocity(space, x1s, x, t, STD))

    keys = jax.random.split(jax.random.key(1), 3 * len(times))
    ts = jnp.asarray(np.repeat(times, 3), jnp.float32)
    return np.asarray(jax.jit(jax.vmap(one))(keys, ts))


@pytest.mark.parametrize("kind,param", list(itertools.product(FLAT, flows.PARAMETERIZATIONS)))
def test_loss_minimiser_integrates_the_marginal_velocity_on_flat_paths(kind, param):
    errors = _errors(kind, param, TIMES)
    # Measured: <= 1e-4 (the minimiser is found by 600 Adam steps); before the fix the
    # normalized flow's x1-predictions gave up to 1.34 here.
    assert errors.max() < 1e-2, errors


def test_geometric_velocity_minimiser_integrates_the_marginal_velocity():
    # At t = 0 the posterior over the training set is uniform on every flow.
    errors = _errors("geometric", "velocity", (0.0,))
    assert errors.max() < 1e-2, errors


@pytest.mark.xfail(strict=True, reason=(
    "known and not the normalized flow's bug: on the spheres the x1-prediction's loss "
    "minimiser is the Frechet mean of the targets, whose log map at x_t is not the mean of "
    "their log maps; the error is second order in the targets' spread (measured 0.18-0.69 "
    "for these random networks, < 0.01 for targets 0.05 apart)"))
@pytest.mark.parametrize("param", ["target", "residual"])
def test_geometric_x1_prediction_minimiser_integrates_the_marginal_velocity(param):
    errors = _errors("geometric", param, (0.0,))
    assert errors.max() < 1e-2, errors
