"""Shared tiny data and configs for the zoo tests."""

from __future__ import annotations

import numpy as np

from weightflow_jax.zoo import presets, trainer


def teacher_data(n_train: int = 96, n_test: int = 40, d: int = 6, classes: int = 3,
                 seed: int = 0) -> trainer.Dataset:
    """Linearly separable-ish synthetic classification data (float32 / int32)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, classes))
    x = rng.normal(size=(n_train + n_test, d)).astype(np.float32)
    y = np.argmax(x @ w, axis=1).astype(np.int32)
    return trainer.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def small_config(tmp_dir: str | None = None, **overrides):
    """A tiny zoo config: MLP 6-5-4-3, 3 runs x 3 epochs, batch 16 (6 steps/epoch)."""
    c = presets.zoo_config("breast_cancer", "test")
    c.arch = "6-5-4-3"
    c.num_runs = 3
    c.num_epochs = 3
    c.burn_in_epochs = 1
    c.batch_size = 16
    c.snapshot_every = 2
    c.optimizer.learning_rate = 0.05
    c.eval.chunk_size = 4
    if tmp_dir is not None:
        c.dir = str(tmp_dir)
    for key, value in overrides.items():
        node = c
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[p]
        node[parts[-1]] = value
    return c
