"""The three weight spaces a flow can live in, and how plain weights map into them.

Every flow works on *coordinates* of one type, :class:`~weightflow_jax.symmetry.Canonical`
(``layers`` = list of ``(W, b)``, ``log_scale`` = scalar or ``None``), so that graphs,
models, losses and samplers handle all three flows alike:

========== ================================ ==================== =======================
flow       coordinates                      path geometry        points kept on
========== ================================ ==================== =======================
euclidean  aligned raw weights (no scale)   flat (straight line) flat space
normalized canonical form (spheres)         flat, cuts through   spheres (renormalized)
geometric  canonical form (spheres)         product of spheres   spheres (exact exp map)
========== ================================ ==================== =======================

``path_spec`` is the product-manifold description used for interpolants, conditional
velocities, Euler steps and losses; ``manifold_spec`` is the space the data lives on,
used to put the prior and final samples onto the spheres.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import mlp, symmetry
from weightflow_jax.geometry import Euclidean, Sphere, product
from weightflow_jax.symmetry import Canonical

__all__ = ["FLOWS", "PRIORS", "FlowSpace", "leaf_counts", "is_factor"]

FLOWS = ("euclidean", "normalized", "geometric")
PRIORS = ("gaussian", "spheres")


def is_factor(x: Any) -> bool:
    """``is_leaf`` predicate for spec trees."""
    return isinstance(x, (Sphere, Euclidean))


@dataclasses.dataclass(frozen=True)
class FlowSpace:
    """Where a flow over MLPs of one architecture lives.

    Attributes:
      kind: ``"euclidean"``, ``"normalized"`` or ``"geometric"``.
      sizes: layer sizes ``(d_in, ..., d_out)`` of the networks.
      canonical_mode: ``"exact"`` or ``"thesis"`` (ignored by the euclidean flow).
      prior: ``"gaussian"`` (``N(0, std^2)`` entries; the geometric flow projects them onto
        its spheres) or ``"spheres"`` (the same projection for the normalized flow, so its
        straight path starts from rows of the data's norm 1 instead of norm
        ``std * sqrt(fan_in + 1)``; the path and the coordinates are unchanged).
    """

    kind: str
    sizes: tuple[int, ...]
    canonical_mode: str = "exact"
    prior: str = "gaussian"

    def __post_init__(self):
        if self.kind not in FLOWS:
            raise ValueError(f"unknown flow {self.kind!r}; choose one of {FLOWS}")
        object.__setattr__(self, "sizes", mlp.parse_arch(self.sizes))
        if self.canonical_mode not in symmetry.MODES:
            raise ValueError(
                f"unknown canonical mode {self.canonical_mode!r}; choose one of "
                f"{symmetry.MODES}")
        if self.prior not in PRIORS:
            raise ValueError(f"unknown prior {self.prior!r}; choose one of {PRIORS}")
        if self.prior == "spheres" and self.kind == "euclidean":
            raise ValueError("prior='spheres' needs a flow on canonical coordinates "
                             "(normalized or geometric); the euclidean flow has no spheres")

    @property
    def prior_spec(self) -> Canonical:
        """Factor tree the prior's Gaussian draws are projected with (spheres normalized)."""
        if self.kind == "geometric" or self.prior == "spheres":
            return self.manifold_spec
        return self.path_spec

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def has_scale(self) -> bool:
        """Whether coordinates carry ``log_scale`` (canonical flows in exact mode)."""
        return self.kind != "euclidean" and self.canonical_mode == "exact"

    def with_sizes(self, sizes) -> "FlowSpace":
        """The same space for another architecture (e.g. a wider hidden layer)."""
        return dataclasses.replace(self, sizes=mlp.parse_arch(sizes))

    @property
    def manifold_spec(self) -> Canonical:
        """Factor tree of the data manifold (spheres for canonical flows)."""
        if self.kind == "euclidean":
            return Canonical(symmetry.euclidean_spec(self.num_layers), None)
        return symmetry.manifold_spec(self.num_layers, self.canonical_mode)

    @property
    def path_spec(self) -> Canonical:
        """Factor tree of the geometry the probability path uses."""
        if self.kind == "geometric":
            return self.manifold_spec
        return Canonical(symmetry.euclidean_spec(self.num_layers),
                         Euclidean() if self.has_scale else None)

    def coord_shapes(self) -> Canonical:
        """``jax.ShapeDtypeStruct`` tree of one network's coordinates."""
        layers = [(jax.ShapeDtypeStruct(w, jnp.float32), jax.ShapeDtypeStruct(b, jnp.float32))
                  for w, b in mlp.param_shapes(self.sizes)]
        scale = jax.ShapeDtypeStruct((), jnp.float32) if self.has_scale else None
        return Canonical(layers, scale)

    def encode(self, params: mlp.Params) -> Canonical:
        """Coordinates of plain (already aligned) weights; single network or batch."""
        sizes = mlp.validate(params)
        if sizes != self.sizes:
            raise ValueError(
                f"weights have layer sizes {sizes} but this flow is for {self.sizes}")
        if self.kind == "euclidean":
            return Canonical([(jnp.asarray(w), jnp.asarray(b)) for w, b in params], None)
        return symmetry.canonicalize(params, self.canonical_mode)

    def retract(self, coords: Canonical) -> Canonical:
        """Puts one network's coordinates onto the data manifold (renormalizes spheres)."""
        return product.retract(self.manifold_spec, coords)

    def decode(self, coords: Canonical) -> mlp.Params:
        """Plain MLP weights from coordinates of one network or a batch (retracted first)."""
        batched = np.ndim(coords.layers[0][0]) == 3
        retract = jax.vmap(self.retract) if batched else self.retract
        return symmetry.decanonicalize(retract(coords))


def leaf_counts(spec: Any, like: Any) -> Any:
    """Number of manifold points per leaf: spheres in a ``Sphere`` leaf, entries otherwise.

    Used to turn per-leaf sums into per-leaf means (one sphere = one "point"), so every
    layer's weights and biases weigh the same in a loss regardless of width.
    """
    def count(factor, leaf):
        shape = np.shape(leaf) if not hasattr(leaf, "shape") else tuple(leaf.shape)
        if isinstance(factor, Sphere):
            return int(np.prod(shape[:len(shape) - factor.ndim], dtype=np.int64))
        return int(np.prod(shape, dtype=np.int64))
    return jax.tree.map(count, spec, like, is_leaf=is_factor)
