"""Zoo on disk: atomic/resumable builds, reuse, refusing incomplete zoos, presets, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.zoo._util import small_config, teacher_data
from weightflow_jax.zoo import build, presets, store

DATA = teacher_data()


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def reference():
    """The zoo trained in memory without interruption."""
    return build.train_zoo(small_config(), DATA)


def _assert_same_zoo(a: store.Zoo, b: store.Zoo) -> None:
    for (w, bb), (w2, bb2) in zip(a.params, b.params):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(bb, bb2)
    for k in ("run_id", "step", "epoch"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    for k in store.METRIC_KEYS + ("epoch_train_loss",):
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k])


def test_build_writes_loadable_zoo(tmp_path, reference):
    path = build.build_zoo(small_config(tmp_path / "zoo"), data=DATA, progress=False)
    assert sorted(os.listdir(path)) == ["meta.json", "metrics.npz", "weights.npz"]
    assert sorted(os.listdir(tmp_path)) == ["zoo"]  # no partial / tmp leftovers
    zoo = store.load_zoo(path)
    _assert_same_zoo(zoo, reference)
    meta = zoo.meta
    assert meta["completed"] is True and meta["version"] == store.FORMAT_VERSION
    assert meta["layer_sizes"] == [6, 5, 4, 3] and meta["num_snapshots"] == 18
    assert meta["optimizer"]["name"] == "adam" and meta["seed"] == 0
    assert meta["summary"]["final"]["test_acc"]["mean"] == pytest.approx(
        float(zoo.metrics["test_acc"][zoo.final_indices()].mean()))
    with np.load(os.path.join(path, "weights.npz")) as f:
        assert set(f.files) == {"W0", "b0", "W1", "b1", "W2", "b2", "run_id", "step", "epoch"}
        assert f["W1"].shape == (18, 4, 5) and f["step"].dtype == np.int64


def test_interrupted_build_is_not_loadable_and_resumes(tmp_path, reference):
    c = small_config(tmp_path / "zoo")
    seen = []

    def stop_after_two(out):
        seen.append(out.epoch)
        if out.epoch == 1:
            raise Interrupt()

    with pytest.raises(Interrupt):
        build.build_zoo(c, data=DATA, progress=False, callback=stop_after_two)
    assert seen == [0, 1]
    assert not os.path.exists(c.dir)
    assert not store.is_complete(c.dir)
    with pytest.raises(ValueError, match="interrupted build"):
        store.load_zoo(c.dir)
    # Rerun resumes from the checkpoint after epoch 1 and equals an uninterrupted build.
    seen.clear()
    path = build.build_zoo(c, data=DATA, progress=False, callback=lambda o: seen.append(o.epoch))
    assert seen == [2]
    _assert_same_zoo(store.load_zoo(path), reference)
    assert not os.path.exists(store.partial_dir(path))


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, reference):
    c = small_config(tmp_path / "zoo")
    real = store.atomic_savez

    def failing(path, **arrays):
        if path.endswith("metrics.npz") and ".tmp-" in path:
            raise OSError("disk full (simulated)")
        return real(path, **arrays)

    monkeypatch.setattr(store, "atomic_savez", failing)
    with pytest.raises(OSError, match="disk full"):
        build.build_zoo(c, data=DATA, progress=False)
    assert not os.path.exists(c.dir)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]
    monkeypatch.setattr(store, "atomic_savez", real)
    # All epochs were checkpointed: the rerun only assembles.
    seen = []
    path = build.build_zoo(c, data=DATA, progress=False, callback=lambda o: seen.append(o))
    assert seen == []
    _assert_same_zoo(store.load_zoo(path), reference)


def test_partial_from_other_config_restarts(tmp_path):
    c = small_config(tmp_path / "zoo", num_epochs=2)

    def stop(out):
        raise Interrupt()

    with pytest.raises(Interrupt):
        build.build_zoo(c, data=DATA, progress=False, callback=stop)
    c2 = small_config(tmp_path / "zoo", num_epochs=2, seed=5)
    seen = []
    build.build_zoo(c2, data=DATA, progress=False, callback=lambda o: seen.append(o.epoch))
    assert seen == [0, 1]  # restarted from scratch
    assert store.load_zoo(c2.dir).meta["seed"] == 5


def test_reuse_mismatch_and_overwrite(tmp_path):
    c = small_config(tmp_path / "zoo", num_epochs=2)
    path = build.build_zoo(c, data=DATA, progress=False)
    mtime = os.path.getmtime(os.path.join(path, "meta.json"))
    seen = []
    c.eval.chunk_size = 2  # does not change the content: reused
    assert build.build_zoo(c, data=DATA, progress=False,
                           callback=lambda o: seen.append(o)) == path
    assert seen == [] and os.path.getmtime(os.path.join(path, "meta.json")) == mtime
    other = small_config(tmp_path / "zoo", num_epochs=2, seed=3)
    with pytest.raises(ValueError, match="overwrite"):
        build.build_zoo(other, data=DATA, progress=False)
    other_data = teacher_data(seed=1)
    with pytest.raises(ValueError, match="another config or data"):
        build.build_zoo(c, data=other_data, progress=False)
    build.build_zoo(other, data=DATA, progress=False, overwrite=True)
    assert store.load_zoo(path).meta["seed"] == 3


def _fake_zoo_dir(path, **meta_changes):
    os.makedirs(path)
    meta = {"format": store.FORMAT, "version": store.FORMAT_VERSION, "completed": True,
            "layer_sizes": [2, 3], "num_snapshots": 1, "num_runs": 1}
    meta.update(meta_changes)
    with open(os.path.join(path, "meta.json"), "w") as f:
        json.dump(meta, f)
    return path


@pytest.mark.parametrize("changes, match", [
    ({"completed": False}, "not marked completed"),
    ({"completed": None}, "not marked completed"),
    ({"version": 999}, "format version 999"),
    ({"format": "other"}, "not a weightflow_jax zoo"),
])
def test_load_refuses_bad_meta(tmp_path, changes, match):
    path = _fake_zoo_dir(str(tmp_path / "z"), **changes)
    with pytest.raises(ValueError, match=match):
        store.load_zoo(path)
    assert not store.is_complete(path)


def test_load_refuses_missing_and_mismatched(tmp_path):
    with pytest.raises(ValueError, match="no completed zoo"):
        store.load_zoo(str(tmp_path / "nothing"))
    path = _fake_zoo_dir(str(tmp_path / "z"))
    with pytest.raises(ValueError, match="unreadable arrays"):
        store.load_zoo(path)
    np.savez(os.path.join(path, "weights.npz"), W0=np.zeros((1, 3, 5)), b0=np.zeros((1, 3)),
             run_id=np.zeros(1), step=np.zeros(1), epoch=np.zeros(1))
    np.savez(os.path.join(path, "metrics.npz"), **{k: np.zeros(1) for k in store.METRIC_KEYS})
    with pytest.raises(ValueError, match="layer 0"):
        store.load_zoo(path)
    with open(os.path.join(path, "meta.json"), "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        store.load_zoo(path)


def test_presets_locked_and_sized():
    c = presets.zoo_config("mnist")
    assert (c.arch, c.num_runs, c.num_epochs, c.burn_in_epochs, c.snapshot_every) == (
        "784-10-10", 50, 25, 5, 10)
    assert (c.optimizer.name, c.optimizer.learning_rate, c.optimizer.momentum,
            c.optimizer.weight_decay, c.init.scheme, c.init.w_std, c.init.b_std) == (
        "sgd", 0.1, 0.9, 1e-5, "normal", 0.1, 0.0)
    b = presets.zoo_config("breast_cancer", "thesis")
    assert (b.arch, b.num_runs, b.num_epochs, b.burn_in_epochs, b.snapshot_every,
            b.optimizer.name) == ("30-16-16-2", 100, 50, 10, 4, "adam")
    assert b.dir.endswith("breast_cancer_default")
    cpu = presets.zoo_config("mnist", "cpu")
    assert cpu.num_runs == c.num_runs and cpu.snapshot_every > c.snapshot_every
    assert cpu.dir.endswith("mnist_cpu")
    with pytest.raises(AttributeError):
        c.num_run = 3  # misspelt field
    with pytest.raises(AttributeError):
        c.optimizer.lr = 0.1
    with pytest.raises(TypeError):
        c.num_runs = "many"
    with pytest.raises(ValueError, match="known tasks: breast_cancer, mnist"):
        presets.zoo_config("cifar10")
    with pytest.raises(ValueError, match="unknown zoo size"):
        presets.zoo_config("mnist", "huge")


def test_zoo_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTFLOW_ZOOS", str(tmp_path))
    assert presets.zoo_config("mnist", "cpu").dir == os.path.join(str(tmp_path), "mnist_cpu")


def test_config_files():
    from configs import breast_cancer_zoo, mnist_zoo
    c = mnist_zoo.get_config("cpu")
    assert c.zoo.arch == "784-10-10" and c.zoo.num_runs == 50
    with pytest.raises(AttributeError):
        c.zooo = 1
    assert breast_cancer_zoo.get_config("").zoo.num_runs == 100


def test_fingerprint_ignores_non_content_fields():
    a, b = small_config("/tmp/a"), small_config("/tmp/b")
    b.eval.chunk_size = 999
    b.checkpoint_every = 3
    assert store.config_fingerprint(a) == store.config_fingerprint(b)
    b.optimizer.learning_rate = 0.5
    assert store.config_fingerprint(a) != store.config_fingerprint(b)


def test_fingerprint_of_zoos_before_the_early_window():
    """Zoos built before ``early_snapshot_*`` existed keep their fingerprint (the fields
    are left out at 0); a window set changes it."""
    import ml_collections
    a = small_config("/tmp/a", burn_in_epochs=0)
    older = a.to_dict()
    del older["early_snapshot_every"], older["early_snapshot_steps"]
    assert store.config_fingerprint(a) == store.config_fingerprint(
        ml_collections.ConfigDict(older))
    a.early_snapshot_every, a.early_snapshot_steps = 1, 2
    assert store.config_fingerprint(a) != store.config_fingerprint(
        ml_collections.ConfigDict(older))


@pytest.mark.slow
def test_make_zoo_cli(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cmd = [sys.executable, "-m", "experiments.make_zoo",
           "--config=configs/breast_cancer_zoo.py:test", f"--config.zoo.dir={tmp_path}/z",
           "--config.zoo.num_runs=2", "--noprogress"]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final snapshots: test acc" in out.stdout
    assert store.load_zoo(f"{tmp_path}/z").num_runs == 2
    bad = subprocess.run(cmd + ["--config.zoo.num_runz=3"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode != 0 and "num_runz" in bad.stderr


def test_zoo_on_the_thesis_breast_cancer_split(tmp_path):
    """``--config.zoo.dataset=breast_cancer_thesis`` trains on the thesis's 455 rows."""
    from weightflow_jax import data

    c = presets.zoo_config("breast_cancer", "test")
    c.dir = str(tmp_path / "zoo")
    c.num_runs, c.num_epochs, c.burn_in_epochs = 2, 1, 0
    base_path = build.build_zoo(c, progress=False)
    c.dataset = "breast_cancer_thesis"
    with pytest.raises(ValueError, match="another config or data"):
        build.build_zoo(c, progress=False)  # never reuses the zoo of the other split
    c.dir = str(tmp_path / "zoo_thesis")
    zoo = store.load_zoo(build.build_zoo(c, progress=False))
    assert zoo.meta["dataset"] == "breast_cancer_thesis" and base_path != c.dir
    assert zoo.meta["steps_per_epoch"] == 455 // c.batch_size
    info = data.info(c.dataset)  # what pipeline.sample_and_evaluate checks
    assert (info.input_dim, info.num_classes) == (30, 2) == (zoo.layer_sizes[0],
                                                              zoo.layer_sizes[-1])
    loaded = build.load_data(c)
    assert len(loaded.y_train) == 455 and len(loaded.y_test) == 57
