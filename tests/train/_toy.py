"""A tiny linear-regression problem shared by the trainer tests and their subprocess workers.

``batch_fn(step)`` is pure in ``step`` (numpy generator seeded with ``(seed, step)``), and the
loss uses its ``rng`` (a small noise on the prediction) so that the per-step key matters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

IN, OUT = 3, 2
TRUE_W = np.array([[0.5, -1.0], [2.0, 0.3], [-0.7, 1.5]], np.float32)
TRUE_B = np.array([0.2, -0.4], np.float32)
LR = 0.1


def optimizer() -> optax.GradientTransformation:
    """Adam with a fixed learning rate."""
    return optax.adam(LR)


def init_params() -> dict:
    """Zero weights ``w (3, 2)`` and bias ``b (2,)``."""
    return {"w": jnp.zeros((IN, OUT), jnp.float32), "b": jnp.zeros((OUT,), jnp.float32)}


def batch_fn(step: int, batch_size: int = 16, seed: int = 0, nan_at: int | None = None) -> dict:
    """Batch for update ``step``: ``x (B, 3)``, ``y (B, 2)``; NaN inputs when step == nan_at."""
    rng = np.random.default_rng((seed, step))
    x = rng.normal(size=(batch_size, IN)).astype(np.float32)
    y = (x @ TRUE_W + TRUE_B).astype(np.float32)
    if nan_at is not None and step == nan_at:
        x[0, 0] = np.nan
    return {"x": x, "y": y}


def loss_fn(params: dict, batch: dict, rng: jax.Array):
    """Mean squared error of a linear model, with a little rng noise; metric ``mae``."""
    pred = batch["x"] @ params["w"] + params["b"]
    pred = pred + 1e-3 * jax.random.normal(rng, pred.shape)
    err = pred - batch["y"]
    return jnp.mean(err ** 2), {"mae": jnp.mean(jnp.abs(err))}
