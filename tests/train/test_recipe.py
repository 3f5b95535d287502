"""The flow's training recipe on its own: schedule, EMA, batches with pair alignment, step."""

import jax
import numpy as np
import pytest

from tests.test_pipeline import SIZES, _clusters, _toy_config
from weightflow_jax import flows, train as train_lib
from weightflow_jax.train import recipe


def test_batch_fn_pair_alignment_shortens_pairs():
    space = flows.FlowSpace("geometric", (3, 4, 2))
    _, coords = _clusters(jax.random.key(3), space, n=64, noise=0.3)
    costs = {}
    for mode in ("none", "weight_matching"):
        config = _toy_config(steps=4, model="compact_rt")
        with config.unlocked():
            config.zoo.arch = "3-4-2"
            config.flow.pair_alignment = mode
        run = recipe.build_flow(config, space, jax.random.key(0),
                                recipe.fit_field_stats(config, coords))
        batch = recipe.make_batch_fn(run, coords, jax.random.key(1))(0)
        costs[mode] = float(flows.mean_pair_cost(space, batch["x0"], batch["x1"]))
    assert costs["weight_matching"] < costs["none"]
    bad = _toy_config(steps=4)
    with bad.unlocked():
        bad.flow.pair_alignment = "sorting"
    run = recipe.build_flow(bad, flows.FlowSpace("geometric", SIZES), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown pair_alignment 'sorting'"):
        recipe.make_batch_fn(run, coords, jax.random.key(1))


def test_schedule_and_ema_settings():
    config = _toy_config(steps=100)
    with config.unlocked():
        config.train.update(dict(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1,
                                 learning_rate=1e-3, ema_decay=0.0))
    sched = recipe.make_schedule(config)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(float(sched(10)), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(float(sched(100)), 1e-4, rtol=1e-5)
    assert recipe.ema_decay(config) is None
    with config.unlocked():
        config.train.ema_decay = 1.0
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        recipe.ema_decay(config)
    with config.unlocked():
        config.train.schedule = "linear"
    with pytest.raises(ValueError, match="unknown train.schedule 'linear'"):
        recipe.make_schedule(config)


def test_make_training_steps_and_keeps_the_ema_only_when_asked():
    config = _toy_config(steps=4, model="mlp")
    with config.unlocked():
        config.train.ema_decay = 0.9
    space = flows.FlowSpace("geometric", SIZES)
    _, coords = _clusters(jax.random.key(4), space, n=32)
    run = recipe.build_flow(config, space, jax.random.key(0),
                            recipe.fit_field_stats(config, coords))
    batch_fn = recipe.make_batch_fn(run, coords, jax.random.key(2))
    for ema in (True, False):
        state, step, mesh = recipe.make_training(run, jax.random.key(1), ema=ema)
        assert (state.ema_params is not None) == ema
        state, metrics = step(train_lib.replicate(state, mesh),
                              train_lib.shard_batch(batch_fn(0), mesh))
        assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
        variables = recipe.sampling_variables(state)
        want = state.ema_params if ema else state.params
        for a, b in zip(jax.tree.leaves(variables["params"]), jax.tree.leaves(want)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
