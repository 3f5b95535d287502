"""Conditioning a field on a scalar per network (G.pt-style loss conditioning).

* :class:`Conditioner`: fitting, prompts, standardization, errors, storage;
* features are finite for null / infinite / huge values, under jit, vmap and grad;
* every field takes a condition through the common interface, the condition changes the
  prediction, ``NaN`` is the null condition, an unconditioned field refuses one;
* a conditioned field trained on three networks with distinct conditions samples, through
  the real sampler, the network whose condition it is prompted with (not just "the loss goes
  down"), and classifier-free guidance with weight 1 is the conditional field;
* balanced draws (``flow.condition_balance``): every bin of the prompt range equally often at
  1, uniform at 0, the tails in the edge bins; batches stay a function of the step.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import breast_cancer_geometric
from tests.models._fit import fit
from weightflow_jax import flows, mlp, sampling
from weightflow_jax.geometry import product
from weightflow_jax.models import Conditioner
from weightflow_jax.models.conditioning import (NUM_CONDITION_FEATURES,
                                                balanced_sampling_probs, check_condition,
                                                condition_features)
from weightflow_jax.train import recipe

SIZES = (12, 3, 2)
FIELDS = {
    "mlp": dict(width=16, num_blocks=1, time_features=8),
    "neuron_transformer": dict(num_layers=1, width=8, num_heads=2, time_features=8),
    "compact_rt": dict(num_layers=1, width=8, num_heads=2, time_features=8),
    "rt": dict(num_layers=1, width=8, num_heads=2, time_features=8),
}


def _config(name="mlp", condition="train_loss", **model):
    config = breast_cancer_geometric.get_config("test")
    with config.unlocked():
        config.zoo.arch = mlp.format_arch(SIZES)
        config.model.name = name
        config.model[name].update({**FIELDS[name], **model})
        config.flow.condition = condition
    return config


def test_conditioner_fit_prompts_and_roundtrip():
    values = np.array([2.3, 1.0, 0.5, 0.3, 0.2, 0.25], np.float32)
    c = Conditioner.fit("train_loss", values, final_index=np.array([4, 5]))
    assert c.prompts["final"] == pytest.approx(0.225)
    assert c.prompts["best"] == pytest.approx(0.2) and c.prompts["max"] == pytest.approx(2.3)
    assert c.prompts["p05"] < c.prompts["p50"] < c.prompts["p95"]
    z = np.asarray(c.standardize(jnp.asarray(values)))
    np.testing.assert_allclose(z.mean(), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(), 1.0, atol=1e-4)
    assert np.isnan(np.asarray(c.standardize(jnp.array([np.nan]))))[0]
    assert c.resolve("best") == pytest.approx(0.2) and c.resolve("0.7") == 0.7
    assert Conditioner.from_dict(c.to_dict()) == c
    acc = Conditioner.fit("train_acc", np.array([0.5, 0.9, 0.95]))
    assert acc.prompts["best"] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="neither a number nor one of"):
        c.resolve("lowest")
    with pytest.raises(ValueError, match="must be > 0"):
        c.resolve(-1.0)
    with pytest.raises(ValueError, match="not finite"):
        c.resolve("nan")
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        acc.resolve(1.5)
    with pytest.raises(ValueError, match="non-finite"):
        Conditioner.fit("train_loss", np.array([0.1, np.inf]))
    with pytest.raises(ValueError, match="unknown flow.condition 'test_loss'"):
        check_condition("test_loss")
    with pytest.raises(ValueError, match="needs a metric"):
        Conditioner.fit("none", values)


def test_condition_features_are_finite_and_mark_the_null_condition():
    u = jnp.array([0.0, 1.5, -2.0, jnp.nan, jnp.inf, -jnp.inf, 1e30])
    f = condition_features(u)
    assert f.shape == (7, 2 + NUM_CONDITION_FEATURES)
    assert bool(jnp.all(jnp.isfinite(f)))
    np.testing.assert_array_equal(np.asarray(f[:, -1]), [0, 0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(np.asarray(f[3:6, :-1]), 0.0)
    g = jax.grad(lambda v: jnp.sum(jax.jit(condition_features)(v) ** 2))(u)
    assert bool(jnp.all(jnp.isfinite(g)))
    fv = jax.vmap(lambda v: condition_features(v[None])[0])(u)
    np.testing.assert_allclose(np.asarray(fv), np.asarray(f), atol=1e-6)


def _perturbed(variables, key, scale=0.3):
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tree, [a + scale * jax.random.normal(k, a.shape, a.dtype)
                                     for a, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_takes_a_condition_through_the_common_interface(name):
    config = _config(name)
    space = flows.FlowSpace("geometric", SIZES)
    cond = Conditioner.fit("train_loss", np.array([0.1, 0.3, 1.0, 2.0]))
    run = recipe.build_flow(config, space, jax.random.key(0), None, cond)
    assert run.field.conditioned and run.conditioner is cond
    variables = _perturbed(run.variables, jax.random.key(1))
    x = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(
        jax.random.split(jax.random.key(2), 3))
    apply = jax.jit(lambda c: run.field.apply(variables, x, jnp.full((3,), 0.4), c))
    low, high = apply(jnp.full((3,), 0.1)), apply(jnp.full((3,), 2.0))
    null, none = apply(jnp.full((3,), jnp.nan)), jax.jit(
        lambda: run.field.apply(variables, x, 0.4))()
    diff = lambda a, b: max(float(jnp.max(jnp.abs(u - v)))
                            for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    assert diff(low, high) > 1e-4        # the condition reaches the prediction
    assert diff(null, none) < 1e-6       # NaN is the null condition
    assert diff(null, low) > 1e-4
    mixed = apply(jnp.array([0.1, 2.0, jnp.nan]))
    for a, b in zip(jax.tree.leaves(mixed), zip(*[jax.tree.leaves(v) for v in (low, high,
                                                                                  null)])):
        np.testing.assert_allclose(np.asarray(a), np.stack(
            [np.asarray(b[0])[0], np.asarray(b[1])[1], np.asarray(b[2])[2]]), atol=1e-5)
    g = jax.grad(lambda v: sum(jnp.sum(l ** 2) for l in jax.tree.leaves(
        run.field.apply(v, x, 0.4, jnp.array([0.2, jnp.nan, 5.0])))))(variables)
    assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree.leaves(g))

    plain = recipe.build_flow(_config(name, "none"), space, jax.random.key(0))
    with pytest.raises(ValueError, match="trained without a condition"):
        plain.field.apply(plain.variables, x, 0.4, jnp.zeros(3))
    with pytest.raises(ValueError, match="trained without a condition"):
        plain.predict_fn(condition=0.3)
    with pytest.raises(ValueError, match="config.flow.condition is 'none'"):
        recipe.build_flow(_config(name, "none"), space, jax.random.key(0), None, cond)


def _batch_setup(n: int, batch_size: int, coupling: str, **flow):
    """A conditioned ``mlp`` config with these batch settings, and ``n`` random networks'
    geometric coordinates (numpy)."""
    config = _config("mlp")
    with config.unlocked():
        config.train.batch_size = batch_size
        config.flow.coupling = coupling
        config.flow.update(flow)
    space = flows.FlowSpace("geometric", SIZES)
    coords = space.encode(jax.vmap(lambda k: mlp.init(k, SIZES, w_std=0.5, b_std=0.3))(
        jax.random.split(jax.random.key(0), n)))
    return config, space, jax.tree.map(np.asarray, coords)


def test_batch_fn_carries_each_targets_condition_through_the_coupling():
    n = 50
    config, space, coords = _batch_setup(n, 64, "exact", condition_dropout=0.25)
    values = np.linspace(0.1, 2.0, n).astype(np.float32)
    cond = Conditioner.fit("train_loss", values)
    run = recipe.build_flow(config, space, jax.random.key(0),
                            recipe.fit_field_stats(config, coords), cond)
    batch_fn = recipe.make_batch_fn(run, coords, jax.random.key(1), values)
    dropped = 0
    for step in range(4):
        b = batch_fn(step)
        c = np.asarray(b["c"])
        keep = np.isfinite(c)
        dropped += int((~keep).sum())
        # the value each target carries is its own network's (found by its coordinates)
        first = np.asarray(b["x1"].layers[0][1])[:, 0]
        which = np.argmin(np.abs(first[:, None] - coords.layers[0][1][None, :, 0]), axis=1)
        np.testing.assert_allclose(c[keep], values[which][keep])
        again = batch_fn(step)
        np.testing.assert_array_equal(np.asarray(again["c"]), c)  # a function of the step
    assert 0.1 < dropped / (4 * 64) < 0.45
    with pytest.raises(ValueError, match="needs the training networks' values"):
        recipe.make_batch_fn(run, coords, jax.random.key(1))
    with pytest.raises(ValueError, match="3 condition values for 50"):
        recipe.make_batch_fn(run, coords, jax.random.key(1), values[:3])
    plain = recipe.build_flow(_config("mlp", "none"), space, jax.random.key(0),
                              recipe.fit_field_stats(config, coords))
    with pytest.raises(ValueError, match="unconditioned flow"):
        recipe.make_batch_fn(plain, coords, jax.random.key(1), values)


def test_balanced_sampling_probs_equalize_bins_and_keep_tails_in_the_edge_bins():
    rng = np.random.default_rng(0)
    # A skewed metric: most values in the first bins, a sparse tail, outliers on both sides.
    z = np.concatenate([rng.uniform(0.0, 1.0, 900), rng.uniform(1.0, 4.0, 90),
                        np.array([-5.0, 9.0])])
    uniform = balanced_sampling_probs(z, 0.0, 0.0, 4.0, num_bins=4)
    np.testing.assert_allclose(uniform, 1.0 / z.size)
    p = balanced_sampling_probs(z, 1.0, 0.0, 4.0, num_bins=4)
    assert abs(p.sum() - 1.0) < 1e-12 and np.all(p > 0)
    bins = np.clip(np.floor(z), 0, 3).astype(int)
    np.testing.assert_allclose(np.bincount(bins, weights=p, minlength=4), 0.25, atol=1e-12)
    assert p[-2] == p[bins == 0][0] and p[-1] == p[bins == 3][0]   # outliers: edge bins
    half = balanced_sampling_probs(z, 0.5, 0.0, 4.0, num_bins=4)
    mass = lambda q: q[z >= 1.0].sum()                               # noqa: E731
    assert mass(uniform) < mass(half) < mass(p)
    for bad, match in (((z, 1.5, 0.0, 4.0), r"condition_balance=1.5 must be in \[0, 1\]"),
                       ((z, -0.1, 0.0, 4.0), "must be in"),
                       ((z, 1.0, 4.0, 0.0), "lo < hi"),
                       ((np.array([np.nan]), 1.0, 0.0, 1.0), "finite condition values")):
        with pytest.raises(ValueError, match=match):
            balanced_sampling_probs(*bad)
    with pytest.raises(ValueError, match="num_bins"):
        balanced_sampling_probs(z, 1.0, 0.0, 4.0, num_bins=0)
    # The conditioner bins its zoo's p05-p95 of log-loss; a constant metric draws uniformly.
    losses = np.exp(z - 3.0)
    cond = Conditioner.fit("train_loss", losses)
    q = cond.sampling_probs(losses, 1.0)
    lo, hi = np.log(cond.prompts["p05"]), np.log(cond.prompts["p95"])
    np.testing.assert_allclose(q, balanced_sampling_probs(z - 3.0, 1.0, lo, hi))
    flat = np.full(10, 0.3)
    np.testing.assert_allclose(Conditioner.fit("train_loss", flat).sampling_probs(flat, 1.0),
                               0.1)


def test_balanced_batches_draw_rare_conditions_more_often():
    config, space, coords = _batch_setup(200, 32, "independent")
    # 180 networks at low loss, 20 spread over a sparse high-loss tail.
    values = np.concatenate([np.linspace(0.10, 0.12, 180), np.linspace(0.2, 1.0, 20)])
    cond = Conditioner.fit("train_loss", values.astype(np.float32))
    stats = recipe.fit_field_stats(config, coords)

    def tail_fraction(balance):
        with config.unlocked():
            config.flow.condition_balance = balance
        run = recipe.build_flow(config, space, jax.random.key(0), stats, cond)
        batch_fn = recipe.make_batch_fn(run, coords, jax.random.key(1), values)
        c = np.concatenate([np.asarray(batch_fn(s)["c"]) for s in range(20)])
        np.testing.assert_array_equal(np.asarray(batch_fn(3)["c"]),
                                      np.asarray(batch_fn(3)["c"]))   # a function of the step
        c = c[np.isfinite(c)]
        assert np.all(np.isin(c, values.astype(np.float32)))
        return float(np.mean(c > 0.15))

    plain, balanced = tail_fraction(0.0), tail_fraction(1.0)
    assert plain < 0.2 < 0.5 < balanced, (plain, balanced)
    with config.unlocked():
        config.flow.condition_balance = 2.0
    run = recipe.build_flow(config, space, jax.random.key(0), stats, cond)
    with pytest.raises(ValueError, match="condition_balance=2.0"):
        recipe.make_batch_fn(run, coords, jax.random.key(1), values)
    with config.unlocked():
        config.flow.condition_balance = -0.5
    run = recipe.build_flow(config, space, jax.random.key(0), stats, cond)
    with pytest.raises(ValueError, match="condition_balance=-0.5"):
        recipe.make_batch_fn(run, coords, jax.random.key(1), values)
    plain_config = _config("mlp", "none")
    with plain_config.unlocked():
        plain_config.flow.condition_balance = 1.0
    plain = recipe.build_flow(plain_config, space, jax.random.key(0), stats)
    with pytest.raises(ValueError, match="balances a conditioned flow"):
        recipe.make_batch_fn(plain, coords, jax.random.key(1))


K = 3
STEPS = 500


def test_conditioned_field_samples_the_network_of_its_prompt():
    """Three networks, three losses: prompted with one, the sampler lands on its network."""
    config = _config("mlp", width=32, num_blocks=2, time_features=16)
    with config.unlocked():
        config.flow.coupling = "independent"
    space = flows.FlowSpace("geometric", SIZES)
    x1s = space.encode(jax.vmap(lambda k: mlp.init(k, SIZES, w_std=0.7, b_std=0.3))(
        jax.random.split(jax.random.key(0), K)))
    values = np.array([0.1, 0.4, 1.6], np.float32)
    cond = Conditioner.fit("train_loss", values)
    run = recipe.build_flow(config, space, jax.random.key(1),
                            recipe.fit_field_stats(config, jax.tree.map(np.asarray, x1s)), cond)
    n = 64

    def batch(key):
        ki, k0, kd = jax.random.split(key, 3)
        idx = jax.random.randint(ki, (n,), 0, K)
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(jax.random.split(k0, n))
        c = jnp.where(jax.random.uniform(kd, (n,)) < 0.1, jnp.nan, jnp.asarray(values)[idx])
        return {"x0": x0, "x1": jax.tree.map(lambda a: a[idx], x1s), "c": c}

    params, losses = fit(recipe.make_loss_fn(run), run.variables["params"], batch, STEPS)
    run.variables = {"params": params}
    assert float(losses[-50:].mean()) < 0.5 * float(losses[:20].mean())
    data = jax.vmap(space.retract)(x1s)

    def nearest(predict):
        s = sampling.sample_coords(space, predict, jax.random.key(4), 16, steps=32,
                                   prior_std=0.1)
        d = jax.vmap(lambda a: jax.vmap(lambda c: product.sq_dist(space.path_spec, a, c))(
            data))(jax.tree.map(jnp.asarray, s))
        return np.asarray(jnp.argmin(d, axis=1)), np.asarray(jnp.min(d, axis=1))

    for k in range(K):
        which, dist = nearest(run.predict_fn(condition=float(values[k])))
        assert (which == k).mean() >= 0.9, (k, which)
        guided_which, _ = nearest(run.predict_fn(condition=float(values[k]),
                                                 condition_weight=2.0))
        assert (guided_which == k).mean() >= 0.9, (k, guided_which)
    which, _ = nearest(run.predict_fn())  # unconditional: every network
    assert len(set(which.tolist())) >= 2
    same = run.predict_fn(condition=0.4, condition_weight=1.0)
    x = jax.tree.map(lambda a: a[:2], data)
    ref = run.field.apply(run.variables, x, 0.5, jnp.float32(0.4))
    for a, b in zip(jax.tree.leaves(same(x, 0.5)), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    with pytest.raises(ValueError, match="condition_weight must be finite"):
        run.predict_fn(condition=0.4, condition_weight=float("inf"))
