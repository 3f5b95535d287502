"""Task-loss guidance for sampling: ``v <- v - lambda(t) * proj_x(G(x))``.

``L`` is the mean cross-entropy of a decoded network on a task minibatch. Two directions
``G`` (:data:`GUIDANCE_MODES`, ``Guidance.mode``):

* ``"balanced"`` (default) — a gradient-descent step *on the network*, taken in its balanced
  form (:func:`weightflow_jax.symmetry.balance`) and carried to the flow's coordinates:
  ``theta = balance(decode(x))``, ``G = d enc(theta)[grad_theta L(theta)]`` (a
  Jacobian-vector product through the encoding, ``canonicalize`` for the canonical flows
  and the inverse balancing rescale for the euclidean flow), then projected onto the
  tangent space. Integrating ``-lambda G`` for time ``dt`` moves the decoded network by
  ``-lambda dt grad_theta L`` to first order: the guided sampler *trains* the network it
  carries, with learning rate ``lambda dt`` per Euler step (``lambda`` = total
  gradient-flow time over ``t in [0, 1]`` for a constant schedule).
* ``"coords"`` — ``G = grad_x L(decode(x))`` in the flow's coordinates (the thesis's
  guidance). The chain-rule gradient is the same whichever representative decodes ``x``;
  in canonical coordinates (unit rows, all scale in ``log_scale``) it is dominated by the
  output scale and barely moves the accuracy.

Why the step is taken on the balanced network: with all scale in the last layer (norm ~57
for MNIST flows) the hidden layers' gradients are tiny and the last layer's huge; SGD from
such a network stalls (measured in ``results/fashion_transfer.md``). The balanced form is
the minimum-norm member of the orbit, where SGD-trained networks sit.

Schedule ``lambda(t) = lambda * w(t)`` (:data:`SCHEDULES`): ``"constant"`` (``w = 1``) or
``"late"`` (``w = 2t``, same total as constant: little guidance while the sample is still
noise, more as it becomes a network).

The loss is summed over the samples of the batch so that the per-sample gradients stay
separate.

Minibatches: with ``Guidance.batch_size = None`` every step uses all of ``(x, y)`` (use a
fixed subset of a large training set, e.g. 1,000 MNIST images, for speed). With
``batch_size = B`` each step draws a fresh minibatch of ``B`` examples *with replacement*
(``jax.random.randint``), keyed by ``fold_in(key(seed), bits(t))``: the same for all
samples at one time ``t`` and different from step to step, deterministic given ``seed``.
The draw costs ``B`` gathers per step (negligible next to the flow's network).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from weightflow_jax import mlp
from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.symmetry import Canonical, canonicalize
from weightflow_jax.symmetry.representatives import balance, balance_scales, rescale_neurons

__all__ = ["Guidance", "GUIDANCE_MODES", "SCHEDULES", "make_guidance", "check_task",
           "task_loss_fn", "guidance_loss_at", "guidance_direction", "schedule_weight"]

GUIDANCE_MODES = ("balanced", "coords")
DEFAULT_CLIP = 5.0
SCHEDULES = ("constant", "late")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Guidance:
    """Guidance settings (a pytree: ``x`` and ``y`` are data, the rest is static).

    Build it with :func:`make_guidance`, which checks the task against the flow.

    Attributes:
      x: ``(m, d_in)`` float32 task inputs.
      y: ``(m,)`` int32 labels in ``[0, d_out)``.
      scale: ``lambda`` (thesis: 0.1 on MNIST / Fashion-MNIST, 1.0 on breast cancer).
      batch_size: ``None`` (all of ``x`` every step) or the size of a fresh random
        minibatch per step.
      seed: seed of the per-step minibatches.
      mode: the direction, one of :data:`GUIDANCE_MODES`.
      schedule: ``lambda(t)``'s shape, one of :data:`SCHEDULES`.
      clip: largest global norm of one network's task-loss gradient and of its image in the
        flow's coordinates (``"balanced"`` mode; ``None``: no clipping). Large learning rates
        on a network far from the task (early noise, MNIST logits on Fashion-MNIST; lambda
        200 over 128 Euler steps) otherwise blow up to NaN.
    """

    x: Any
    y: Any
    scale: float = dataclasses.field(default=0.1, metadata=dict(static=True))
    batch_size: int | None = dataclasses.field(default=None, metadata=dict(static=True))
    seed: int = dataclasses.field(default=0, metadata=dict(static=True))
    mode: str = dataclasses.field(default="balanced", metadata=dict(static=True))
    schedule: str = dataclasses.field(default="constant", metadata=dict(static=True))
    clip: float | None = dataclasses.field(default=DEFAULT_CLIP, metadata=dict(static=True))


def check_task(sizes: tuple[int, ...], x: Any, y: Any | None, what: str = "task") -> None:
    """Checks task data against networks of layer sizes ``sizes``.

    Args:
      sizes: the networks' layer sizes.
      x: ``(m, d_in)`` inputs; y: ``(m,)`` integer labels, or ``None`` (inputs only).

    Raises:
      ValueError naming the sizes when ``x`` is not ``(m, d_in)``, ``y`` not ``(m,)``,
      or (concrete labels only) a label is not an integer in ``[0, d_out)``.
    """
    xs = tuple(np.shape(x))
    ys = (xs[0],) if y is None and len(xs) == 2 else tuple(np.shape(y))
    if len(xs) != 2:
        raise ValueError(f"{what} inputs must be a 2-D array (m, d_in), got shape {xs}")
    if xs[1] != sizes[0]:
        raise ValueError(
            f"{what} inputs have {xs[1]} features but the networks take {sizes[0]} inputs "
            f"(layer sizes {mlp.format_arch(sizes)}); use a task whose input size matches "
            "the flow's architecture")
    if ys != (xs[0],):
        raise ValueError(
            f"{what} labels must be shaped ({xs[0]},) to match inputs {xs}, got {ys}")
    if xs[0] == 0:
        raise ValueError(f"{what} data is empty; pass at least one example")
    if y is not None and not isinstance(y, jax.core.Tracer):
        yv = np.asarray(y)
        if not np.issubdtype(yv.dtype, np.integer):
            raise ValueError(f"{what} labels must be integers, got dtype {yv.dtype}")
        if yv.min() < 0 or yv.max() >= sizes[-1]:
            raise ValueError(
                f"{what} labels range over [{yv.min()}, {yv.max()}] but the networks have "
                f"{sizes[-1]} outputs (layer sizes {mlp.format_arch(sizes)}); labels must "
                f"lie in [0, {sizes[-1]})")


def make_guidance(space: FlowSpace, x: Any, y: Any, scale: float = 0.1, *,
                  batch_size: int | None = None, seed: int = 0, mode: str = "balanced",
                  schedule: str = "constant", clip: float | None = DEFAULT_CLIP) -> Guidance:
    """A checked :class:`Guidance` for the flow ``space`` (see :func:`check_task`).

    Args:
      space: the flow's space (gives the networks' input and output widths).
      x: ``(m, d_in)`` task inputs; y: ``(m,)`` integer labels.
      scale: ``lambda``; 0 disables guidance.
      batch_size: per-step random minibatch size, or ``None`` for all of ``(x, y)``.
      seed: seed of the minibatch draws.
      mode: ``"balanced"`` or ``"coords"`` (see the module docstring).
      schedule: ``"constant"`` or ``"late"``.
      clip: gradient-norm clip of the balanced step (``None``: off).
    """
    check_task(space.sizes, x, y)
    if clip is not None and not float(clip) > 0:
        raise ValueError(f"guidance clip must be a positive number or None, got {clip!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"guidance batch_size must be >= 1 or None, got {batch_size}")
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"unknown guidance mode {mode!r}; choose one of {GUIDANCE_MODES}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown guidance schedule {schedule!r}; choose one of {SCHEDULES}")
    return Guidance(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), float(scale),
                    None if batch_size is None else int(batch_size), int(seed), str(mode),
                    str(schedule), None if clip is None else float(clip))


def task_loss_fn(space: FlowSpace, x: Any, y: Any) -> Callable[[Canonical], jax.Array]:
    """The guidance loss ``coords_batch -> scalar`` on the task ``(x, y)``.

    The batch's coordinates (leading axis ``n``) are decoded to plain networks
    (:meth:`FlowSpace.decode`: spheres retracted, last-layer scale restored); the value is
    ``sum_i mean_j CE(f_i(x_j), y_j)``: the mean cross-entropy of each network, summed over
    the networks (so ``jax.grad`` gives per-sample gradients).

    Args:
      space: the flow's space.
      x: ``(m, d_in)`` inputs; y: ``(m,)`` integer labels.
    """
    check_task(space.sizes, x, y)
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)

    def loss(coords: Canonical) -> jax.Array:
        params = space.decode(coords)
        logits = jax.vmap(mlp.forward, in_axes=(0, None))(params, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, y[None, :])
        return jnp.sum(jnp.mean(ce, axis=-1))

    return loss


def _minibatch(guidance: Guidance, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, y = guidance.x, guidance.y
    if guidance.batch_size is not None:
        bits = jax.lax.bitcast_convert_type(jnp.asarray(t, jnp.float32), jnp.int32)
        key = jax.random.fold_in(jax.random.key(guidance.seed), bits)
        idx = jax.random.randint(key, (guidance.batch_size,), 0, x.shape[0])
        x, y = jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
    return x, y


def guidance_loss_at(space: FlowSpace, guidance: Guidance, t: jax.Array
                     ) -> Callable[[Canonical], jax.Array]:
    """The guidance loss used at time ``t`` (a fresh minibatch when ``batch_size`` is set)."""
    return task_loss_fn(space, *_minibatch(guidance, t))


def schedule_weight(schedule: str, t: jax.Array) -> jax.Array:
    """``w(t)`` of ``lambda(t) = lambda * w(t)``; both schedules integrate to 1 over [0, 1]."""
    if schedule == "constant":
        return jnp.ones_like(jnp.asarray(t, jnp.float32))
    if schedule == "late":
        return 2.0 * jnp.asarray(t, jnp.float32)
    raise ValueError(f"unknown guidance schedule {schedule!r}; choose one of {SCHEDULES}")


def _ce(params: mlp.Params, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = mlp.forward(params, x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _finite(tree: Any) -> Any:
    """Non-finite entries set to 0."""
    return jax.tree.map(lambda g: jnp.where(jnp.isfinite(g), g, 0.0), tree)


def _clip_norm(tree: Any, clip: float) -> Any:
    """``tree`` scaled down to global norm ``clip`` when it is longer."""
    norm = optax.tree.norm(tree)
    return jax.tree.map(lambda g: g * jnp.minimum(1.0, clip / jnp.maximum(norm, 1e-12)), tree)


def _balanced_direction_one(space: FlowSpace, coords: Canonical, x: jax.Array,
                            y: jax.Array, clip: float | None) -> Canonical:
    """``d enc(theta)[grad L(theta)]`` at ``theta = balance(decode(coords))`` (one network)."""
    params = space.decode(coords)
    if space.kind == "euclidean":
        scales = balance_scales(params)
        theta = rescale_neurons(params, scales)
        inverse = [1.0 / a for a in scales]

        def encode(th):
            return Canonical([tuple(l) for l in rescale_neurons(th, inverse)], None)
    else:
        theta = balance(params)

        def encode(th):
            return canonicalize(th, space.canonical_mode, validate=False)
    theta = jax.lax.stop_gradient(theta)
    grads = jax.grad(_ce)(theta, x, y)
    if clip is not None:
        grads = _clip_norm(grads, clip)
    _, tangent = jax.jvp(encode, (theta,), (_finite(grads),))
    if clip is not None:
        # The encoding divides by row norms: a weak neuron's row (tiny norm in the balanced
        # form) turns a small step into a huge one in the coordinates. Clip there too.
        tangent = _clip_norm(_finite(tangent), clip)
    if space.kind == "euclidean":
        return tangent
    return Canonical([tuple(l) for l in tangent.layers], tangent.log_scale)


def guidance_direction(space: FlowSpace, guidance: Guidance, t: jax.Array
                       ) -> Callable[[Canonical], Canonical]:
    """``x_batch -> G`` at time ``t`` (not yet projected, not yet scaled by ``lambda(t)``)."""
    xb, yb = _minibatch(guidance, t)
    if guidance.mode == "coords":
        return jax.grad(task_loss_fn(space, xb, yb))
    if guidance.mode == "balanced":
        return jax.vmap(lambda c: _balanced_direction_one(space, c, xb, yb, guidance.clip))
    raise ValueError(f"unknown guidance mode {guidance.mode!r}; choose one of {GUIDANCE_MODES}")
