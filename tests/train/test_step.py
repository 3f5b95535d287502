"""TrainState, the jitted train step and batch sharding on the local device(s)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.train import _toy
from weightflow_jax import train

MESH1 = train.make_mesh(jax.devices()[:1])
OPT = _toy.optimizer()
STEP = train.make_train_step(_toy.loss_fn, OPT, MESH1, donate=False)


def fresh_state(**kw):
    return train.replicate(train.create_train_state(_toy.init_params(), OPT, jax.random.key(0),
                                                    **kw), MESH1)


def test_create_train_state_fields():
    state = train.create_train_state(_toy.init_params(), OPT, jax.random.key(3))
    assert state.step.dtype == jnp.int32 and int(state.step) == 0
    np.testing.assert_array_equal(state.rng, jax.random.key_data(jax.random.key(3)))
    assert state.ema_params is None
    # A raw key is accepted as is.
    raw = train.create_train_state(_toy.init_params(), OPT, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(raw.rng, state.rng)
    # It is a pytree: leaves are step, params, opt state, rng.
    n_opt = len(jax.tree.leaves(OPT.init(_toy.init_params())))
    assert len(jax.tree.leaves(state)) == 1 + 2 + n_opt + 1


def test_create_train_state_bad_input():
    with pytest.raises(ValueError, match="PRNG key"):
        train.create_train_state(_toy.init_params(), OPT, jnp.zeros(2))
    with pytest.raises(ValueError, match="optax.GradientTransformation"):
        train.create_train_state(_toy.init_params(), "adam", jax.random.key(0))
    with pytest.raises(ValueError, match="no array leaves"):
        train.create_train_state({}, OPT, jax.random.key(0))


def test_step_matches_manual_optax_update_and_rng_fold_in():
    state = fresh_state()
    batch = train.shard_batch(_toy.batch_fn(0), MESH1)
    new, metrics = STEP(state, batch)
    rng = jax.random.fold_in(state.rng, 0)
    (loss, aux), grads = jax.value_and_grad(_toy.loss_fn, has_aux=True)(
        _toy.init_params(), _toy.batch_fn(0), rng)
    updates, _ = OPT.update(grads, OPT.init(_toy.init_params()), _toy.init_params())
    expected = optax.apply_updates(_toy.init_params(), updates)
    assert int(new.step) == 1
    np.testing.assert_allclose(new.params["w"], expected["w"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(new.params["b"], expected["b"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-6)
    np.testing.assert_allclose(metrics["mae"], aux["mae"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    np.testing.assert_array_equal(new.rng, state.rng)  # the base key never changes


def test_step_uses_a_different_key_each_step():
    def loss_fn(params, batch, rng):
        draw = jax.random.uniform(rng)
        return jnp.sum(params["w"]) * 0.0, {"draw": draw}

    step = train.make_train_step(loss_fn, OPT, MESH1, donate=False)
    state = fresh_state()
    batch = train.shard_batch(_toy.batch_fn(0), MESH1)
    s1, m0 = step(state, batch)
    _, m1 = step(s1, batch)
    for i, m in enumerate((m0, m1)):
        expected = jax.random.uniform(jax.random.fold_in(state.rng, i))
        np.testing.assert_array_equal(m["draw"], expected)
    assert float(m0["draw"]) != float(m1["draw"])


def test_loss_falls():
    state = fresh_state()
    losses = []
    for i in range(60):
        state, metrics = STEP(state, train.shard_batch(_toy.batch_fn(i), MESH1))
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.02 * losses[0]
    np.testing.assert_allclose(state.params["w"], _toy.TRUE_W, atol=0.3)


def test_ema_update():
    step = train.make_train_step(_toy.loss_fn, OPT, MESH1, donate=False, ema_decay=0.9)
    state = fresh_state(ema=True)
    new, _ = step(state, train.shard_batch(_toy.batch_fn(0), MESH1))
    np.testing.assert_allclose(new.ema_params["w"], 0.1 * np.asarray(new.params["w"]),
                               atol=1e-7)
    # Warm-up: decay min(0.9, (1 + step) / (10 + step)) = 0.1 at the first update, then 2/11.
    warm = train.make_train_step(_toy.loss_fn, OPT, MESH1, donate=False, ema_decay=0.9,
                                 ema_warmup=True)
    s0 = fresh_state(ema=True)
    s1, _ = warm(s0, train.shard_batch(_toy.batch_fn(0), MESH1))
    expect = 0.1 * np.asarray(s0.params["w"]) + 0.9 * np.asarray(s1.params["w"])
    np.testing.assert_allclose(s1.ema_params["w"], expect, atol=1e-6)
    s2, _ = warm(s1, train.shard_batch(_toy.batch_fn(1), MESH1))
    expect = 2 / 11 * np.asarray(s1.ema_params["w"]) + 9 / 11 * np.asarray(s2.params["w"])
    np.testing.assert_allclose(s2.ema_params["w"], expect, atol=1e-6)
    with pytest.raises(ValueError, match="ema=True"):
        step(fresh_state(), train.shard_batch(_toy.batch_fn(0), MESH1))
    with pytest.raises(ValueError, match="ema_decay"):
        train.make_train_step(_toy.loss_fn, OPT, MESH1, ema_decay=1.0)


def test_donation_consumes_input_state():
    step = train.make_train_step(_toy.loss_fn, OPT, MESH1, donate=True)
    state = fresh_state()
    new, _ = step(state, train.shard_batch(_toy.batch_fn(0), MESH1))
    assert int(new.step) == 1
    assert state.params["w"].is_deleted()


def test_loss_fn_contract_errors():
    batch = train.shard_batch(_toy.batch_fn(0), MESH1)
    vec = train.make_train_step(lambda p, b, r: (jnp.sum(p["w"], 0), {}), OPT, MESH1)
    with pytest.raises(ValueError, match="scalar loss"):
        vec(fresh_state(), batch)
    bad_metric = train.make_train_step(lambda p, b, r: (jnp.sum(p["w"]), {"m": p["b"]}), OPT,
                                       MESH1)
    with pytest.raises(ValueError, match="metric 'm' must be a scalar"):
        bad_metric(fresh_state(), batch)


def test_shard_batch_layout_and_errors():
    batch = train.shard_batch({"x": np.ones((4, 3)), "y": (np.zeros(4), np.arange(4))}, MESH1)
    assert batch["x"].sharding == train.batch_sharding(MESH1)
    np.testing.assert_array_equal(batch["y"][1], np.arange(4))
    again = train.shard_batch(batch, MESH1)
    assert again["x"] is batch["x"]  # already sharded: passed through
    with pytest.raises(ValueError, match="different leading"):
        train.shard_batch({"x": np.ones((4, 3)), "y": np.ones(5)}, MESH1)
    with pytest.raises(ValueError, match=r"\['s'\] is a scalar"):
        train.shard_batch({"x": np.ones((4, 3)), "s": np.float32(1.0)}, MESH1)
    with pytest.raises(ValueError, match="no array leaves"):
        train.shard_batch({}, MESH1)


def test_make_mesh():
    mesh = train.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
    with pytest.raises(ValueError, match="no devices"):
        train.make_mesh([])
