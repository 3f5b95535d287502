"""Tests for fine-tuning curves (vmapped optax training)."""

import jax
import numpy as np
import pytest

from weightflow_jax import evaluation as ev

SIZES = (6, 8, 3)


@pytest.fixture(scope="module")
def task():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3))
    x = rng.normal(size=(384, 6)).astype(np.float32)
    y = np.argmax(x @ w, -1).astype(np.int32)
    return x[:256], y[:256], x[256:], y[256:]


@pytest.fixture(scope="module")
def trained(task):
    init = ev.random_init(jax.random.key(0), SIZES, 3, w_std=0.5)
    res = ev.finetune_curves(init, *task, key=jax.random.key(1), epochs=4, batch_size=32,
                             optimizer="adam", learning_rate=3e-2)
    return init, res


def test_curve_shapes_and_learning(task, trained):
    init, res = trained
    assert res["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert res["test_accuracy"].shape == (3, 5) and res["test_loss"].shape == (3, 5)
    assert res["train_loss"].shape == (3, 4)
    acc0, loss0 = ev.accuracy_and_loss(init, task[2], task[3])
    np.testing.assert_allclose(res["test_accuracy"][:, 0], acc0)
    np.testing.assert_allclose(res["test_loss"][:, 0], loss0, rtol=1e-6)
    acc_end, _ = ev.accuracy_and_loss(res["params"], task[2], task[3])
    np.testing.assert_allclose(res["test_accuracy"][:, -1], acc_end)
    assert res["test_accuracy"][:, -1].mean() > res["test_accuracy"][:, 0].mean() + 0.2
    assert res["test_accuracy"][:, -1].mean() > 0.85
    assert np.all(res["train_loss"][:, -1] < res["train_loss"][:, 0])


def test_trained_init_starts_ahead_of_random(task, trained):
    _, res = trained
    curves = ev.compare_inits({"given": res["params"],
                               "random": ev.random_init(jax.random.key(5), SIZES, 3)},
                              *task, key=jax.random.key(2), epochs=1, batch_size=64,
                              optimizer="sgd", learning_rate=0.05)
    assert sorted(curves) == ["given", "random"]
    assert "params" not in curves["given"]
    g, r = curves["given"]["test_accuracy"], curves["random"]["test_accuracy"]
    assert g.shape == r.shape == (3, 2)
    assert g[:, 0].mean() > r[:, 0].mean() + 0.3
    res = ev.FinetuneEvaluator(*task, epochs=1, batch_size=64).run(res["params"])
    assert res["given"]["test_accuracy"][:, 0].mean() > res["random"]["test_accuracy"][:, 0].mean()


def test_finetune_bad_input(task, trained):
    init, _ = trained
    x, y, xt, yt = task
    with pytest.raises(ValueError, match="batch_size must lie in"):
        ev.finetune_curves(init, x[:10], y[:10], xt, yt, key=jax.random.key(0), batch_size=32)
    with pytest.raises(ValueError, match=r"training inputs have 5 features but the networks "
                                         r"take 6"):
        ev.finetune_curves(init, x[:, :5], y, xt, yt, key=jax.random.key(0))
    with pytest.raises(ValueError, match="unknown optimizer"):
        ev.finetune_curves(init, x, y, xt, yt, key=jax.random.key(0), optimizer="lbfgs")
