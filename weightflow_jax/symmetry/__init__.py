"""Removal of the permutation and positive-scaling symmetries of ReLU MLPs.

* :func:`align` — permutation alignment to a reference network by weight matching.
* :func:`canonicalize` / :func:`decanonicalize` — hidden neurons' incoming weights onto unit
  spheres, the last layer onto one sphere; ``mode="exact"`` keeps the function identical.
* :func:`balance` / :func:`represent` — which member of the rescaling orbit leaves the flow
  (``"balanced"``: minimum norm, equal incoming/outgoing norms per hidden neuron; ``"exact"``).
* :func:`manifold_spec` — which canonical coordinates are spheres and which Euclidean.
"""

from weightflow_jax.symmetry.align import (align, permute, permute_batch, random_permutations,
                                          weight_matching)
from weightflow_jax.symmetry.canonical import (
    MODES,
    Canonical,
    canonicalize,
    decanonicalize,
    euclidean_spec,
    is_canonical,
    manifold_spec,
)
from weightflow_jax.symmetry.representatives import (
    DEFAULT_REPRESENTATIVE,
    REPRESENTATIVES,
    balance,
    balance_scales,
    check_representative,
    imbalance,
    represent,
    rescale_neurons,
)

__all__ = [
    "align", "permute", "permute_batch", "random_permutations", "weight_matching", "MODES", "Canonical",
    "canonicalize", "decanonicalize", "euclidean_spec", "is_canonical", "manifold_spec",
    "DEFAULT_REPRESENTATIVE", "REPRESENTATIVES", "balance", "balance_scales", "check_representative",
    "imbalance", "represent", "rescale_neurons",
]
