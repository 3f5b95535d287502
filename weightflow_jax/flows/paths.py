"""Priors, times, interpolants, conditional targets and the CFM loss.

All functions act on ONE network's coordinates (a :class:`Canonical` without a batch
axis); ``jax.vmap`` them over a batch. Formulas (``../shared/REFERENCE.md``):

* path: ``x_t = exp_{x0}(t log_{x0} x1)`` (a straight line in flat factors);
* conditional velocity: ``u_t = log_{x_t}(x1) / (1 - t)`` (``x1 - x0`` in flat factors);
* x1-prediction (``"target"``, the thesis's choice): the network predicts ``x1``; its
  velocity is ``log_{x_t}(x1_hat) / (1 - t)``; the loss is the squared geodesic distance
  per layer;
* residual x1-prediction (``"residual"``): as ``"target"`` with ``x1_hat = x_t + output``,
  so the network only predicts the remaining displacement — the identity, which is the
  right answer as ``t -> 1``, costs it nothing;
* velocity prediction (``"velocity"``): the prediction is projected onto the tangent
  space at ``x_t``; the loss is its squared Riemannian distance to ``u_t``.

``x1_hat`` lives in the *path* geometry (:func:`predicted_x1`): it is put onto the spheres
for the geometric flow, whose log map needs points on them, and left as it is on the flat
paths of the euclidean and normalized flows. There the sampler's velocity
``(x1_hat - x_t) / (1 - t)`` is the marginal velocity of the straight path exactly when
``x1_hat`` is the conditional mean ``E[x1 | x_t]``, the minimiser of the flat squared loss;
that mean lies *inside* the spheres (unit rows averaged over the networks still compatible
with ``x_t``: norm ~0.5 for MNIST's first layer at small ``t``). Renormalizing it, as this
module once did for the normalized flow, made the loss's minimiser ``E[x1 | x_t] / |.|``
and the integrated velocity up to twice the marginal one at small ``t``: low training loss,
samples at 0.29 accuracy. The normalized flow's samples are put on the spheres once, at
the end of the integration (its "predictions re-normalized").

Losses are means over leaves of per-leaf means (one sphere or one scalar = one unit),
so every layer's weights and biases weigh the same whatever the width. The units are the
data manifold's points (``weighting="point"``), also for the normalized flow, whose path is
flat: a first-layer neuron's unit row is one unit there too, its error the squared chord.
Counting every entry of the flat path instead (``weighting="entry"``, how this module
weighed the normalized flow before) divides a row's error by its fan-in (784 for MNIST's
first layer, 110 for its last-layer sphere) against the geometric flow's, so the biases
and the output scale dominated the normalized flow's loss and its samples trailed the
other flows' (MNIST 0.82 against 0.91).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from weightflow_jax.flows.spaces import FlowSpace, leaf_counts
from weightflow_jax.geometry import product
from weightflow_jax.symmetry import Canonical

__all__ = [
    "PARAMETERIZATIONS",
    "LOSS_WEIGHTINGS",
    "TIME_DISTRIBUTIONS",
    "sample_prior",
    "sample_time",
    "interpolate",
    "target_velocity",
    "predicted_x1",
    "predicted_velocity",
    "cfm_loss",
]

PARAMETERIZATIONS = ("target", "residual", "velocity")
LOSS_WEIGHTINGS = ("point", "entry")
TIME_DISTRIBUTIONS = ("beta", "uniform")
T_MAX = 1.0 - 1e-3


def sample_prior(key: jax.Array, space: FlowSpace, std: float = 0.1) -> Canonical:
    """One draw of ``p0``: ``N(0, std^2)`` entries, spheres normalized (geometric flow).

    The normalized flow starts from the plain Gaussian (its path cuts through the spheres,
    as in the thesis) unless ``space.prior == "spheres"``; the euclidean flow likewise.
    """
    return product.random_normal_projected(key, space.prior_spec, space.coord_shapes(), std)


def sample_time(key: jax.Array, shape: tuple[int, ...] = (), distribution: str = "beta",
                a: float = 1.0, b: float = 2.0) -> jax.Array:
    """Training times in ``[0, T_MAX]``: ``Beta(a, b)`` (thesis: ``Beta(1, 2)``) or uniform."""
    if distribution == "beta":
        t = jax.random.beta(key, a, b, shape)
    elif distribution == "uniform":
        t = jax.random.uniform(key, shape)
    else:
        raise ValueError(
            f"unknown time distribution {distribution!r}; choose one of {TIME_DISTRIBUTIONS}")
    return jnp.clip(t, 0.0, T_MAX)


def interpolate(space: FlowSpace, x0: Canonical, x1: Canonical, t: jax.Array) -> Canonical:
    """``x_t`` on the path from ``x0`` to ``x1``; ``t`` a scalar."""
    return product.geodesic(space.path_spec, x0, x1, t)


def target_velocity(space: FlowSpace, xt: Canonical, x1: Canonical, t: jax.Array) -> Canonical:
    """Conditional velocity ``u_t(x_t | x1) = log_{x_t}(x1) / (1 - t)``."""
    return product.cond_velocity(space.path_spec, xt, x1, t)


def predicted_x1(space: FlowSpace, pred: Canonical, xt: Canonical | None = None) -> Canonical:
    """An x1-prediction as the path uses it: retracted onto the path geometry.

    Spheres are renormalized for the geometric flow only; on the flat paths (euclidean,
    normalized) the prediction is the conditional mean ``E[x1 | x_t]`` and is kept as it is
    (see the module docstring; :meth:`FlowSpace.retract` puts final samples on the data
    manifold). With ``xt`` (the ``"residual"`` parameterization) the prediction is
    ``xt + pred``.
    """
    if xt is not None:
        pred = jax.tree.map(jnp.add, xt, pred)
    return product.retract(space.path_spec, pred)


def _x1_hat(space: FlowSpace, pred: Canonical, xt: Canonical, parameterization: str):
    return predicted_x1(space, pred, xt if parameterization == "residual" else None)


def predicted_velocity(space: FlowSpace, pred: Canonical, xt: Canonical, t: jax.Array,
                       parameterization: str = "target") -> Canonical:
    """The velocity field value at ``(x_t, t)`` from the network's raw output ``pred``.

    ``"target"``: ``log_{x_t}(x1_hat) / (1 - t)`` with ``x1_hat = predicted_x1(pred)``;
    ``"residual"``: the same with ``predicted_x1(x_t + pred)``; ``"velocity"``:
    ``proj_{x_t}(pred)``. Always a tangent vector at ``x_t`` of the path geometry.
    """
    if parameterization in ("target", "residual"):
        x1_hat = _x1_hat(space, pred, xt, parameterization)
        return product.cond_velocity(space.path_spec, xt, x1_hat, t)
    if parameterization == "velocity":
        return product.proj(space.path_spec, xt, pred)
    raise ValueError(
        f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")


def _mean_over_leaves(per_leaf: Any, counts: Any) -> jax.Array:
    sums = jax.tree.leaves(per_leaf)
    ns = jax.tree.leaves(counts)
    return sum(s / n for s, n in zip(sums, ns)) / len(sums)


def cfm_loss(space: FlowSpace, pred: Canonical, x0: Canonical, x1: Canonical, xt: Canonical,
             t: jax.Array, parameterization: str = "target",
             weighting: str = "point") -> jax.Array:
    """Conditional flow-matching loss of one example (a scalar).

    Args:
      space: the flow's space.
      pred: the network's raw output at ``(x_t, t)``, same tree as the coordinates.
      x0, x1: the coupled prior and data points; ``xt`` their interpolant at ``t``.
      parameterization: ``"target"``, ``"residual"`` or ``"velocity"``.
      weighting: a leaf's squared error is divided by its number of data-manifold points
        (``"point"``: spheres of a sphere leaf, entries of a Euclidean one) or, for the
        normalized flow's flat path, by its number of entries (``"entry"``: the old
        weighting, kept to reproduce runs trained with it). The same for the other flows.
    """
    del x0  # the conditional targets below only need x_t and x1
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of "
                         f"{LOSS_WEIGHTINGS}")
    spec = space.path_spec
    counts = leaf_counts(space.manifold_spec if weighting == "point" else spec, xt)
    if parameterization in ("target", "residual"):
        x1_hat = _x1_hat(space, pred, xt, parameterization)
        per_leaf = product.sq_dist_per_leaf(spec, x1_hat, x1)
    elif parameterization == "velocity":
        v = product.proj(spec, xt, pred)
        u = target_velocity(space, xt, x1, t)
        per_leaf = jax.tree.map(lambda a, b: jnp.sum((a - b) ** 2), v, u)
    else:
        raise ValueError(
            f"unknown parameterization {parameterization!r}; choose one of {PARAMETERIZATIONS}")
    return _mean_over_leaves(per_leaf, counts)
