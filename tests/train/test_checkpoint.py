"""Orbax checkpoints (round trip, retention, half-written saves) and config compatibility."""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.train import _toy
from weightflow_jax import train

MESH1 = train.make_mesh(jax.devices()[:1])
OPT = _toy.optimizer()
STEP = train.make_train_step(_toy.loss_fn, OPT, MESH1, donate=False, ema_decay=0.5)


def trained_state(n=3):
    state = train.replicate(train.create_train_state(_toy.init_params(), OPT,
                                                     jax.random.key(7), ema=True), MESH1)
    for i in range(n):
        state, _ = STEP(state, train.shard_batch(_toy.batch_fn(i), MESH1))
    return state


def assert_trees_equal(a, b):
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_identical(tmp_path):
    state = trained_state()
    fresh = train.replicate(train.create_train_state(_toy.init_params(), OPT,
                                                     jax.random.key(0), ema=True), MESH1)
    with train.CheckpointStore(tmp_path) as store:
        assert store.latest_step() is None
        assert store.save(3, state)
        assert not store.save(3, state)  # an existing step is not overwritten
        restored = store.restore(fresh)
    assert_trees_equal(restored, state)
    assert restored.params["w"].sharding == train.replicated_sharding(MESH1)
    # The functional form finds it too.
    assert_trees_equal(train.restore_or_init(tmp_path, fresh), state)


def test_restore_or_init_on_empty_workdir_returns_the_given_state(tmp_path):
    fresh = train.create_train_state(_toy.init_params(), OPT, jax.random.key(0))
    assert train.restore_or_init(tmp_path / "new", fresh) is fresh


def test_keeps_only_the_last_n(tmp_path):
    state = trained_state(1)
    with train.CheckpointStore(tmp_path, max_to_keep=2) as store:
        for step in (10, 20, 30):
            store.save(step, state)
        assert store.all_steps() == [20, 30]
    with train.CheckpointStore(tmp_path) as store:
        with pytest.raises(FileNotFoundError, match="no checkpoint 10"):
            store.restore(state, step=10)
    with pytest.raises(ValueError, match="max_to_keep"):
        train.CheckpointStore(tmp_path, max_to_keep=0)


def test_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    early, late = trained_state(1), trained_state(2)
    with train.CheckpointStore(tmp_path) as store:
        store.save(1, early)
    ckpt_dir = tmp_path / "checkpoints"
    # What a save cut short leaves: orbax's temporary directory, with partial content.
    partial = ckpt_dir / "2.orbax-checkpoint-tmp-1700000000"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_bytes(b"\x00" * 10)
    fresh = train.replicate(train.create_train_state(_toy.init_params(), OPT,
                                                     jax.random.key(0), ema=True), MESH1)
    with train.CheckpointStore(tmp_path) as store:
        assert store.all_steps() == [1]
        restored = store.restore_or_init(fresh)
        assert int(restored.step) == 1
        assert_trees_equal(restored, early)
        store.save(2, late)  # the step can be written for real afterwards
        assert store.all_steps() == [1, 2]
    assert not partial.exists()


def test_config_json_canonical_and_differences(tmp_path):
    cfg = ml_collections.ConfigDict({"model": {"width": 64, "arch": (3, 4)}, "lr": 1e-3,
                                     "num_steps": 100})
    as_dict = {"num_steps": 100, "lr": 1e-3, "model": {"arch": [3, 4], "width": 64}}
    assert train.canonical_config_json(cfg) == train.canonical_config_json(as_dict)
    train.save_config(tmp_path, cfg)
    assert train.load_config(tmp_path) == json.loads(train.canonical_config_json(cfg))
    # Same config, or only safe fields changed: fine.
    train.check_config_compatible(tmp_path, as_dict)
    train.check_config_compatible(tmp_path, {**as_dict, "num_steps": 5000})
    # A fresh workdir: fine.
    train.check_config_compatible(tmp_path / "fresh", {"anything": 1})
    # A real difference is refused, naming the field and both values.
    other = {**as_dict, "model": {"arch": [3, 4], "width": 128}}
    with pytest.raises(train.ConfigMismatchError, match=r"model\.width: stored 64 != new 128"):
        train.check_config_compatible(tmp_path, other)
    with pytest.raises(ValueError, match=r"\(lr, seed\)"):
        train.check_config_compatible(tmp_path, {**as_dict, "lr": 0.1, "seed": 3})
    diffs = train.config_differences(as_dict, {**as_dict, "seed": 3, "num_steps": 1})
    assert diffs == {"seed": ("<missing>", 3)}


def test_added_fields_read_as_their_default_when_missing():
    old = {"zoo": {"snapshot_every": 25}}  # written before zoo.early_snapshot_* existed
    new = {"zoo": {"snapshot_every": 25, "early_snapshot_every": 0, "early_snapshot_steps": 0}}
    assert train.config_differences(old, new) == {}
    new["zoo"]["early_snapshot_every"] = 5
    assert train.config_differences(old, new) == {"zoo.early_snapshot_every": (0, 5)}
    assert set(train.config_differences(old, new, added_defaults={})) == {
        "zoo.early_snapshot_every", "zoo.early_snapshot_steps"}


def test_fields_added_after_runs_read_as_before():
    """Runs from before ``flow.loss_weighting`` match the fixed default unless they trained
    the normalized flow, whose loss was weighed per entry then."""
    for kind, stale in (("geometric", False), ("euclidean", False), ("normalized", True)):
        old = {"flow": {"kind": kind}}
        new = {"flow": {"kind": kind, "loss_weighting": "point"}}
        got = train.config_differences(old, new)
        assert got == ({"flow.loss_weighting": ("entry", "point")} if stale else {}), kind
        new["flow"]["loss_weighting"] = "entry"
        assert bool(train.config_differences(old, new)) is (not stale), kind
        # What the code reads for a config without the field is the same value.
        assert train.config_field(old, "flow.loss_weighting") == ("entry" if stale
                                                                   else "point"), kind
        assert train.config_field(new, "flow.loss_weighting") == "entry"
    with pytest.raises(KeyError, match="not one of the fields added later"):
        train.config_field({"flow": {}}, "flow.no_such_field")
    # Runs from before balanced draws drew their networks uniformly.
    assert train.config_field({"flow": {}}, "flow.condition_balance") == 0.0
    old = {"flow": {"kind": "geometric"}}
    assert train.config_differences(old, {"flow": {"kind": "geometric",
                                                   "condition_balance": 0.0}}) == {}
    assert train.config_differences(old, {"flow": {"kind": "geometric",
                                                   "condition_balance": 1.0}}) == {
        "flow.condition_balance": (0.0, 1.0)}


def test_safe_fields_by_leaf_name_or_dotted_path():
    old = {"a": {"log_every": 1, "x": 1}, "b": {"x": 1}}
    new = {"a": {"log_every": 2, "x": 2}, "b": {"x": 2}}
    assert set(train.config_differences(old, new)) == {"a.x", "b.x"}
    assert set(train.config_differences(old, new, safe_fields={"a.x"})) == {"a.log_every",
                                                                           "b.x"}
    with pytest.raises(ValueError, match="must be a mapping"):
        train.config_to_dict([1, 2])


def test_config_values_are_canonicalized():
    cfg = {"f": jnp.tanh, "n": np.int64(3), "a": np.arange(2), "p": (1, (2, 3))}
    plain = train.config_to_dict(cfg)
    assert plain["n"] == 3 and isinstance(plain["n"], int)
    assert plain["a"] == [0, 1] and plain["p"] == [1, [2, 3]]
    assert "0x" not in plain["f"]  # no memory address: stable across runs


def test_checkpoints_without_config_warn(tmp_path):
    with train.CheckpointStore(tmp_path) as store:
        store.save(1, trained_state(1))
    with pytest.warns(UserWarning, match="no config.json"):
        train.check_config_compatible(tmp_path, {"a": 1})
