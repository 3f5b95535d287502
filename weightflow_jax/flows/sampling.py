"""Fixed-step Euler integration of a learned field on the flow's geometry.

One step is ``x <- exp_x(dt * v)`` with ``v`` a tangent vector at ``x`` (for flat factors
``exp_x(v) = x + v``). With guidance, ``v <- v - lambda * proj_x(grad_x L(x))``, the
descent direction of a task loss ``L`` evaluated on the decoded network. This module is
the reference integrator; :mod:`weightflow_jax.sampling` wraps the same step in diffrax.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from weightflow_jax.flows.paths import predicted_velocity
from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.geometry import product
from weightflow_jax.symmetry import Canonical

__all__ = ["velocity", "euler_step", "euler_sample"]

PredictFn = Callable[[Canonical, jax.Array], Canonical]


def velocity(space: FlowSpace, predict_fn: PredictFn, x: Canonical, t: jax.Array,
             parameterization: str = "target", guidance_fn: Callable | None = None,
             guidance_scale: float = 0.0) -> Canonical:
    """The (optionally guided) velocity of a batch of points at time ``t``.

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw network output`` for the batch.
      x: batch of coordinates (leading axis ``n``).
      t: scalar time.
      guidance_fn: ``x_batch -> scalar`` task loss summed over the batch (so its gradient
        is per-sample); ``None`` for no guidance.
      guidance_scale: ``lambda``.
    """
    spec = space.path_spec
    pred = predict_fn(x, t)
    v = jax.vmap(lambda p, xi: predicted_velocity(space, p, xi, t, parameterization))(pred, x)
    if guidance_fn is not None and guidance_scale:
        g = jax.grad(guidance_fn)(x)
        g = jax.vmap(lambda xi, gi: product.proj(spec, xi, gi))(x, g)
        v = jax.tree.map(lambda a, b: a - guidance_scale * b, v, g)
    return v


def euler_step(space: FlowSpace, x: Canonical, v: Canonical, dt) -> Canonical:
    """``exp_x(dt * v)`` on the path geometry, for a batch."""
    spec = space.path_spec
    return jax.vmap(lambda xi, vi: product.exp(spec, xi, jax.tree.map(lambda a: dt * a, vi)))(
        x, v)


def euler_sample(space: FlowSpace, predict_fn: PredictFn, x0: Canonical, num_steps: int,
                 parameterization: str = "target", guidance_fn: Callable | None = None,
                 guidance_scale: float = 0.0, return_path: bool = False):
    """Integrates from ``t = 0`` to ``t = 1`` in ``num_steps`` Euler steps (``lax.scan``).

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw output``.
      x0: batch of prior draws.
      num_steps: number of steps (thesis: 512 on MNIST).
      return_path: also return the states after each step (leading axis ``num_steps``).

    Returns:
      The final batch, retracted onto the data manifold (and the path if asked).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps

    def step(x, i):
        t = i.astype(jnp.float32) * dt
        v = velocity(space, predict_fn, x, t, parameterization, guidance_fn, guidance_scale)
        x = euler_step(space, x, v, dt)
        return x, (x if return_path else None)

    x, path = jax.lax.scan(step, x0, jnp.arange(num_steps))
    x = jax.vmap(space.retract)(x)
    return (x, path) if return_path else x
