"""Maps of flat space R^n, with the same API as :mod:`weightflow_jax.geometry.sphere`.

Every function works on the LAST axis and broadcasts over leading axes. Points and
tangent vectors are both ``(..., n)`` arrays; the tangent space is R^n itself:

- ``proj(x, u) = u``, ``exp(x, v) = x + v``, ``log(x, y) = y - x``
- ``dist(x, y) = |y - x|`` (gradient 0, not NaN, at ``x == y``)
- ``geodesic(x0, x1, t) = (1 - t) x0 + t x1``
- ``cond_velocity(xt, x1, t) = (x1 - xt) / (1 - t)`` with ``1 - t`` clipped below at ``eps``
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = Any  # jax.Array or anything jnp.asarray accepts

__all__ = [
    "transport",
    "retract",
    "inner",
    "proj",
    "exp",
    "log",
    "dist",
    "sq_dist",
    "geodesic",
    "cond_velocity",
    "random_normal",
]


def _float(x: Array) -> jax.Array:
    """Returns ``x`` as a floating jax array (integers become the default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def retract(x: Array) -> jax.Array:
    """Identity (every point of R^n is on the manifold). ``(..., n) -> (..., n)``."""
    return _float(x)


def inner(u: Array, v: Array) -> jax.Array:
    """Inner product over the last axis: ``(..., n), (..., n) -> (...)``."""
    u, v = _float(u), _float(v)
    return jnp.sum(u * v, axis=-1)


def proj(x: Array, u: Array) -> jax.Array:
    """Tangent projection, the identity: returns ``u`` broadcast with ``x``. ``(..., n)``."""
    x, u = _float(x), _float(u)
    return jnp.broadcast_to(u, jnp.broadcast_shapes(x.shape, u.shape)).astype(
        jnp.result_type(x, u))


def transport(x: Array, y: Array, u: Array) -> jax.Array:
    """Parallel transport in flat space: ``u`` itself (as float)."""
    return _float(u) + 0.0 * _float(y)


def exp(x: Array, v: Array) -> jax.Array:
    """Exponential map ``x + v``. ``(..., n), (..., n) -> (..., n)``."""
    return _float(x) + _float(v)


def log(x: Array, y: Array) -> jax.Array:
    """Logarithm map ``y - x``. ``(..., n), (..., n) -> (..., n)``."""
    return _float(y) - _float(x)


def dist(x: Array, y: Array) -> jax.Array:
    """Euclidean distance ``|y - x|`` over the last axis, ``-> (...)``; gradient 0 at ``x == y``."""
    diff = _float(y) - _float(x)
    sq = jnp.sum(diff * diff, axis=-1)
    nonzero = sq > jnp.finfo(sq.dtype).tiny
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def sq_dist(x: Array, y: Array) -> jax.Array:
    """Squared Euclidean distance over the last axis: ``(..., n), (..., n) -> (...)``."""
    diff = _float(y) - _float(x)
    return jnp.sum(diff * diff, axis=-1)


def geodesic(x0: Array, x1: Array, t: Array) -> jax.Array:
    """Straight line ``(1 - t) x0 + t x1``.

    Args:
      x0: ``(..., n)``.
      x1: ``(..., n)``.
      t: scalar or array broadcastable to ``x0.shape[:-1]``.

    Returns:
      ``(..., n)``.
    """
    x0, x1 = _float(x0), _float(x1)
    t = jnp.asarray(t, dtype=x0.dtype)[..., None]
    return x0 + t * (x1 - x0)


def cond_velocity(xt: Array, x1: Array, t: Array, eps: float = 1e-5) -> jax.Array:
    """Conditional flow-matching target ``(x1 - xt) / (1 - t)``, ``1 - t`` clipped at ``eps``.

    Args:
      xt: ``(..., n)`` current points.
      x1: ``(..., n)`` end points.
      t: scalar or array broadcastable to ``xt.shape[:-1]``.
      eps: lower bound on ``1 - t``.

    Returns:
      ``(..., n)``.
    """
    xt = _float(xt)
    t = jnp.asarray(t, dtype=xt.dtype)[..., None]
    return (_float(x1) - xt) / jnp.maximum(1.0 - t, eps)


def random_normal(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32,
                  std: float = 1.0) -> jax.Array:
    """Samples i.i.d. ``N(0, std^2)`` entries of the given ``shape`` (flat-space prior)."""
    return std * jax.random.normal(key, shape, dtype)
