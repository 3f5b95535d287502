"""Removal of the permutation and positive-scaling symmetries of ReLU MLPs.

* :func:`align` — permutation alignment to a reference network by weight matching.
* :func:`canonicalize` / :func:`decanonicalize` — hidden neurons' incoming weights onto unit
  spheres, the last layer onto one sphere; ``mode="exact"`` keeps the function identical.
* :func:`manifold_spec` — which canonical coordinates are spheres and which Euclidean.
"""

from weightflow_jax.symmetry.align import align, permute, random_permutations, weight_matching
from weightflow_jax.symmetry.canonical import (
    MODES,
    Canonical,
    canonicalize,
    decanonicalize,
    euclidean_spec,
    is_canonical,
    manifold_spec,
)

__all__ = [
    "align", "permute", "random_permutations", "weight_matching", "MODES", "Canonical",
    "canonicalize", "decanonicalize", "euclidean_spec", "is_canonical", "manifold_spec",
]
