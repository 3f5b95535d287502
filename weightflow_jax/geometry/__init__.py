"""Geometry of weight space: unit spheres, flat space and their products over pytrees.

- :mod:`.sphere`: maps of the unit sphere on the last axis (normalize, proj, exp, log,
  dist, geodesic, cond_velocity, random_uniform).
- :mod:`.euclidean`: the same API for flat space.
- :mod:`.product`: product manifolds over pytrees, described by a spec pytree whose
  leaves are the factors :class:`Sphere` ``(ndim)`` and :class:`Euclidean` ``()``.

This package is pure and imports nothing else of ``weightflow_jax``.
"""

from weightflow_jax.geometry import euclidean, product, sphere
from weightflow_jax.geometry.product import Euclidean, Sphere

__all__ = ["sphere", "euclidean", "product", "Sphere", "Euclidean"]
