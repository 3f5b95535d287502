"""The local data cache: one verified ``.npz`` per data set, written atomically.

Layout of a cache directory (``$WEIGHTFLOW_DATA``, default ``~/.cache/weightflow_jax``)::

    <dir>/mnist.npz             x_train, y_train, x_test, y_test (uint8; images (n, 784))
    <dir>/mnist.npz.json        sidecar: sha256 and size of mnist.npz, source, split kind
    <dir>/fashion_mnist.npz     (same layout)
    <dir>/fashion_mnist.npz.json
    <dir>/downloads/            optional: package archives placed by hand (see sources)

A cache file is used only when its SHA-256 equals the one in its sidecar (and, where the
loader pins the array contents, when those match too), and when the split kind its sidecar
records is one the loader still builds (a retired kind such as Fashion-MNIST's
``stratified-v1`` is never reused). Anything else is reported, deleted
and treated as missing, so the loader refetches it. Files are written to a temporary
name in the same directory, flushed to disk and moved into place with ``os.replace``; an
interrupted write leaves at most a stray ``.*.tmp`` file, never a partial ``.npz``.
"""

from __future__ import annotations

from collections.abc import Collection
import contextlib
import json
import logging
import os
from pathlib import Path
import time
from typing import Any

import numpy as np

from weightflow_jax import atomic

from weightflow_jax.data.formats import sha256_array
from weightflow_jax.data.sources import RawData, sha256_file

__all__ = [
    "CACHE_FORMAT",
    "ENV_VAR",
    "CacheError",
    "default_data_dir",
    "resolve_data_dir",
    "cache_paths",
    "write_atomic",
    "save",
    "load_verified",
    "read_sidecar",
]

log = logging.getLogger(__name__)

ENV_VAR = "WEIGHTFLOW_DATA"
CACHE_FORMAT = 1
_KEYS = ("x_train", "y_train", "x_test", "y_test")


class CacheError(RuntimeError):
    """The cache holds no usable file for a data set; the message says why."""


def default_data_dir() -> Path:
    """``$WEIGHTFLOW_DATA`` if set and non-empty, else ``~/.cache/weightflow_jax``."""
    env = os.environ.get(ENV_VAR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "weightflow_jax"


def resolve_data_dir(data_dir: os.PathLike | str | None) -> Path:
    """``data_dir`` when given, else :func:`default_data_dir`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def cache_paths(data_dir: Path, name: str) -> tuple[Path, Path]:
    """``(npz_path, sidecar_path)`` of data set ``name`` in ``data_dir``."""
    npz = data_dir / f"{name}.npz"
    return npz, data_dir / f"{name}.npz.json"


def write_atomic(path: Path, write: Any) -> None:
    """Write a file atomically: ``write(fileobj)`` into a temp file, then ``os.replace``
    (see :func:`weightflow_jax.atomic.write_atomic`)."""
    atomic.write_atomic(path, write)


def save(data_dir: Path, name: str, raw: RawData) -> Path:
    """Store ``raw`` as the cache file of ``name`` and record its hash in the sidecar.

    Args:
      data_dir: cache directory (created if missing).
      name: data set name.
      raw: arrays to store (uint8 ``(n, 784)`` images, uint8 ``(n,)`` labels).
    Returns:
      path of the ``.npz`` written.
    """
    npz, side = cache_paths(data_dir, name)
    arrays = raw.arrays()
    write_atomic(npz, lambda f: np.savez(f, **arrays))
    meta = {
        "format": CACHE_FORMAT,
        "dataset": name,
        "file": npz.name,
        "sha256": sha256_file(npz),
        "bytes": npz.stat().st_size,
        "source": raw.source,
        "split": raw.split,
        "shapes": {k: list(v.shape) for k, v in arrays.items()},
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(side, lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))
    log.info("cached %s -> %s (%d bytes)", name, npz, meta["bytes"])
    return npz


def read_sidecar(data_dir: Path, name: str) -> dict[str, Any] | None:
    """The sidecar of ``name`` as a dict, or None when missing or unreadable."""
    _, side = cache_paths(data_dir, name)
    meta = atomic.read_json(side)
    return meta if isinstance(meta, dict) else None


def _discard(npz: Path, side: Path, reason: str) -> None:
    log.warning("cache file %s is not trusted (%s); deleting it, it will be refetched",
                npz, reason)
    for p in (npz, side):
        with contextlib.suppress(OSError):  # read-only cache: still never used
            p.unlink()


def load_verified(data_dir: Path, name: str,
                  pins: dict[str, dict[str, str]] | None = None, *,
                  kinds: Collection[str] | None = None) -> RawData:
    """Load the cache file of ``name`` if, and only if, it passes every check.

    Checks: the sidecar exists and names this data set and format; the file's SHA-256 and
    size equal the sidecar's; when ``kinds`` is given, the sidecar's split kind is one of
    them; the arrays have the cache layout (uint8 images ``(n, 784)``, uint8 labels
    ``(n,)``, no pickled objects); and, when ``pins`` has an entry for the sidecar's split
    kind, each array's content hash equals the pinned one. A file that exists but fails a
    check is deleted (with its sidecar) before the error is raised.

    Args:
      data_dir: cache directory.
      name: data set name.
      pins: split kind -> {array name -> sha256 of its bytes}, or None.
      kinds: the split kinds accepted (e.g. ``("official", "stratified-v2")``), or None
        for any.
    Returns:
      the cached :class:`RawData`.
    Raises:
      CacheError: missing or discarded; the message says which and why.
    """
    npz, side = cache_paths(data_dir, name)
    if not npz.exists():
        raise CacheError(f"no cache file {npz}")
    meta = read_sidecar(data_dir, name)
    if meta is None:
        _discard(npz, side, "its sidecar is missing or unreadable")
        raise CacheError(f"{npz} had no valid sidecar {side.name}; deleted")
    if meta.get("format") != CACHE_FORMAT or meta.get("dataset") != name:
        _discard(npz, side, f"sidecar format/dataset {meta.get('format')}/"
                            f"{meta.get('dataset')} != {CACHE_FORMAT}/{name}")
        raise CacheError(f"{npz}: sidecar from another format or data set; deleted")
    if kinds is not None and meta.get("split") not in kinds:
        _discard(npz, side, f"it holds split kind {meta.get('split')!r}, which this version "
                            f"no longer builds (accepted: {', '.join(kinds)})")
        raise CacheError(f"{npz}: outdated split kind {meta.get('split')!r} (accepted: "
                         f"{', '.join(kinds)}); deleted, it will be refetched")
    got = sha256_file(npz)
    if got != meta.get("sha256"):
        _discard(npz, side, f"sha256 {got} != recorded {meta.get('sha256')}")
        raise CacheError(f"{npz}: sha256 mismatch (file changed or corrupt); deleted")
    try:
        with np.load(npz, allow_pickle=False) as z:
            arrays = {k: z[k] for k in _KEYS}
    except (OSError, ValueError, KeyError) as e:
        _discard(npz, side, f"unreadable: {e}")
        raise CacheError(f"{npz}: unreadable ({e}); deleted") from e
    problem = _layout_problem(arrays)
    split = str(meta.get("split", ""))
    if problem is None and pins and split in pins:
        bad = [k for k, h in pins[split].items() if sha256_array(arrays[k]) != h]
        if bad:
            problem = f"content of {bad} differs from the pinned hashes"
    if problem is not None:
        _discard(npz, side, problem)
        raise CacheError(f"{npz}: {problem}; deleted")
    return RawData(source=str(meta.get("source", "?")), split=split, **arrays)


def _layout_problem(arrays: dict[str, np.ndarray]) -> str | None:
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 784:
            return f"x_{part} is {x.dtype} {x.shape}, expected uint8 (n, 784)"
        if y.dtype != np.uint8 or y.shape != (x.shape[0],):
            return f"y_{part} is {y.dtype} {y.shape}, expected uint8 ({x.shape[0]},)"
    return None
