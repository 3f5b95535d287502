"""Batches of float32 test cases for the sphere tests (generated with numpy, float64 inside)."""

from __future__ import annotations

import numpy as np

# Angles come in five groups of equal size: uniform in [0, pi], log-uniform tiny, log-uniform
# close to pi, exactly 0 (y == x) and exactly pi (y == -x).
N_GROUPS = 5


def unit_rows(rng: np.random.Generator, size: int, dim: int) -> np.ndarray:
    """``(size, dim)`` float64 unit vectors, uniform on the sphere."""
    x = rng.standard_normal((size, dim))
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def tangent_rows(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Unit float64 tangent vectors at the rows of ``x`` (random directions)."""
    g = rng.standard_normal(x.shape)
    g = g - np.sum(g * x, axis=-1, keepdims=True) * x
    return g / np.linalg.norm(g, axis=-1, keepdims=True)


def angles(rng: np.random.Generator, size: int) -> np.ndarray:
    """``(size,)`` angles in [0, pi], in the five groups described above."""
    k = size // N_GROUPS
    rest = size - (N_GROUPS - 1) * k
    return np.concatenate([
        rng.uniform(0.0, np.pi, rest),
        10.0 ** rng.uniform(-9.0, 0.0, k),
        np.pi - 10.0 ** rng.uniform(-9.0, 0.0, k),
        np.zeros(k),
        np.full(k, np.pi),
    ])


def point_pairs(seed: int, dim: int, size: int):
    """Returns float32 ``x, y`` of shape ``(size, dim)`` and the float64 angles used.

    ``y`` is ``x`` rotated by the angle along a random tangent direction; the last two
    groups are exactly ``y = x`` and ``y = -x`` in float32.
    """
    rng = np.random.default_rng(seed)
    x64 = unit_rows(rng, size, dim)
    t64 = tangent_rows(rng, x64)
    theta = angles(rng, size)
    y64 = np.cos(theta)[:, None] * x64 + np.sin(theta)[:, None] * t64
    y64 /= np.linalg.norm(y64, axis=-1, keepdims=True)
    x = x64.astype(np.float32)
    y = y64.astype(np.float32)
    k = size // N_GROUPS
    y[size - 2 * k:size - k] = x[size - 2 * k:size - k]
    y[size - k:] = -x[size - k:]
    return x, y, theta


def tangent_vectors(seed: int, dim: int, size: int, max_norm: float):
    """Returns float32 ``x`` (unit rows) and tangent ``v`` with norms in ``[0, max_norm]``.

    Norms: a third uniform, a third log-uniform in [1e-12, 1], the rest exactly 0 or
    tiny (1e-30 .. 1e-12).
    """
    rng = np.random.default_rng(seed)
    x64 = unit_rows(rng, size, dim)
    t64 = tangent_rows(rng, x64)
    k = size // 3
    r = np.concatenate([
        rng.uniform(0.0, max_norm, size - 2 * k),
        10.0 ** rng.uniform(-12.0, 0.0, k),
        np.where(rng.uniform(size=k) < 0.5, 0.0, 10.0 ** rng.uniform(-30.0, -12.0, k)),
    ])
    return x64.astype(np.float32), (r[:, None] * t64).astype(np.float32), r


def ref_dist(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """float64 reference geodesic distance of (float32) unit vectors, renormalized in float64."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return 2.0 * np.arctan2(np.linalg.norm(x - y, axis=-1), np.linalg.norm(x + y, axis=-1))
