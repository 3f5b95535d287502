"""Tests of the pure parsers and splits in weightflow_jax.data.formats."""

from __future__ import annotations

import gzip
import os
import pickle

from hypothesis import given, settings, strategies as st
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


def test_duplicate_groups_maps_each_row_to_its_first_copy():
    x = np.array([[1, 2], [3, 4], [1, 2], [0, 0], [3, 4], [1, 2]], np.uint8)
    np.testing.assert_array_equal(formats.duplicate_groups(x), [0, 1, 0, 3, 1, 0])
    # exact bytes, any dtype and shape; no rows -> no groups
    np.testing.assert_array_equal(formats.duplicate_groups(x.reshape(6, 1, 2).astype(np.int32)),
                                  [0, 1, 0, 3, 1, 0])
    assert formats.duplicate_groups(np.zeros((0, 784), np.uint8)).shape == (0,)
    distinct = fakes.fashion_per_class()[1]
    np.testing.assert_array_equal(formats.duplicate_groups(distinct), np.arange(len(distinct)))


def _groups_from_sizes(sizes_per_class: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    labels, groups = [], []
    for c, sizes in enumerate(sizes_per_class):
        for size in sizes:
            first = len(labels)
            labels += [c] * size
            groups += [first] * size
    return np.array(labels), np.array(groups)


def test_grouped_split_keeps_groups_whole_and_quotas_exact():
    # class 0: 40 singles + 10 pairs + 5 triples (75 rows); class 1: 20 singles + 7 pairs
    labels, groups = _groups_from_sizes([[1] * 40 + [2] * 10 + [3] * 5, [1] * 20 + [2] * 7])
    # one group carries two labels: rows 0 (class 0) and 75 (class 1)
    groups[75] = groups[0]
    tr, te = formats.grouped_stratified_split(labels, groups, 0.2, "g")
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(labels)))
    train_groups, test_groups = set(groups[tr].tolist()), set(groups[te].tolist())
    assert not train_groups & test_groups  # no group straddles the split
    assert groups[0] in train_groups  # the mixed-label group went to train
    np.testing.assert_array_equal(np.bincount(labels[te]), [15, 7])  # round(0.2 * n_c)
    sizes = np.bincount(groups)
    assert sizes[groups[te]].max() > 1  # whole groups do go to test
    again = formats.grouped_stratified_split(labels, groups, 0.2, "g")
    np.testing.assert_array_equal(tr, again[0])
    np.testing.assert_array_equal(te, again[1])
    assert not np.array_equal(np.sort(te), np.sort(
        formats.grouped_stratified_split(labels, groups, 0.2, "h")[1]))
    with pytest.raises(ValueError, match="one length"):
        formats.grouped_stratified_split(labels, groups[:-1], 0.2, "g")
    with pytest.raises(ValueError, match="test_fraction"):
        formats.grouped_stratified_split(labels, groups, 0.0, "g")


def test_grouped_split_without_duplicates_is_stratified_split():
    y = np.repeat(np.arange(3), [70, 14, 7])
    for got, want in zip(formats.grouped_stratified_split(y, np.arange(len(y)), 1 / 7, "t"),
                         formats.stratified_split(y, 1 / 7, "t")):
        np.testing.assert_array_equal(got, want)


def test_grouped_split_quota_short_only_when_groups_cannot_meet_it():
    # 5 pairs, quota round(10 * 0.3) = 3: whole pairs reach 2 at most
    labels, groups = _groups_from_sizes([[2] * 5])
    _, te = formats.grouped_stratified_split(labels, groups, 0.3, "g")
    assert len(te) == 2 and len(set(groups[te].tolist())) == 1


@settings(max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 4)), min_size=1, max_size=40),
       st.sampled_from([0.1, 0.25, 1 / 7, 0.5]))
def test_grouped_split_properties(spec, fraction):
    labels = np.array([c for c, size in spec for _ in range(size)])
    groups = np.array([g for g, (_, size) in enumerate(spec) for _ in range(size)])
    tr, te = formats.grouped_stratified_split(labels, groups, fraction, "p")
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(len(labels)))
    assert not set(groups[tr].tolist()) & set(groups[te].tolist())
    for c in np.unique(labels):
        quota = round(int(np.sum(labels == c)) * fraction)
        n_test = int(np.sum(labels[te] == c))
        assert n_test <= quota
        if int(np.sum([size == 1 for cc, size in spec if cc == c])) >= quota:
            assert n_test == quota  # enough single rows: the quota is met exactly


def test_fashion_split_never_puts_identical_images_on_both_sides():
    per_class = fakes.fashion_per_class()
    out = sources.fashion_split(per_class)
    train = {r.tobytes() for r in out["x_train"]}
    assert not any(r.tobytes() in train for r in out["x_test"])
    for (c_from, i_from), _ in fakes.FASHION_DUPLICATES:
        assert per_class[c_from][i_from].tobytes() in train  # quota 1: pairs stay in train
    # with a larger test share, a duplicated pair can land in test, whole
    rng = np.random.default_rng(5)
    big = [rng.integers(0, 256, (14, 784), dtype=np.uint8) for _ in range(10)]
    for c in range(10):
        big[c][1:10:2] = big[c][0:10:2]  # five pairs and four single images per class
    y = np.repeat(np.arange(10), 14)
    groups = formats.duplicate_groups(np.concatenate(big))
    tr, te = formats.grouped_stratified_split(y, groups, 2 / 7, sources.FASHION_SPLIT_TAG)
    np.testing.assert_array_equal(np.bincount(y[te]), [4] * 10)
    assert not set(groups[tr].tolist()) & set(groups[te].tolist())
    assert (np.bincount(groups)[groups[te]] == 2).any()
