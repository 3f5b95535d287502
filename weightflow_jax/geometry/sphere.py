"""Maps of the unit sphere S^{n-1} inside R^n.

Every function works on the LAST axis and broadcasts over any leading axes: a point
``x`` of shape ``(..., n)`` is a batch of unit vectors, a tangent vector ``v`` at ``x``
has the same shape and satisfies ``<x, v> = 0`` row-wise.

The functions are pure, work under ``jax.jit``, ``jax.vmap`` and ``jax.grad``, keep the
input dtype (float32 by default in JAX; float64 is never needed) and never return NaN
values or NaN gradients, also at the awkward inputs: ``x == y``, ``y == -x``, zero or
tiny tangent vectors, ``t -> 1``. Branches use the "double where" pattern: a value
that is only valid on one side of a ``jnp.where`` is fed safe inputs on the other side,
so that the discarded branch cannot send ``inf * 0`` into the gradient.

Formulas (points assumed of unit norm, which :func:`normalize` provides):

- ``proj(x, u) = u - <x, u> x``
- ``exp(x, v) = cos|v| x + sin|v| v / |v|`` (Taylor series for ``|v| < 1e-2``), re-normalized
- ``dist(x, y) = 2 atan2(|x - y|, |x + y|)``: equal to ``arccos <x, y>`` for unit vectors
  but accurate for close and for antipodal points, with a finite gradient at ``x == y``
- ``log(x, y) = dist(x, y) * w / |w|``, ``w = proj_x(y - x)``; for (numerically) antipodal
  ``y`` the direction is the fixed convention of :func:`antipodal_direction`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = Any  # jax.Array or anything jnp.asarray accepts

__all__ = [
    "transport",
    "normalize",
    "retract",
    "inner",
    "proj",
    "exp",
    "log",
    "dist",
    "sq_dist",
    "geodesic",
    "cond_velocity",
    "antipodal_direction",
    "random_uniform",
]

# Below this norm the exp map uses Taylor series of cos and sin(r)/r (error < 1e-15).
_EXP_SMALL = 1e-2
# Below this distance the log map uses a Taylor series of d / sin(d) (error < 1e-14).
_LOG_SMALL = 1e-2


def _float(x: Array) -> jax.Array:
    """Returns ``x`` as a floating jax array (integers become the default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _safe_norm(v: jax.Array) -> jax.Array:
    """Euclidean norm over the last axis, ``(..., n) -> (...)``; gradient 0 (not NaN) at 0.

    Squared norms below the smallest normal float count as 0.
    """
    sq = jnp.sum(v * v, axis=-1)
    nonzero = sq > jnp.finfo(sq.dtype).tiny
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


def _e0(x: jax.Array) -> jax.Array:
    """The first basis vector ``e_0`` broadcast to the shape and dtype of ``x``."""
    n = x.shape[-1]
    return jnp.broadcast_to(jax.nn.one_hot(0, n, dtype=x.dtype), x.shape)


def normalize(x: Array, eps: float = 1e-30) -> jax.Array:
    """Projects points onto the unit sphere: ``x / |x|`` over the last axis.

    The vector is first divided by its largest absolute entry, so that neither tiny nor
    huge vectors underflow or overflow. A vector whose largest absolute entry is
    ``<= eps`` counts as zero and is mapped to the fixed unit vector ``e_0 = (1, 0, ...)``
    (with zero gradient), never to NaN.

    Args:
      x: ``(..., n)`` array.
      eps: threshold on ``max_k |x_k|`` under which ``x`` is treated as zero.

    Returns:
      ``(..., n)`` array of unit vectors, same dtype as ``x``.
    """
    x = _float(x)
    # The scale is a constant for differentiation: x / |x| does not depend on it, so the
    # gradient is exact, and the VJP of ``max`` (which divides by the number of entries equal
    # to the maximum) is never taken. Under jit, XLA may recompute ``|x|`` in the backward
    # pass with another rounding (e.g. a contracted multiply-add), so that no entry equals
    # the forward maximum: that count is then 0 and the gradient NaN.
    m = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=-1, keepdims=True))
    nonzero = m > eps
    scaled = jnp.where(nonzero, x / jnp.where(nonzero, m, 1.0), _e0(x))
    # |scaled| >= 1 in both branches, so the square root and the division are safe.
    return scaled / jnp.sqrt(jnp.sum(scaled * scaled, axis=-1, keepdims=True))


def retract(x: Array) -> jax.Array:
    """Puts points on the manifold; alias of :func:`normalize`. ``(..., n) -> (..., n)``."""
    return normalize(x)


def inner(u: Array, v: Array) -> jax.Array:
    """Euclidean (= Riemannian) inner product over the last axis: ``(..., n) -> (...)``."""
    u, v = _float(u), _float(v)
    return jnp.sum(u * v, axis=-1)


def proj(x: Array, u: Array) -> jax.Array:
    """Orthogonal projection of ``u`` onto the tangent space at ``x``: ``u - <x,u> x``.

    Args:
      x: ``(..., n)`` unit vectors.
      u: ``(..., n)`` ambient vectors (broadcastable with ``x``).

    Returns:
      ``(..., n)`` tangent vectors.
    """
    x, u = _float(x), _float(u)
    return u - inner(x, u)[..., None] * x


def transport(x: Array, y: Array, u: Array, eps: float = 1e-6) -> jax.Array:
    """Parallel transport of ``u`` (tangent at ``x``) along the shortest geodesic to ``y``.

    ``u - <y, u> / (1 + <x, y>) (x + y)``: an isometry ``T_x -> T_y``. For (near-)antipodal
    ``x, y`` (``1 + <x, y> < eps``) the geodesic is not unique and ``proj_y(u)`` is returned.

    Args:
      x, y: ``(..., n)`` unit vectors; u: ``(..., n)`` tangent at ``x``.

    Returns:
      ``(..., n)`` tangent vectors at ``y``.
    """
    x, y, u = _float(x), _float(y), _float(u)
    c = 1.0 + inner(x, y)
    ok = c > eps
    moved = u - (inner(y, u) / jnp.where(ok, c, 1.0))[..., None] * (x + y)
    return jnp.where(ok[..., None], moved, proj(y, u))


def exp(x: Array, v: Array) -> jax.Array:
    """Exponential map ``cos|v| x + sin|v| v/|v|``, re-normalized onto the sphere.

    ``v`` should be tangent at ``x`` (use :func:`proj` first if unsure); the result has
    unit norm in any case. For ``|v| < 1e-2`` Taylor series of ``cos r`` and
    ``sin(r)/r`` in ``r^2`` are used, so ``v = 0`` and tiny ``v`` have exact values and
    finite gradients. Norms larger than pi wrap around the great circle; the norm is
    computed with max-abs scaling, so even huge ``v`` gives a finite unit vector.

    Args:
      x: ``(..., n)`` unit vectors.
      v: ``(..., n)`` tangent vectors at ``x`` (broadcastable with ``x``).

    Returns:
      ``(..., n)`` unit vectors.
    """
    x, v = _float(x), _float(v)
    sq = jnp.sum(v * v, axis=-1, keepdims=True)
    small = sq < _EXP_SMALL**2
    # |v| for the large branch via max-abs scaling, so huge vectors do not overflow.
    # A constant scale for differentiation (``r = m |v / m|`` for any m), see normalize.
    m = jnp.where(small, 1.0,
                  jax.lax.stop_gradient(jnp.max(jnp.abs(v), axis=-1, keepdims=True)))
    vm = v / m
    r = m * jnp.sqrt(jnp.where(small, 1.0, jnp.sum(vm * vm, axis=-1, keepdims=True)))
    cos_r = jnp.where(small, 1.0 - sq / 2.0 + sq * sq / 24.0, jnp.cos(r))
    sinc_r = jnp.where(small, 1.0 - sq / 6.0 + sq * sq / 120.0, jnp.sin(r) / r)
    return normalize(cos_r * x + sinc_r * v)


def dist(x: Array, y: Array) -> jax.Array:
    """Geodesic (great-circle) distance ``2 atan2(|x - y|, |x + y|)`` in ``[0, pi]``.

    Equal to ``arccos <x, y>`` for unit vectors, but accurate for close and for
    antipodal points. Exactly symmetric; its gradient is 0 (not NaN) at ``x == y`` and
    at ``y == -x``.

    Args:
      x: ``(..., n)`` unit vectors.
      y: ``(..., n)`` unit vectors (broadcastable with ``x``).

    Returns:
      ``(...)`` distances.
    """
    x, y = _float(x), _float(y)
    a = _safe_norm(x - y)
    b = _safe_norm(x + y)
    both_zero = (a == 0) & (b == 0)  # only for x = y = 0, which is off the sphere
    return 2.0 * jnp.where(
        both_zero, 0.0, jnp.arctan2(a, jnp.where(both_zero, 1.0, b)))


def sq_dist(x: Array, y: Array) -> jax.Array:
    """Squared geodesic distance, ``(..., n), (..., n) -> (...)``; smooth at ``x == y``."""
    return dist(x, y) ** 2


def antipodal_direction(x: Array) -> jax.Array:
    """The fixed unit tangent direction used by :func:`log` when ``y = -x``.

    Convention: take the coordinate axis ``e_k`` least aligned with ``x``
    (``k = argmin_k |x_k|``, first such index on ties), project it onto the tangent space
    at ``x`` and normalize. Deterministic and piecewise smooth in ``x``. For ``n = 1``
    (the 0-sphere has no tangent space) the result is the zero vector.

    Args:
      x: ``(..., n)`` unit vectors.

    Returns:
      ``(..., n)`` unit tangent vectors at ``x``.
    """
    x = _float(x)
    k = jnp.argmin(jnp.abs(x), axis=-1)
    t = proj(x, jax.nn.one_hot(k, x.shape[-1], dtype=x.dtype))
    tn = _safe_norm(t)[..., None]
    return jnp.where(tn > 0, t / jnp.where(tn > 0, tn, 1.0), 0.0)


def log(x: Array, y: Array) -> jax.Array:
    """Logarithm map: the tangent vector at ``x`` pointing to ``y`` with length ``dist(x, y)``.

    ``log_x(y) = d w / |w|`` with ``d = dist(x, y)`` and ``w = proj_x(y - x)``. For
    ``<x, y> < 0`` the direction is computed as ``proj_x(x + y)`` (the same vector for
    unit inputs, without cancellation near ``-x``). Near ``x`` (``d < 1e-2``) the factor
    ``d / |w| = d / sin d`` is replaced by its Taylor series, so the map and its
    gradient are smooth at ``y == x`` (where the Jacobian in ``y`` is ``proj_x``).

    Antipodal convention: when ``y`` is antipodal to ``x`` up to rounding (``<x, y> < 0``
    and ``|w| <= max(|u|/2, eps)`` with ``u = x + y`` and ``eps`` the dtype's machine
    epsilon), every direction is a valid log; the result is then
    ``d * antipodal_direction(x)`` (length ``d``, i.e. pi for exact antipodes). No NaN.

    Args:
      x: ``(..., n)`` unit vectors (base points).
      y: ``(..., n)`` unit vectors (broadcastable with ``x``).

    Returns:
      ``(..., n)`` tangent vectors at ``x``.
    """
    x, y = _float(x), _float(y)
    x, y = jnp.broadcast_arrays(x, y)
    floor = jnp.finfo(x.dtype).eps
    close = (inner(x, y) >= 0)[..., None]
    u = jnp.where(close, y - x, y + x)
    w = proj(x, u)
    wn = _safe_norm(w)[..., None]
    un = _safe_norm(u)[..., None]
    d = dist(x, y)[..., None]
    small = d < _LOG_SMALL
    degenerate = (~close) & ((wn <= 0.5 * un) | (wn <= floor))
    d2 = d * d
    factor_small = 1.0 + d2 / 6.0 + 7.0 * d2 * d2 / 360.0
    # Double where: the division only ever sees the denominators it is used with.
    factor_general = d / jnp.where(small | degenerate | (wn <= 0), 1.0, wn)
    v = jnp.where(small, factor_small, factor_general) * w
    return jnp.where(degenerate, d * antipodal_direction(x), v)


def geodesic(x0: Array, x1: Array, t: Array) -> jax.Array:
    """Point at time ``t`` on the geodesic from ``x0`` (t=0) to ``x1`` (t=1).

    ``exp_{x0}(t log_{x0}(x1))``; constant speed ``dist(x0, x1)``.

    Args:
      x0: ``(..., n)`` unit vectors.
      x1: ``(..., n)`` unit vectors.
      t: scalar or array broadcastable to ``x0.shape[:-1]``.

    Returns:
      ``(..., n)`` unit vectors.
    """
    x0 = _float(x0)
    t = jnp.asarray(t, dtype=x0.dtype)[..., None]
    return exp(x0, t * log(x0, x1))


def cond_velocity(xt: Array, x1: Array, t: Array, eps: float = 1e-5) -> jax.Array:
    """Conditional flow-matching target ``log_{xt}(x1) / (1 - t)``.

    ``1 - t`` is clipped below at ``eps``, so ``t -> 1`` (and ``t = 1``) stays finite.

    Args:
      xt: ``(..., n)`` unit vectors, the current point on the path.
      x1: ``(..., n)`` unit vectors, the path's end point.
      t: scalar or array broadcastable to ``xt.shape[:-1]``.
      eps: lower bound on ``1 - t``.

    Returns:
      ``(..., n)`` tangent vectors at ``xt``.
    """
    xt = _float(xt)
    t = jnp.asarray(t, dtype=xt.dtype)[..., None]
    return log(xt, x1) / jnp.maximum(1.0 - t, eps)


def random_uniform(key: jax.Array, shape: tuple[int, ...],
                   dtype: Any = jnp.float32) -> jax.Array:
    """Samples points uniformly on the sphere (normalized standard Gaussians).

    Args:
      key: a jax PRNG key.
      shape: output shape including the last, ambient axis ``n``: ``(..., n)``.
      dtype: floating dtype.

    Returns:
      ``shape`` array of unit vectors.
    """
    if len(shape) == 0:
        raise ValueError("random_uniform: shape must include the ambient axis, e.g. (n,) "
                         "or (batch, n); got ()")
    return normalize(jax.random.normal(key, shape, dtype))
