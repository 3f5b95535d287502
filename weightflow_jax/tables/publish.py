"""Publishing a row's sampled networks: ``<results_dir>/<table>/samples/<row>.npz``.

The file holds plain ``W0, b0, W1, b1, ...`` arrays (numpy only; ``W{i}`` shaped
``(n, out, in)``), loadable with :func:`weightflow_jax.sampling.load_samples_npz` or
``numpy.load``. It is float16 when that changes no network's test accuracy by more than
:data:`FLOAT16_TOLERANCE` (checked on the row's test split here, before writing), else
float32; the row records which, and the largest change. Written atomically.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from weightflow_jax import atomic, data as data_lib, evaluation
from weightflow_jax import sampling as sampling_lib

__all__ = ["FLOAT16_TOLERANCE", "publish_samples", "samples_path"]

FLOAT16_TOLERANCE = 1e-3


def samples_path(results_dir: str, table: str, row: str) -> str:
    """``<results_dir>/<table>/samples/<row>.npz``."""
    return os.path.join(results_dir, table, "samples", f"{row}.npz")


def publish_samples(source: str, dest: str, task: str) -> dict[str, Any]:
    """Copies the networks of ``source`` to ``dest`` in the smallest faithful dtype.

    Args:
      source: an ``.npz`` of :func:`weightflow_jax.sampling.save_samples_npz`.
      dest: the published file.
      task: data set whose test split decides float16 vs float32.

    Returns:
      ``{"file", "dtype", "num", "max_acc_change_float16", "bytes", "representative"}``
      (the form the source says it holds, copied into ``dest``; ``None`` if it says none).
    """
    params = sampling_lib.load_samples_npz(source)
    form = sampling_lib.samples_representative(source)
    x, y = data_lib.load(task, "test")
    acc32, _ = evaluation.accuracy_and_loss(params, x, y)
    half = [(w.astype(np.float16), b.astype(np.float16)) for w, b in params]
    acc16, _ = evaluation.accuracy_and_loss(
        [(w.astype(np.float32), b.astype(np.float32)) for w, b in half], x, y)
    change = float(np.max(np.abs(np.asarray(acc16) - np.asarray(acc32))))
    use16 = change <= FLOAT16_TOLERANCE and all(
        np.isfinite(w).all() and np.isfinite(b).all() for w, b in half)
    chosen = half if use16 else params
    arrays = {}
    for i, (w, b) in enumerate(chosen):
        arrays[f"W{i}"], arrays[f"b{i}"] = w, b
    if form is not None:
        arrays["representative"] = np.asarray(form)
    atomic.write_atomic(dest, lambda f: np.savez_compressed(f, **arrays))
    return {"file": dest, "dtype": "float16" if use16 else "float32",
            "num": int(params[0][0].shape[0]), "max_acc_change_float16": change,
            "bytes": int(os.path.getsize(dest)), "representative": form}
