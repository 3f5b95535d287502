"""train_loop: loss falls, resume is exact, NaN stops cleanly, other configs are refused."""

import functools

import jax
import numpy as np
import pytest

from tests.train import _toy
from tests.train.test_metric_log import read_events
from weightflow_jax import train

MESH1 = train.make_mesh(jax.devices()[:1])
OPT = _toy.optimizer()
STEP = train.make_train_step(_toy.loss_fn, OPT, MESH1)  # shared: compiled once
CONFIG = {"model": {"in": 3, "out": 2}, "lr": _toy.LR, "num_steps": 30, "log_every": 5}


def fresh_state():
    return train.create_train_state(_toy.init_params(), OPT, jax.random.key(0))


def run(workdir, num_steps, *, batch_fn=_toy.batch_fn, hooks=(), config=CONFIG,
        checkpoint_every=10, log_every=5):
    return train.train_loop(fresh_state(), STEP, batch_fn, num_steps=num_steps,
                            workdir=str(workdir), checkpoint_every=checkpoint_every,
                            log_every=log_every, config=config, hooks=hooks, progress=False)


def assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    state, summary = run(workdir, 30)
    return workdir, state, summary


def test_loss_falls_and_everything_is_written(uninterrupted):
    workdir, state, summary = uninterrupted
    assert int(state.step) == 30
    assert (summary.start_step, summary.final_step, summary.steps_run) == (0, 30, 30)
    assert summary.steps_per_sec > 0 and summary.wall_time_s > 0
    assert summary.peak_rss_mb > 50 and not summary.stopped_early
    assert summary.last_checkpoint == 30
    records = train.read_metrics(workdir)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30]
    assert records[-1]["loss"] < 0.05 * records[0]["loss"]
    assert summary.last_metrics["loss"] == pytest.approx(records[-1]["loss"])
    assert {"loss", "mae", "grad_norm", "steps_per_sec"} <= set(records[0])
    assert [s for s, _ in read_events(workdir)["loss"]] == [5, 10, 15, 20, 25, 30]
    assert train.load_config(workdir) == CONFIG
    with train.CheckpointStore(workdir) as store:
        assert store.all_steps() == [10, 20, 30]


def test_interrupted_run_resumes_to_identical_params(tmp_path, uninterrupted):
    _, reference, _ = uninterrupted

    def crash(step, state, metrics):
        if step == 17:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path, 30, hooks=[crash])
    with train.CheckpointStore(tmp_path) as store:
        assert store.all_steps() == [10]
    state, summary = run(tmp_path, 30)
    assert summary.start_step == 10 and summary.steps_run == 20
    assert_trees_equal(state, reference)  # params, opt state, step, rng: bit-identical
    # The log was cut back to the checkpoint and continued: each step once.
    assert [r["step"] for r in train.read_metrics(tmp_path)] == [5, 10, 15, 20, 25, 30]


def test_stop_training_hook_saves_and_resumes(tmp_path, uninterrupted):
    ref_dir, _, _ = uninterrupted

    def stop(step, state, metrics):
        if step == 13:
            raise train.StopTraining()

    state, summary = run(tmp_path, 20, hooks=[stop], config={**CONFIG, "num_steps": 20})
    assert summary.stopped_early and summary.final_step == 13 and int(state.step) == 13
    assert summary.last_checkpoint == 13
    state, summary = run(tmp_path, 20, config={**CONFIG, "num_steps": 20})
    assert summary.start_step == 13 and int(state.step) == 20
    reference = train.CheckpointStore(ref_dir).restore(state, step=20)
    assert_trees_equal(state, reference)


@pytest.mark.parametrize("nan_at, detected_step, last_good", [(22, 23, 20), (19, 20, 10)])
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, nan_at, detected_step,
                                                       last_good):
    batch_fn = functools.partial(_toy.batch_fn, nan_at=nan_at)
    with pytest.raises(train.NonFiniteLossError) as info:
        run(tmp_path, 30, batch_fn=batch_fn)
    err = info.value
    assert err.step == detected_step and err.last_checkpoint == last_good
    assert np.isnan(err.metrics["loss"])
    assert f"at step {detected_step}" in str(err) and "loss=nan" in str(err)
    assert f"last good checkpoint is step {last_good}" in str(err)
    with train.CheckpointStore(tmp_path) as store:
        assert store.latest_step() == last_good
        restored = store.restore(train.replicate(fresh_state(), MESH1))
    assert int(restored.step) == last_good
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))
    assert train.read_metrics(tmp_path)[-1]["step"] <= last_good + 5


def test_resume_refused_for_another_config(tmp_path):
    run(tmp_path, 5, config={**CONFIG, "num_steps": 5})
    other = {**CONFIG, "model": {"in": 3, "out": 4}}
    with pytest.raises(train.ConfigMismatchError, match=r"model\.out: stored 2 != new 4"):
        run(tmp_path, 8, config=other)
    # Safe fields (total steps, logging interval) may change; the run continues.
    state, summary = run(tmp_path, 8, config={**CONFIG, "num_steps": 8, "log_every": 4},
                         log_every=4)
    assert summary.start_step == 5 and int(state.step) == 8
    assert train.load_config(tmp_path)["num_steps"] == 8


def test_resume_of_a_finished_run_and_bad_arguments(tmp_path, uninterrupted):
    ref_dir, reference, _ = uninterrupted
    state, summary = run(ref_dir, 30)
    assert summary.steps_run == 0 and np.isnan(summary.steps_per_sec)
    assert_trees_equal(state, reference)
    with pytest.warns(UserWarning, match="past num_steps"):
        state, _ = run(ref_dir, 20)
    assert int(state.step) == 30
    for name in ("checkpoint_every", "log_every"):
        with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
            run(tmp_path, 5, **{name: 0})
