"""Every field, trained on a tiny set of networks with the pipeline's own loss, makes the real
sampler carry the prior to those networks: training and sampling agree for every flow.

"The loss goes down" is not enough (the normalized flow trained to the geometric flow's loss
while its MNIST samples stayed at 0.29 accuracy). Here each field is trained with
:func:`weightflow_jax.train.recipe.make_loss_fn` on ``K`` networks until its loss is near the
floor, then

* the velocity the sampler integrates (:func:`weightflow_jax.flows.velocity`) is compared
  with the exact marginal velocity of the training path (``tests/flows/_oracle.py``) on the
  flat flows, where it is known in closed form;
* :func:`weightflow_jax.sampling.sample_coords` (the real sampler, Euler on the flow's
  geometry) must land every sample on one of the ``K`` networks and hit each of them.

With the ``mlp`` field's former input skip every flow failed here (velocity errors 0.18 /
0.26 at t = 0.3 on the euclidean / normalized flows; geometric samples 1.3 from the nearest
network against a bound of 0.1): the head cannot cancel the prior noise the skip adds to
the x1-prediction, so the sampler never removes it.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import (breast_cancer_euclidean, breast_cancer_geometric,
                     breast_cancer_normalized)
from tests.flows import _oracle
from tests.models._fit import fit
from weightflow_jax import flows, mlp, sampling
from weightflow_jax.train import recipe
from weightflow_jax.geometry import product

# 12-3-2 (48 coordinates) with fields narrower than that: like the real ones (the `mlp`
# field's 512 features for MNIST's 7,960 coordinates, `neuron_transformer`'s 128-wide tokens
# for 785-wide rows), their heads cannot represent every direction of the coordinates.
SIZES = (12, 3, 2)
K = 3
STD = 0.1
CONFIGS = {"euclidean": breast_cancer_euclidean, "normalized": breast_cancer_normalized,
           "geometric": breast_cancer_geometric}
SMALL = {
    "mlp": dict(width=16, num_blocks=2, time_features=16),
    "neuron_transformer": dict(num_layers=2, width=8, num_heads=2, time_features=16),
    "compact_rt": dict(num_layers=2, width=16, num_heads=2, time_features=16),
    "rt": dict(num_layers=2, width=16, num_heads=2, time_features=16),
}
FAST = {"mlp"}  # one field per flow kind in the default run; the others are slow
STEPS = 400


def _config(kind, name):
    config = CONFIGS[kind].get_config("test")
    with config.unlocked():
        config.zoo.arch = mlp.format_arch(SIZES)
        config.model.name = name
        config.model[name].update(SMALL[name])
        config.flow.coupling = "independent"  # the closed-form marginal velocity needs it
        config.flow.prior_std = STD
    return config


def _training_set(space):
    params = jax.vmap(lambda k: mlp.init(k, SIZES, w_std=0.7, b_std=0.3))(
        jax.random.split(jax.random.key(0), K))
    return space.encode(params)


def _train(config, space, x1s):
    stats = recipe.fit_field_stats(config, jax.tree.map(np.asarray, x1s))
    run = recipe.build_flow(config, space, jax.random.key(1), stats)
    n = 64

    def batch(key):
        ki, k0 = jax.random.split(key)
        idx = jax.random.randint(ki, (n,), 0, K)
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, STD))(jax.random.split(k0, n))
        return {"x0": x0, "x1": jax.tree.map(lambda a: a[idx], x1s)}

    params, losses = fit(recipe.make_loss_fn(run), run.variables["params"], batch, STEPS)
    run.variables = {"params": params}
    return run, np.asarray(losses)


# The graph fields at these widths do not reach their loss floor in STEPS updates (measured:
# velocity errors 0.27-0.70 at t = 0.3 on the flat flows, samples 5.7-6.5 from the nearest
# network against 9.6 for the prior on the geometric flow); not a verdict on the fields.
UNDERTRAINED = pytest.mark.xfail(strict=False, reason=(
    "graph fields not yet trained to their loss floor within the test's budget"))


def _cases():
    for kind, name in itertools.product(CONFIGS, SMALL):
        marks = () if name in FAST else (pytest.mark.slow, UNDERTRAINED)
        yield pytest.param(kind, name, marks=marks, id=f"{kind}-{name}")


@pytest.mark.parametrize("kind,name", list(_cases()))
def test_trained_field_reproduces_its_training_networks_through_the_sampler(kind, name):
    config = _config(kind, name)
    space = flows.FlowSpace(kind, SIZES)
    x1s = _training_set(space)
    run, losses = _train(config, space, x1s)
    assert losses[-50:].mean() < 0.5 * losses[:20].mean(), losses[::50]
    predict = run.predict_fn()
    param = str(config.flow.parameterization)

    if kind != "geometric":
        # The sampler's velocity is the path's marginal velocity, where a learned field can
        # follow it (near t = 0 it turns from the mean to one network within ~0.1 here; the
        # loss's own minimiser is checked at every t in tests/flows/test_consistency.py).
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, STD))(
            jax.random.split(jax.random.key(3), 64))
        for t in (0.3, 0.6):
            t = jnp.float32(t)
            x = jax.vmap(lambda a, i: flows.interpolate(
                space, a, jax.tree.map(lambda b: b[i], x1s), t))(x0, jnp.arange(64) % K)
            v = flows.velocity(space, predict, x, t, param)
            u = jax.vmap(lambda xi: _oracle.marginal_velocity(space, x1s, xi, t, STD))(x)
            err = float(_oracle.relative_error(v, u))
            assert err < 0.15, (float(t), err)

    samples = sampling.sample_coords(space, predict, jax.random.key(4), 32, steps=32,
                                     parameterization=param, prior_std=STD)
    samples = jax.tree.map(jnp.asarray, samples)
    data = jax.vmap(space.retract)(x1s)
    d = jax.vmap(lambda s: jax.vmap(lambda c: product.sq_dist(space.path_spec, s, c))(data))(
        samples)
    spacing = min(float(product.sq_dist(space.path_spec, jax.tree.map(lambda a: a[i], data),
                                        jax.tree.map(lambda a: a[j], data)))
                  for i in range(K) for j in range(i))
    nearest = np.asarray(jnp.min(d, axis=1))
    x0 = jax.vmap(lambda k: flows.sample_prior(k, space, STD))(
        jax.random.split(jax.random.key(5), 32))
    start = np.asarray(jnp.min(jax.vmap(lambda s: jax.vmap(
        lambda c: product.sq_dist(space.path_spec, s, c))(data))(x0), axis=1))
    # Every sample on a training network: far closer to it than the prior draws are, and
    # than the networks are to each other.
    assert np.median(nearest) < 0.01 * np.median(start), (np.median(nearest), np.median(start))
    assert np.median(nearest) < 0.01 * spacing, (np.median(nearest), spacing)
    assert set(np.asarray(jnp.argmin(d, axis=1)).tolist()) == set(range(K))
