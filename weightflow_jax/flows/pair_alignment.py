"""Pair alignment: permute each coupled target's hidden neurons to match its own prior draw.

An equivariant field with a permutation-invariant prior learns the permutation-symmetrised
data distribution whatever alignment the data had; pairing each prior draw with an arbitrary
permutation of its target makes conditional paths longer than the symmetry requires. As in
equivariant flow matching for molecules (Klein, Krämer and Noé 2023), after the minibatch
coupling has chosen a target ``x1[i]`` for ``x0[i]``, :func:`align_pairs` permutes the hidden
neurons of ``x1[i]`` to best match ``x0[i]`` by weight matching
(:func:`weightflow_jax.symmetry.weight_matching`, with the prior draw as the reference, on
the flow's own coordinates).

Permutations act on the product manifold by isometries (they shuffle whole spheres and
permute the columns of the next layer's rows, which keeps their norms), so an aligned target
decodes to a network computing the same function and stays on its spheres. Weight matching
maximises inner products, which is not exactly the flow's cost (squared geodesic distance
for the geometric flow): a permutation is kept only where it lowers that pair's cost, so the
mean pair cost never increases.

With one hidden layer weight matching is one exact assignment, so the result is equivariant:
permuting ``x0[i]``'s hidden neurons permutes the aligned target the same way. With more
hidden layers it is coordinate descent from the identity, a local optimum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.geometry import product
from weightflow_jax.symmetry import Canonical, permute, weight_matching

__all__ = ["PAIR_ALIGNMENTS", "align_pairs", "check_pair_alignment", "pair_costs"]

PAIR_ALIGNMENTS = ("none", "weight_matching")


def check_pair_alignment(kind: str) -> str:
    """Validates ``config.flow.pair_alignment``."""
    if kind not in PAIR_ALIGNMENTS:
        raise ValueError(f"unknown pair_alignment {kind!r}; choose one of {PAIR_ALIGNMENTS}")
    return kind


def pair_costs(space: FlowSpace, x0: Canonical, x1: Canonical) -> jax.Array:
    """``(n,)`` squared path-geometry distance of each pair ``(x0[i], x1[i])``."""
    return jax.vmap(lambda a, b: product.sq_dist(space.path_spec, a, b))(x0, x1)


_pair_costs_jit = jax.jit(pair_costs, static_argnums=0)
_permute_batch = jax.jit(jax.vmap(permute))


def _permute_coords(x1: Canonical, perms) -> Canonical:
    return Canonical(_permute_batch(x1.layers, perms), x1.log_scale)


def align_pairs(space: FlowSpace, x0: Canonical, x1: Canonical, *,
                max_iter: int = 20) -> tuple[Canonical, dict]:
    """Permutes every ``x1[i]``'s hidden neurons to best match ``x0[i]`` (host, batched).

    Args:
      space: the flow's space (its path geometry is the cost).
      x0, x1: coupled batches (leading axis ``n``) of coordinates.
      max_iter: weight-matching sweeps per pair.

    Returns:
      ``(x1_aligned, info)``; ``info`` holds ``cost_before``/``cost_after`` (mean pair cost)
      and ``changed`` (fraction of targets permuted).
    """
    n_hidden = len(space.sizes) - 2
    before = _pair_costs_jit(space, x0, x1)
    if n_hidden == 0:
        c = float(jnp.mean(before))
        return x1, {"cost_before": c, "cost_after": c, "changed": 0.0}
    h0 = [(np.asarray(w), np.asarray(b)) for w, b in jax.device_get(x0.layers)]
    h1 = [(np.asarray(w), np.asarray(b)) for w, b in jax.device_get(x1.layers)]
    n = h0[0][0].shape[0]
    perms = [weight_matching([(w[i], b[i]) for w, b in h1], [(w[i], b[i]) for w, b in h0],
                             max_iter=max_iter) for i in range(n)]
    stacked = [jnp.asarray(np.stack([p[l] for p in perms])) for l in range(n_hidden)]
    x1p = _permute_coords(x1, stacked)
    after = _pair_costs_jit(space, x0, x1p)
    keep = after < before
    pick = lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    out = jax.tree.map(pick, x1p, x1)
    info = {"cost_before": float(jnp.mean(before)),
            "cost_after": float(jnp.mean(jnp.where(keep, after, before))),
            "changed": float(jnp.mean(keep))}
    return out, info
