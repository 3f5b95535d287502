"""Which member of a ReLU network's rescaling orbit leaves the flow.

Dividing hidden neuron ``j``'s incoming weights and bias by ``a_j > 0`` and multiplying its
outgoing weights by ``a_j`` keeps the function, so every network has a whole orbit of
representatives. They compute the same logits but are *not* the same starting point for
gradient descent: the gradient of a loss with respect to a layer scales inversely with that
layer's size, so a network whose scale sits in one layer trains (and is guided) badly.
Named representatives (:data:`REPRESENTATIVES`):

* ``"exact"`` — the weights as the flow's decoding gives them: for the canonical flows every
  hidden neuron's incoming row has unit norm and all of the scale sits in the last layer
  (the exact canonical mode's ``exp(log_scale)``); for the euclidean flow, the raw weights.
* ``"balanced"`` — the minimum-norm member of the orbit: per hidden neuron the incoming
  weights *and bias* have the same norm as the outgoing weights,
  ``|(W_l[j, :], b_l[j])| = |W_{l+1}[:, j]|``. It minimizes ``sum_l |W_l|^2 + |b_l|^2``
  over the orbit (Neyshabur et al. 2015's balanced networks; gradient flow from a small
  init keeps a ReLU network balanced, Du et al. 2018), which is where SGD-trained networks
  sit too.

With one hidden layer the balanced scales are closed-form, ``a_j = sqrt(|in_j| / |out_j|)``.
With more, each layer's scales are the exact minimizer given the others, and sweeps over
the layers (coordinate descent on a strictly convex function of ``log a``) converge to the
unique minimum; :func:`balance` runs a fixed number of sweeps (static shapes under ``jit``).
Balancing starts from the canonical form (:func:`~weightflow_jax.symmetry.canonicalize`),
which is exactly invariant to rescaling, so the result depends on the network's function
class alone: rescaling the input network's neurons first gives the same balanced network.

A neuron with (near-)zero incoming or outgoing weights is left where the canonical form put
it (its scale is 1): it contributes a constant or nothing, and no NaN can appear.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from weightflow_jax import mlp
from weightflow_jax.symmetry.canonical import canonicalize, decanonicalize

__all__ = ["REPRESENTATIVES", "DEFAULT_REPRESENTATIVE", "check_representative", "balance",
           "balance_scales", "represent", "rescale_neurons", "imbalance"]

REPRESENTATIVES = ("exact", "balanced")
DEFAULT_REPRESENTATIVE = "balanced"
# Sweeps of coordinate descent for networks with more than one hidden layer (one is exact
# for a single hidden layer); 30-16-16-2 networks balance to ~1e-6 relative in 16.
DEFAULT_SWEEPS = 32
_TINY = 1e-20


def check_representative(name: str) -> str:
    """Returns ``name`` or raises ``ValueError`` naming the valid representatives."""
    if name not in REPRESENTATIVES:
        raise ValueError(f"unknown representative {name!r}; choose one of {REPRESENTATIVES} "
                         "('balanced': equal incoming/outgoing norms per hidden neuron, "
                         "'exact': the flow's own decoding)")
    return name


def _rescale_layer(layers: list, l: int, a: jax.Array) -> list:
    layers = list(layers)
    w, b = layers[l]
    w_next, b_next = layers[l + 1]
    layers[l] = (w * a[..., :, None], b * a)
    layers[l + 1] = (w_next / a[..., None, :], b_next)
    return layers


def rescale_neurons(params: mlp.Params, scales: list) -> mlp.Params:
    """Multiplies hidden layer ``l``'s incoming weights and bias by ``scales[l]`` and divides
    its outgoing weights by them (the same function for positive scales).

    Args:
      params: list of ``(W (out, in), b (out,))``, optionally with a leading batch axis.
      scales: one positive array per hidden layer, shaped like that layer's bias.
    """
    layers = [(w, b) for w, b in params]
    if len(scales) != len(layers) - 1:
        raise ValueError(f"rescale_neurons needs one scale array per hidden layer "
                         f"({len(layers) - 1}), got {len(scales)}")
    for l, a in enumerate(scales):
        layers = _rescale_layer(layers, l, a)
    return layers


def _in_out_sq(layers, l):
    w, b = layers[l]
    w_next = layers[l + 1][0]
    return (jnp.sum(jnp.square(w), axis=-1) + jnp.square(b),
            jnp.sum(jnp.square(w_next), axis=-2))


def _balance_layers(layers: list, sweeps: int, eps: float) -> tuple[list, list]:
    """Coordinate-descent balancing; returns the layers and the accumulated scales."""
    n_hidden = len(layers) - 1
    scales = [jnp.ones_like(layers[l][1]) for l in range(n_hidden)]
    for _ in range(sweeps if n_hidden > 1 else min(sweeps, 1)):
        for l in range(n_hidden):
            i2, o2 = _in_out_sq(layers, l)
            ok = (i2 > eps * eps) & (o2 > eps * eps)
            a = jnp.where(ok, (jnp.where(ok, o2, 1.0) / jnp.where(ok, i2, 1.0)) ** 0.25, 1.0)
            a = jax.lax.stop_gradient(a)
            layers = _rescale_layer(layers, l, a)
            scales[l] = scales[l] * a
    return layers, scales


def balance(params: mlp.Params, *, sweeps: int = DEFAULT_SWEEPS, eps: float = 1e-12,
            canonical_first: bool = True) -> mlp.Params:
    """The balanced (minimum-norm) representative of ``params``' rescaling orbit.

    Pure and jittable; works on one network or a batch (leading axis). The per-neuron scales
    are held out of differentiation (``stop_gradient``), so ``jax.grad`` through it is the
    gradient of the rescaling at fixed scales.

    Args:
      params: list of ``(W (out, in), b (out,))``, optionally batched.
      sweeps: coordinate-descent sweeps (used when there is more than one hidden layer).
      eps: incoming/outgoing norms below this leave a neuron's scale at 1.
      canonical_first: start from the canonical form, which makes the result exactly
        invariant to rescaling ``params``' neurons (off: balance the weights as given).

    Returns:
      the balanced weights (same layout); logits equal ``params``' to float precision.
    """
    layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in mlp.as_params(params)]
    if len(layers) < 2:
        return layers
    if canonical_first:
        layers = decanonicalize(canonicalize(layers, "exact", validate=False))
    return _balance_layers(layers, int(sweeps), float(eps))[0]


def balance_scales(params: mlp.Params, *, sweeps: int = DEFAULT_SWEEPS, eps: float = 1e-12
                   ) -> list:
    """Per-hidden-layer scales ``a`` with ``rescale_neurons(params, a) == balance(params,
    canonical_first=False)`` (held out of differentiation)."""
    layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in mlp.as_params(params)]
    if len(layers) < 2:
        return []
    return [jax.lax.stop_gradient(a) for a in _balance_layers(layers, int(sweeps),
                                                              float(eps))[1]]


def represent(params: mlp.Params, representative: str = DEFAULT_REPRESENTATIVE, **kwargs
              ) -> mlp.Params:
    """``params`` as the named representative (:data:`REPRESENTATIVES`)."""
    check_representative(representative)
    if representative == "exact":
        return [(jnp.asarray(w), jnp.asarray(b)) for w, b in mlp.as_params(params)]
    return balance(params, **kwargs)


def imbalance(params: mlp.Params) -> jax.Array:
    """Largest ``|log(|in_j| / |out_j|)|`` over hidden neurons (0 for a balanced network)."""
    layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in mlp.as_params(params)]
    worst = jnp.zeros(())
    for l in range(len(layers) - 1):
        i2, o2 = _in_out_sq(layers, l)
        r = 0.5 * jnp.abs(jnp.log(jnp.maximum(i2, _TINY)) - jnp.log(jnp.maximum(o2, _TINY)))
        worst = jnp.maximum(worst, jnp.max(r))
    return worst
