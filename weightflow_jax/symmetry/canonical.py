"""Canonical form of ReLU MLPs under positive rescaling of hidden neurons.

``relu(a z) = a relu(z)`` for ``a > 0``, so dividing a hidden neuron's incoming weights and
bias by ``a`` and multiplying its outgoing weights by ``a`` keeps the function. Choosing
``a = |w_in|`` puts every hidden neuron's incoming weight vector on a unit sphere
(Pittorino et al. 2022). Layers are processed from the first to the last, so each layer is
normalized *after* absorbing the scales of the layer before it.

The last layer's matrix is then put on one sphere as a whole, ``W_L / |W_L|_F``:

* ``mode="exact"`` keeps ``log |W_L|_F`` as one extra Euclidean coordinate
  (:attr:`Canonical.log_scale`) and leaves ``b_L`` as it is, so
  :func:`decanonicalize` gives a network computing *identical* logits.
* ``mode="thesis"`` divides ``W_L`` and ``b_L`` by ``|W_L|_F`` and drops the norm (what the
  thesis did): the argmax prediction is kept, the logit scale and so the loss are not.

Dead neurons: a hidden neuron whose incoming weights have norm below ``eps`` computes the
constant ``relu(b)``. Its contribution ``W_{l+1}[:, j] * relu(b_j)`` is folded into the next
layer's bias, its outgoing weights are set to zero, and its incoming weights to the unit
vector ``e_0`` with bias 0. The function is unchanged (up to the ``eps``-sized input
dependence dropped), nothing is NaN, and the neuron lies on its sphere like the others.
A last layer with ``|W_L|_F < eps`` gets the direction ``1 / sqrt(out * in)`` everywhere
and ``log_scale = log(eps)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.geometry import Euclidean, Sphere

__all__ = [
    "Canonical",
    "MODES",
    "canonicalize",
    "decanonicalize",
    "manifold_spec",
    "euclidean_spec",
    "is_canonical",
]

MODES = ("exact", "thesis")
DEFAULT_EPS = 1e-12


class Canonical(NamedTuple):
    """Canonical coordinates of an MLP (a JAX pytree).

    Attributes:
      layers: list of ``(W, b)``: hidden ``W`` rows are unit vectors, the last ``W`` has unit
        Frobenius norm. A leading batch axis is allowed on every array.
      log_scale: ``log |W_L|_F`` — a scalar, ``(n,)`` for a batch — in exact mode; ``None``
        in thesis mode.
    """

    layers: list
    log_scale: Any = None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown canonical mode {mode!r}; choose one of {MODES}")


def _safe_norm(x: jax.Array, axis, eps: float) -> tuple[jax.Array, jax.Array]:
    """Norm with a finite gradient at zero; returns ``(norm, is_small)``."""
    sq = jnp.sum(jnp.square(x), axis=axis)
    small = sq < eps * eps
    norm = jnp.sqrt(jnp.where(small, 1.0, sq))
    return jnp.where(small, 0.0, norm), small


def _canonicalize_one(params: mlp.Params, mode: str, eps: float) -> Canonical:
    layers = [(jnp.asarray(w), jnp.asarray(b)) for w, b in params]
    n = len(layers)
    for l in range(n - 1):
        w, b = layers[l]
        w_next, b_next = layers[l + 1]
        norm, dead = _safe_norm(w, axis=1, eps=eps)
        safe = jnp.where(dead, 1.0, norm)
        e0 = jnp.zeros_like(w).at[:, 0].set(1.0)
        # Dead neurons: fold the constant relu(b) output into the next bias.
        const = jnp.where(dead, jax.nn.relu(b), 0.0)
        b_next = b_next + w_next @ const
        w_new = jnp.where(dead[:, None], e0, w / safe[:, None])
        b_new = jnp.where(dead, 0.0, b / safe)
        w_next = jnp.where(dead[None, :], 0.0, w_next * safe[None, :])
        layers[l] = (w_new, b_new)
        layers[l + 1] = (w_next, b_next)
    w, b = layers[-1]
    norm, small = _safe_norm(w, axis=(0, 1), eps=eps)
    safe = jnp.where(small, 1.0, norm)
    uniform = jnp.full_like(w, 1.0 / np.sqrt(w.size))
    direction = jnp.where(small, uniform, w / safe)
    if mode == "exact":
        layers[-1] = (direction, b)
        log_scale = jnp.log(jnp.where(small, eps, norm))
        return Canonical(layers, log_scale)
    layers[-1] = (direction, b / safe)
    return Canonical(layers, None)


_canonicalize_jit = jax.jit(_canonicalize_one, static_argnums=(1, 2))
_canonicalize_batch = jax.jit(jax.vmap(_canonicalize_one, in_axes=(0, None, None)),
                              static_argnums=(1, 2))


def canonicalize(params: mlp.Params, mode: str = "exact", *, eps: float = DEFAULT_EPS,
                 validate: bool = True) -> Canonical:
    """Removes the positive-rescaling symmetry of a ReLU MLP.

    Args:
      params: list of ``(W, b)``, ``W`` ``(out, in)``, or a batch with a leading axis.
      mode: ``"exact"`` (identical function, last-layer norm kept as ``log_scale``) or
        ``"thesis"`` (last-layer norm dropped; argmax predictions kept).
      eps: norm below which a neuron counts as dead (see the module docstring).
      validate: check shapes and finiteness first (skipped automatically under tracing).

    Returns:
      :class:`Canonical` with the same layout as ``params``.
    """
    _check_mode(mode)
    params = mlp.as_params(params)
    if validate:
        mlp.validate(params)
    if np.ndim(params[0][0]) == 3:
        return _canonicalize_batch(params, mode, eps)
    return _canonicalize_jit(params, mode, eps)


def decanonicalize(canon: Canonical) -> mlp.Params:
    """Plain MLP weights from canonical coordinates (single network or batch).

    In exact mode the last layer's matrix is multiplied by ``exp(log_scale)``; the result
    computes the same logits as the network that was canonicalized. In thesis mode the
    canonical layers are returned as they are (same argmax predictions).
    Works for points off the manifold too (e.g. flow samples): nothing is renormalized.
    """
    if not isinstance(canon, Canonical):
        raise ValueError(
            f"decanonicalize expects a Canonical, got {type(canon).__name__}; build it "
            "with canonicalize(params, mode)")
    layers = [(w, b) for w, b in canon.layers]
    if canon.log_scale is None:
        return layers
    w, b = layers[-1]
    scale = jnp.exp(jnp.asarray(canon.log_scale))
    layers[-1] = (w * scale[..., None, None], b)
    return layers


def is_canonical(canon: Canonical, atol: float = 1e-5) -> bool:
    """Whether hidden rows and the last-layer matrix have unit norm (host check)."""
    layers = canon.layers
    ok = True
    for w, _ in layers[:-1]:
        ok &= bool(np.allclose(np.linalg.norm(np.asarray(w), axis=-1), 1.0, atol=atol))
    w = np.asarray(layers[-1][0])
    ok &= bool(np.allclose(np.sqrt(np.sum(w * w, axis=(-2, -1))), 1.0, atol=atol))
    return ok


def manifold_spec(num_layers: int | Sequence[int], mode: str = "exact") -> Canonical:
    """Product-manifold description of the canonical coordinates.

    Args:
      num_layers: number of ``(W, b)`` layers, or the layer sizes ``(d_in, ..., d_out)``.
      mode: the canonical mode.

    Returns:
      A :class:`Canonical` whose leaves are geometry factors: each hidden ``W`` is
      ``Sphere(1)`` (one sphere ``S^{in-1}`` per neuron), the last ``W`` is ``Sphere(2)``
      (one sphere for the whole matrix), biases and ``log_scale`` are ``Euclidean()``.
      Use it with :mod:`weightflow_jax.geometry.product`.
    """
    _check_mode(mode)
    n = num_layers if isinstance(num_layers, int) else len(num_layers) - 1
    if n < 1:
        raise ValueError(f"an MLP needs at least one layer, got {num_layers!r}")
    layers = [(Sphere(1), Euclidean()) for _ in range(n - 1)] + [(Sphere(2), Euclidean())]
    return Canonical(layers, Euclidean() if mode == "exact" else None)


def euclidean_spec(num_layers: int | Sequence[int]) -> list:
    """All-Euclidean description of plain weights (the Euclidean flow's space)."""
    n = num_layers if isinstance(num_layers, int) else len(num_layers) - 1
    return [(Euclidean(), Euclidean()) for _ in range(n)]
