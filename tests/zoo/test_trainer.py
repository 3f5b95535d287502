"""Vmapped zoo training: schedule, determinism, equality with single-network training."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.zoo._util import small_config, teacher_data
from weightflow_jax import mlp
from weightflow_jax.zoo import build, trainer

DATA = teacher_data()


@pytest.fixture(scope="module")
def zoo3():
    return build.train_zoo(small_config(), DATA)


def test_snapshot_schedule_math():
    c = small_config(num_epochs=5, burn_in_epochs=2, batch_size=10, snapshot_every=3)
    steps, epochs = trainer.snapshot_schedule(c, 105)  # S = 10 iterations per epoch
    assert trainer.steps_per_epoch(c, 105) == 10
    np.testing.assert_array_equal(steps, [23, 26, 29, 33, 36, 39, 43, 46, 49])
    np.testing.assert_array_equal(epochs, [2, 2, 2, 3, 3, 3, 4, 4, 4])
    assert trainer.num_snapshots(c, 105) == 3 * 9
    # k divides S: the last snapshot is the final network.
    c2 = small_config(num_epochs=2, burn_in_epochs=0, batch_size=10, snapshot_every=5)
    steps2, _ = trainer.snapshot_schedule(c2, 100)
    np.testing.assert_array_equal(steps2, [5, 10, 15, 20])


def test_early_dense_window_schedule():
    # S = 10, k = 5, a snapshot every iteration over the first 5: epoch 0 keeps 1..5 and 10.
    c = small_config(num_epochs=2, burn_in_epochs=0, batch_size=10, snapshot_every=5,
                     early_snapshot_every=1, early_snapshot_steps=5)
    steps, epochs = trainer.snapshot_schedule(c, 100)
    np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5, 10, 15, 20])
    np.testing.assert_array_equal(epochs, [0, 0, 0, 0, 0, 0, 1, 1])
    assert trainer.num_snapshots(c, 100) == 3 * 8
    assert trainer.epoch_segments(c, 100, 0) == ((1, 5), (5, 1))
    assert trainer.epoch_segments(c, 100, 1) == ((5, 2),)
    # a window as long as the epoch leaves no regular block in it
    c.early_snapshot_every, c.early_snapshot_steps = 2, 10
    np.testing.assert_array_equal(trainer.snapshot_schedule(c, 100)[0], [2, 4, 6, 8, 10, 15, 20])


@pytest.mark.parametrize("kw, match", [
    (dict(early_snapshot_every=1, early_snapshot_steps=4), "burn_in_epochs=0"),
    (dict(burn_in_epochs=0, early_snapshot_every=1), "both positive"),
    (dict(burn_in_epochs=0, early_snapshot_every=3, early_snapshot_steps=4), "multiple"),
    (dict(burn_in_epochs=0, early_snapshot_every=1, early_snapshot_steps=3), "multiple"),
    (dict(burn_in_epochs=0, early_snapshot_every=2, early_snapshot_steps=8), "at most"),
])
def test_early_dense_window_bad_input(kw, match):
    # small_config: S = 6 iterations per epoch on 96 rows, snapshot_every 2
    with pytest.raises(ValueError, match=match):
        trainer.snapshot_schedule(small_config(**kw), 96)


@pytest.mark.parametrize("kw, match", [
    (dict(snapshot_every=11, batch_size=10), "snapshot_every"),
    (dict(snapshot_every=0), "snapshot_every"),
    (dict(burn_in_epochs=3, num_epochs=3), "burn_in_epochs"),
    (dict(batch_size=200), "batch_size"),
    (dict(num_runs=0), "num_runs"),
])
def test_schedule_bad_input(kw, match):
    with pytest.raises(ValueError, match=match):
        trainer.snapshot_schedule(small_config(**kw), 100)


def test_zoo_layout(zoo3):
    c = small_config()
    s = trainer.steps_per_epoch(c, 96)  # 6
    per_run = (c.num_epochs - c.burn_in_epochs) * (s // c.snapshot_every)
    assert zoo3.num_snapshots == c.num_runs * per_run == 18
    np.testing.assert_array_equal(zoo3.run_id, np.repeat(np.arange(3), per_run))
    np.testing.assert_array_equal(zoo3.step[:per_run], [8, 10, 12, 14, 16, 18])
    np.testing.assert_array_equal(zoo3.epoch[:per_run], [1, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(zoo3.final_indices(), [5, 11, 17])
    assert mlp.validate(zoo3.params, batched=True) == (6, 5, 4, 3)
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert zoo3.metrics[k].shape == (18,) and np.all(np.isfinite(zoo3.metrics[k]))
    assert zoo3.metrics["epoch_train_loss"].shape == (3, 3)
    # Stored metrics are those of the stored weights.
    loss, acc = trainer.evaluate(zoo3.params, DATA.x_test, DATA.y_test)
    np.testing.assert_allclose(loss, zoo3.metrics["test_loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(acc, zoo3.metrics["test_acc"])


def test_deterministic_for_a_seed(zoo3):
    again = build.train_zoo(small_config(), DATA)
    for (w, b), (w2, b2) in zip(zoo3.params, again.params):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    other = build.train_zoo(small_config(seed=1), DATA)
    assert not np.allclose(other.params[0][0], zoo3.params[0][0])


def test_runs_independent_of_num_runs(zoo3):
    two = build.train_zoo(small_config(num_runs=2), DATA)
    n = two.num_snapshots
    for (w, b), (w3, b3) in zip(two.params, zoo3.params):
        np.testing.assert_allclose(w, w3[:n], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b, b3[:n], rtol=1e-5, atol=1e-6)
    # and the runs differ from each other (independent inits and orders)
    assert not np.allclose(zoo3.params[0][0][5], zoo3.params[0][0][11])


def _train_one_alone(c, run: int, data, keep=None) -> list:
    """Plain single-network training of run ``run`` with a Python loop; its snapshots
    (after the global steps in ``keep``, default: every ``snapshot_every`` iterations of the
    kept epochs)."""
    n = data.x_train.shape[0]
    s = trainer.steps_per_epoch(c, n)
    b = c.batch_size
    state = trainer.init_state(c)
    params = jax.tree_util.tree_map(lambda a: a[run], state.params)
    opt = trainer.make_optimizer(c.optimizer)
    opt_state = opt.init(params)
    step = jax.jit(trainer.make_step(opt))
    snaps = []
    for e in range(c.num_epochs):
        perm = np.asarray(trainer.epoch_permutations(c, np.arange(c.num_runs), e, n))
        perm = perm if c.same_batch_order else perm[run]
        for i in range(s):
            idx = perm[i * b:(i + 1) * b]
            params, opt_state, _ = step(params, opt_state, data.x_train[idx],
                                        data.y_train[idx])
            if keep is not None:
                if e * s + i + 1 in keep:
                    snaps.append(params)
            elif e >= c.burn_in_epochs and (i + 1) % c.snapshot_every == 0:
                snaps.append(params)
    return snaps


@pytest.mark.parametrize("overrides", [
    {},
    {"same_batch_order": True, "optimizer.name": "sgd", "optimizer.momentum": 0.9,
     "optimizer.weight_decay": 1e-3},
])
def test_vmapped_equals_single_network(zoo3, overrides):
    c = small_config(**overrides)
    zoo = zoo3 if not overrides else build.train_zoo(c, DATA)
    alone = _train_one_alone(c, 1, DATA)
    idx = np.flatnonzero(zoo.run_id == 1)
    assert len(alone) == len(idx)
    for j, p in zip(idx, alone):
        for (w, b), (wz, bz) in zip(p, zoo.params):
            np.testing.assert_allclose(np.asarray(w), wz[j], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(b), bz[j], rtol=1e-5, atol=1e-6)


def test_early_dense_window_equals_single_network():
    """The early window's snapshots are the weights after exactly those steps, and the
    training itself is unchanged (same final networks as without the window)."""
    c = small_config(burn_in_epochs=0, early_snapshot_every=1, early_snapshot_steps=4,
                     snapshot_every=2)
    zoo = build.train_zoo(c, DATA)
    # S = 6: epoch 0 keeps steps 1, 2, 3, 4, 6; epochs 1, 2 keep 8, 10, 12 and 14, 16, 18
    idx = np.flatnonzero(zoo.run_id == 2)
    np.testing.assert_array_equal(zoo.step[idx], [1, 2, 3, 4, 6, 8, 10, 12, 14, 16, 18])
    alone = _train_one_alone(c, 2, DATA, keep=set(zoo.step[idx].tolist()))
    assert len(alone) == len(idx)
    for j, p in zip(idx, alone):
        for (w, b), (wz, bz) in zip(p, zoo.params):
            np.testing.assert_allclose(np.asarray(w), wz[j], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(np.asarray(b), bz[j], rtol=1e-5, atol=1e-6)
    plain = build.train_zoo(small_config(burn_in_epochs=0, snapshot_every=2), DATA)
    np.testing.assert_array_equal(zoo.final_indices() - plain.final_indices(),
                                  2 * np.arange(1, 4))  # 2 extra snapshots per run (1, 3)
    for (w, b), (wp, bp) in zip(zoo.params, plain.params):
        np.testing.assert_allclose(w[zoo.final_indices()], wp[plain.final_indices()],
                                   rtol=1e-6, atol=1e-7)
    assert zoo.meta["early_snapshot_every"] == 1 and zoo.meta["snapshots_per_run"] == 11


def test_same_batch_order_shares_minibatches():
    c = small_config(same_batch_order=True)
    p = trainer.epoch_permutations(c, np.arange(3), 0, 96)
    assert p.shape == (96,)
    c2 = small_config()
    p2 = np.asarray(trainer.epoch_permutations(c2, np.arange(3), 0, 96))
    assert p2.shape == (3, 96)
    assert not np.array_equal(p2[0], p2[1])
    np.testing.assert_array_equal(np.sort(p2[1]), np.arange(96))
    assert not np.array_equal(p2[0], np.asarray(trainer.epoch_permutations(c2, np.arange(3), 1,
                                                                           96))[0])


def test_init_schemes():
    c = small_config(arch="400-300-3", num_runs=2)
    c.init.scheme = "normal"
    c.init.w_std = 0.1
    p = trainer.init_params(c, np.arange(2))
    assert abs(float(np.std(p[0][0])) - 0.1) < 0.005
    np.testing.assert_array_equal(p[0][1], 0.0)
    c.init.scheme = "he"
    p = trainer.init_params(c, np.arange(2))
    assert abs(float(np.std(p[0][0])) - np.sqrt(2 / 400)) < 0.005
    c.init.scheme = "xavier"
    with pytest.raises(ValueError, match="init.scheme"):
        trainer.init_params(c, np.arange(2))


def test_optimizer_bad_name():
    c = small_config()
    c.optimizer.name = "rmsprop"
    with pytest.raises(ValueError, match="unknown optimizer"):
        trainer.make_optimizer(c.optimizer)


def test_check_data_errors():
    c = small_config()
    bad = trainer.Dataset(DATA.x_train[:, :4], DATA.y_train, DATA.x_test, DATA.y_test)
    with pytest.raises(ValueError, match="takes 6 inputs"):
        trainer.check_data(c, bad)
    bad = trainer.Dataset(DATA.x_train, DATA.y_train + 5, DATA.x_test, DATA.y_test)
    with pytest.raises(ValueError, match="3 outputs"):
        trainer.check_data(c, bad)


def test_evaluate_chunking_and_padding(zoo3):
    full = trainer.evaluate(zoo3.params, DATA.x_test, DATA.y_test, chunk_size=64)
    chunked = trainer.evaluate(zoo3.params, DATA.x_test, DATA.y_test, chunk_size=5)
    np.testing.assert_allclose(full[0], chunked[0], rtol=1e-6)
    np.testing.assert_array_equal(full[1], chunked[1])
    one = [(w[7], b[7]) for w, b in zoo3.params]
    logits = mlp.forward(one, DATA.x_test)
    assert np.isclose(full[1][7], np.mean(np.argmax(logits, -1) == DATA.y_test))


def test_compact_inputs_exact():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 256, (5, 7)).astype(np.float32) / np.float32(255.0)
    c = trainer.compact_inputs(px)
    assert c.dtype == np.uint8
    np.testing.assert_array_equal(c.astype(np.float32) / np.float32(255.0), px)
    back = np.asarray(jax.jit(lambda u: u.astype(jnp.float32) / jnp.float32(255.0))(c))
    np.testing.assert_array_max_ulp(back, px, maxulp=1)  # XLA may use a reciprocal
    assert trainer.compact_inputs(px + 1e-3).dtype == np.float32
    assert trainer.compact_inputs(-px).dtype == np.float32


def test_pixel_inputs_train_like_floats():
    """uint8-compacted pixel inputs give the same training as float inputs."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (96, 6)).astype(np.float32) / np.float32(255.0)
    y = rng.integers(0, 3, 96).astype(np.int32)
    c = small_config()
    data = trainer.Dataset(x, y, DATA.x_test, DATA.y_test)
    zoo = build.train_zoo(c, data)
    alone = _train_one_alone(c, 0, data)
    for (w, _), (wz, _) in zip(alone[-1], zoo.params):
        np.testing.assert_allclose(np.asarray(w), wz[zoo.final_indices()[0]], rtol=1e-5,
                                   atol=1e-6)


def test_loss_decreases_on_breast_cancer():
    from weightflow_jax import data as wdata
    x_tr, y_tr = wdata.load("breast_cancer", "train")
    x_te, y_te = wdata.load("breast_cancer", "test")
    from weightflow_jax.zoo import presets
    c = presets.zoo_config("breast_cancer", "test")
    c.num_epochs = 6
    zoo = build.train_zoo(c, trainer.Dataset(x_tr, y_tr, x_te, y_te))
    ep = zoo.metrics["epoch_train_loss"].mean(axis=1)
    assert ep[-1] < 0.5 * ep[0]
    assert np.all(np.diff(ep) < 0)
    assert zoo.metrics["test_acc"][zoo.final_indices()].mean() > 0.9


@pytest.mark.slow
def test_sharded_matches_single_device():
    """With 2 (fake CPU) devices, 4 runs are sharded; they match 3 unsharded runs."""
    code = textwrap.dedent("""
        import numpy as np, jax
        from tests.zoo._util import small_config, teacher_data
        from weightflow_jax.zoo import build, trainer
        assert jax.device_count() == 2
        data = teacher_data()
        assert trainer.network_sharding(4) is not None and trainer.network_sharding(3) is None
        a = build.train_zoo(small_config(num_runs=4), data)
        b = build.train_zoo(small_config(num_runs=3), data)
        n = b.num_snapshots
        for (w, _), (w2, _) in zip(a.params, b.params):
            np.testing.assert_allclose(w[:n], w2, rtol=1e-5, atol=1e-6)
        print("OK")
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout
