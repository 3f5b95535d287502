"""Tests of the pure parsers and splits in weightflow_jax.data.formats."""

from __future__ import annotations

import gzip
import os
import pickle

import numpy as np
import pytest

from weightflow_jax.data import formats, sources
from tests.data import fakes


def test_parse_idx_roundtrip_and_errors():
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    data = fakes.idx_bytes(a)
    np.testing.assert_array_equal(formats.parse_idx(data), a)
    with pytest.raises(formats.FormatError, match="magic"):
        formats.parse_idx(b"\x01" + data[1:])
    with pytest.raises(formats.FormatError, match="header says shape"):
        formats.parse_idx(data[:-1])
    with pytest.raises(formats.FormatError, match="type code"):
        formats.parse_idx(data[:2] + b"\x42" + data[3:])
    # big-endian int32 payload decodes to native values
    i32 = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (7).to_bytes(4, "big") + (
        (-3) % 2**32).to_bytes(4, "big")
    np.testing.assert_array_equal(formats.parse_idx(i32), [7, -3])


def test_idx_images_labels_checks_shapes():
    x = np.zeros((3, 28, 28), np.uint8)
    with pytest.raises(formats.FormatError, match="labels"):
        formats.idx_images_labels(fakes.idx_bytes(x), fakes.idx_bytes(np.zeros(2, np.uint8)),
                                  name="t")
    with pytest.raises(formats.FormatError, match="0..9"):
        formats.idx_images_labels(fakes.idx_bytes(x), fakes.idx_bytes(np.full(3, 10, np.uint8)),
                                  name="t")
    xf, yf = formats.idx_images_labels(fakes.idx_bytes(x), fakes.idx_bytes(np.ones(3, np.uint8)),
                                       name="t")
    assert xf.shape == (3, 784) and yf.dtype == np.uint8


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_globals_and_object_arrays():
    with pytest.raises(formats.FormatError, match="refusing to load"):
        formats.restricted_unpickle(pickle.dumps(_Evil(), protocol=2))
    with pytest.raises(formats.FormatError):
        formats.restricted_unpickle(pickle.dumps(np.array([{"a": 1}], dtype=object)))
    import codecs

    class _Rot:
        def __reduce__(self):
            return (codecs.encode, ("abc", "rot13"))

    with pytest.raises(formats.FormatError, match="rot13"):
        formats.restricted_unpickle(pickle.dumps(_Rot(), protocol=2))
    ok = formats.restricted_unpickle(pickle.dumps((np.arange(3, dtype=np.float32), [1, "a"])))
    np.testing.assert_array_equal(ok[0], [0, 1, 2])


def test_parse_mnist_pickle_recovers_bytes_and_concatenates_valid():
    arr = fakes.mnist_arrays()
    out = formats.parse_mnist_pickle(fakes.mnist_pickle_gz(arr))
    for k in arr:
        np.testing.assert_array_equal(out[k], arr[k])
        assert out[k].dtype == np.uint8
    # pixels that are not k/256 are refused
    bad = ((np.full((1, 784), 0.3, np.float32), np.zeros(1, np.int64)),) * 3
    with pytest.raises(formats.FormatError, match="k/256"):
        formats.parse_mnist_pickle(gzip.compress(pickle.dumps(bad, protocol=2)))
    with pytest.raises(formats.FormatError, match="gzip"):
        formats.parse_mnist_pickle(b"not gzip")
    with pytest.raises(formats.FormatError, match="train/valid/test"):
        formats.parse_mnist_pickle(gzip.compress(pickle.dumps((1, 2))))


def test_parse_class_json_drops_empty_rows():
    x = np.arange(3 * 784).reshape(3, 784) % 256
    data = fakes.fashion_json(x.astype(np.uint8), empties_at=(1, 4))
    got, n_empty = formats.parse_class_json(data)
    assert n_empty == 2
    np.testing.assert_array_equal(got, x)
    with pytest.raises(formats.FormatError, match="783 values"):
        formats.parse_class_json(b'{"data": [[' + b",".join([b"0"] * 783) + b"]]}")
    with pytest.raises(formats.FormatError, match="0..255"):
        formats.parse_class_json(b'{"data": [[' + b",".join([b"256"] * 784) + b"]]}")
    with pytest.raises(formats.FormatError, match="data"):
        formats.parse_class_json(b"[1, 2]")


def test_stratified_split_is_exact_deterministic_and_tag_dependent():
    y = np.repeat(np.arange(3), [70, 14, 7])
    tr, te = formats.stratified_split(y, 1 / 7, "t")
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(y)))
    np.testing.assert_array_equal(np.bincount(y[te]), [10, 2, 1])
    np.testing.assert_array_equal(np.bincount(y[tr]), [60, 12, 6])
    tr2, te2 = formats.stratified_split(y, 1 / 7, "t")
    np.testing.assert_array_equal(tr, tr2)
    np.testing.assert_array_equal(te, te2)
    tr3, _ = formats.stratified_split(y, 1 / 7, "other")
    assert not np.array_equal(np.sort(tr), np.sort(tr3))
    # splits come interleaved, not sorted by class
    assert not np.all(np.diff(y[tr]) >= 0)
    with pytest.raises(ValueError, match="test_fraction"):
        formats.stratified_split(y, 1.0, "t")


def test_hash_order_known_value():
    # pins the definition (sha256 of "tag/key"), which fixes the Fashion-MNIST split
    keys = ["0", "1", "2"]
    digests = [fakes.sha(f"x/{k}".encode()) for k in keys]
    expected = sorted(range(3), key=digests.__getitem__)
    assert formats.hash_order("x", keys).tolist() == expected


def test_fashion_split_sizes_and_membership():
    per_class = fakes.fashion_per_class()
    out = sources.fashion_split(per_class)
    np.testing.assert_array_equal(np.bincount(out["y_train"], minlength=10), [6] * 10)
    np.testing.assert_array_equal(np.bincount(out["y_test"], minlength=10), [1] * 10)
    # every image lands exactly once, with its class
    pool = {(c, r.tobytes()) for c, x in enumerate(per_class) for r in x}
    got = [(int(c), r.tobytes()) for part in ("train", "test")
           for c, r in zip(out[f"y_{part}"], out[f"x_{part}"])]
    assert len(got) == 70 and set(got) == pool
