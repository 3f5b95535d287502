"""The zoo on disk: reading, writing and validating zoo directories.

See :mod:`weightflow_jax.zoo` for the format. Writes are atomic: every file is written to a
temporary name and ``os.replace``-d; a whole zoo is assembled in a temporary directory next
to the target and renamed onto it, so a zoo directory either holds a complete zoo or does
not exist.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from typing import Any

import ml_collections
import numpy as np

from weightflow_jax import atomic, mlp
from weightflow_jax.zoo import presets

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Zoo",
    "load_zoo",
    "load_meta",
    "is_complete",
    "write_zoo",
    "config_fingerprint",
    "data_fingerprint",
    "atomic_savez",
    "atomic_write_json",
    "partial_dir",
]

FORMAT = "weightflow_jax.zoo"
FORMAT_VERSION = 1
METRIC_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
# Config fields that do not change what a zoo contains (ignored when deciding reuse).
_NON_CONTENT_FIELDS = ("dir", "checkpoint_every", "eval.chunk_size", "data.source",
                       "data.data_dir")


@dataclasses.dataclass
class Zoo:
    """A zoo in memory.

    Attributes:
      params: list of ``(W (N, out, in), b (N, out))`` numpy float32, ``N`` snapshots in
        run-major order (all of run 0 by increasing step, then run 1, ...).
      run_id: ``(N,)`` int32 run of every snapshot.
      step: ``(N,)`` int64 optimizer updates done when the snapshot was taken.
      epoch: ``(N,)`` int32 0-based epoch during which it was taken.
      metrics: ``train_loss``, ``train_acc``, ``test_loss``, ``test_acc`` ``(N,)`` float32, and
        ``epoch_train_loss`` ``(num_epochs, num_runs)`` (mean minibatch loss per epoch).
      meta: the ``meta.json`` dictionary.
      path: directory it was loaded from (``None`` for an in-memory zoo).
    """

    params: mlp.Params
    run_id: np.ndarray
    step: np.ndarray
    epoch: np.ndarray
    metrics: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: str | None = None

    @property
    def num_snapshots(self) -> int:
        return int(self.run_id.shape[0])

    @property
    def num_runs(self) -> int:
        return int(self.meta["num_runs"])

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.meta["layer_sizes"])

    def final_indices(self) -> np.ndarray:
        """``(num_runs,)`` index of the last snapshot (largest step) of every run."""
        out = np.zeros(self.num_runs, np.int64)
        for r in range(self.num_runs):
            idx = np.flatnonzero(self.run_id == r)
            out[r] = idx[np.argmax(self.step[idx])]
        return out

    def select(self, idx: Any) -> mlp.Params:
        """Snapshots ``idx`` (int -> one network, array -> a batch) as numpy params."""
        return [(w[idx], b[idx]) for w, b in self.params]


# ----------------------------------------------------------------------- fingerprints
def _content_dict(config: ml_collections.ConfigDict) -> dict:
    d = config.to_dict()
    for field in _NON_CONTENT_FIELDS:
        parts = field.split(".")
        node = d
        for p in parts[:-1]:
            node = node.get(p, {})
        node.pop(parts[-1], None)
    # Left out of the fingerprint at their "as before" value, so older zoos keep theirs.
    for field, off in presets.ADDED_FIELDS.items():
        if d.get(field, off) == off:
            d.pop(field, None)
    return d


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
    """sha256 of the zoo config fields that change the zoo's content (not ``dir`` etc.)."""
    blob = json.dumps({"version": FORMAT_VERSION, "config": _content_dict(config)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def data_fingerprint(*arrays: Any) -> str:
    """sha256 over the dtypes, shapes and bytes of the given arrays."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------- atomic writes
def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def atomic_savez(path: str, **arrays: Any) -> None:
    """``np.savez`` to ``path`` through a temporary file and ``os.replace``."""
    atomic.savez(path, **arrays)


def atomic_write_json(path: str, obj: Any) -> None:
    """Writes JSON through a temporary file and ``os.replace``."""
    atomic.write_json(path, obj, indent=1)


def partial_dir(path: str) -> str:
    """Where an unfinished build of the zoo at ``path`` keeps its resume files."""
    path = os.path.abspath(path)
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")


def write_zoo(path: str, zoo: Zoo, overwrite: bool = False) -> str:
    """Writes ``zoo`` to the directory ``path`` atomically.

    The files are written into ``.<name>.tmp-<uuid>`` next to ``path`` and the directory
    is renamed onto ``path``; an existing zoo is replaced only with ``overwrite``.

    Returns:
      The absolute path.
    """
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"{path} already exists; pass overwrite=True to replace it")
    tmp = os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex}")
    os.makedirs(tmp)
    try:
        arrays = {}
        for l, (w, b) in enumerate(zoo.params):
            arrays[f"W{l}"] = np.asarray(w, np.float32)
            arrays[f"b{l}"] = np.asarray(b, np.float32)
        arrays["run_id"] = np.asarray(zoo.run_id, np.int32)
        arrays["step"] = np.asarray(zoo.step, np.int64)
        arrays["epoch"] = np.asarray(zoo.epoch, np.int32)
        atomic_savez(os.path.join(tmp, "weights.npz"), **arrays)
        atomic_savez(os.path.join(tmp, "metrics.npz"), **zoo.metrics)
        meta = dict(zoo.meta, format=FORMAT, version=FORMAT_VERSION, completed=True)
        atomic_write_json(os.path.join(tmp, "meta.json"), meta)
        old = None
        if os.path.exists(path):
            old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex}")
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    zoo.meta = meta
    zoo.path = path
    return path


# ---------------------------------------------------------------------------- reading
def load_meta(path: str) -> dict:
    """Reads and checks ``meta.json`` of the zoo at ``path``.

    Raises:
      ValueError (with the fix) when ``path`` is not a completed zoo of this format
      version: missing, interrupted, unknown format, other version.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    meta_path = os.path.join(path, "meta.json")
    if not os.path.isdir(path) or not os.path.exists(meta_path):
        hint = ""
        if os.path.isdir(partial_dir(path)):
            hint = (f" An interrupted build left resume files in {partial_dir(path)}; rerun "
                    "the build (python -m experiments.make_zoo with the same config) to "
                    "resume it.")
        raise ValueError(
            f"no completed zoo at {path} (meta.json missing).{hint} Build one with "
            "`python -m experiments.make_zoo --config=configs/<task>_zoo.py`.")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path} is unreadable ({e}); delete {path} and rebuild the zoo") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a weightflow_jax zoo (meta.json format field is "
                         f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"zoo at {path} has format version {meta.get('version')!r} but this code reads "
            f"version {FORMAT_VERSION}; rebuild it (make_zoo with --overwrite)")
    if meta.get("completed") is not True:
        raise ValueError(
            f"zoo at {path} is not marked completed; it is the remnant of an interrupted "
            "build: delete it and rebuild")
    return meta


def is_complete(path: str) -> bool:
    """Whether ``path`` holds a completed zoo of the current format version."""
    try:
        load_meta(path)
    except ValueError:
        return False
    return True


def load_zoo(path: str) -> Zoo:
    """Loads a completed zoo directory (see :mod:`weightflow_jax.zoo` for the format).

    Raises:
      ValueError when the directory is missing, incomplete, of another version, or its
      arrays do not match ``meta.json``.
    """
    path = os.path.abspath(os.path.expanduser(str(path)))
    meta = load_meta(path)
    sizes = tuple(int(s) for s in meta["layer_sizes"])
    n = int(meta["num_snapshots"])
    try:
        with np.load(os.path.join(path, "weights.npz")) as f:
            arrays = {k: f[k] for k in f.files}
        with np.load(os.path.join(path, "metrics.npz")) as f:
            metrics = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"zoo at {path} has unreadable arrays ({e}); rebuild it") from None
    params = []
    for l, ((o, i), _) in enumerate(mlp.param_shapes(sizes)):
        w, b = arrays.get(f"W{l}"), arrays.get(f"b{l}")
        if w is None or b is None or w.shape != (n, o, i) or b.shape != (n, o):
            raise ValueError(
                f"zoo at {path}: layer {l} arrays have shapes "
                f"{None if w is None else w.shape} / {None if b is None else b.shape}, "
                f"meta.json says ({n}, {o}, {i}) / ({n}, {o}); rebuild the zoo")
        params.append((w, b))
    for k in ("run_id", "step", "epoch"):
        if k not in arrays or arrays[k].shape != (n,):
            raise ValueError(f"zoo at {path}: weights.npz lacks a ({n},) array {k!r}; rebuild")
    for k in METRIC_KEYS:
        if k not in metrics or metrics[k].shape != (n,):
            raise ValueError(f"zoo at {path}: metrics.npz lacks a ({n},) array {k!r}; rebuild")
    return Zoo(params, arrays["run_id"], arrays["step"], arrays["epoch"], metrics, meta, path)
