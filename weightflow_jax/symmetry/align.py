"""Permutation alignment of MLPs by weight matching ("git re-basin").

Hidden neurons of an MLP can be permuted without changing its function: permuting the
rows of ``W_l`` and entries of ``b_l`` by ``p_l`` and the columns of ``W_{l+1}`` by the same
``p_l``. Weight matching (Ainsworth et al. 2023) picks, for every hidden layer, the
permutation that maximises the inner product between the permuted network and a
reference network::

    max_{p_1..p_{L-1}}  sum_l <W_l^ref, P_l W_l P_{l-1}^T> + <b_l^ref, P_l b_l>

It is solved by coordinate descent: each step fixes all permutations but one, which is
then an exact linear assignment problem (``scipy.optimize.linear_sum_assignment``). Since
each step can only raise the objective and permutations keep norms, the L2 distance to
the reference never increases. The assignments run on the host in float64; the
permutation is then applied with JAX gathers.

A permutation ``perm`` of layer ``l`` is an integer vector: new neuron ``i`` is old
neuron ``perm[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from weightflow_jax import mlp

__all__ = ["align", "weight_matching", "permute", "permute_batch", "random_permutations"]


def permute(params: mlp.Params, perms: Sequence[jax.Array]) -> mlp.Params:
    """Applies hidden-layer permutations to one network.

    Args:
      params: list of ``(W, b)``, ``W`` ``(out, in)``; ``L`` layers.
      perms: ``L - 1`` integer vectors, ``perms[l]`` of length ``out`` of layer ``l``.

    Returns:
      The permuted network; it computes exactly the same function.
    """
    params = mlp.as_params(params)
    if len(perms) != len(params) - 1:
        raise ValueError(
            f"got {len(perms)} permutations for a network with {len(params) - 1} hidden "
            "layers; pass one permutation per hidden layer")
    out = []
    for l, (w, b) in enumerate(params):
        if l < len(perms):
            w = jnp.take(w, perms[l], axis=0)
            b = jnp.take(b, perms[l], axis=0)
        if l > 0:
            w = jnp.take(w, perms[l - 1], axis=1)
        out.append((w, b))
    return out


_permute_jit = jax.jit(permute)
_permute_batch = jax.jit(jax.vmap(permute))


def permute_batch(params: mlp.Params, perms: Sequence[jax.Array]) -> mlp.Params:
    """:func:`permute` for a batch: ``W`` ``(n, out, in)``, ``perms[l]`` ``(n, h_l)``."""
    params = mlp.as_params(params)
    n = int(np.shape(params[0][0])[0])
    if len(perms) != len(params) - 1 or any(np.shape(p)[0] != n for p in perms):
        raise ValueError(
            f"need {len(params) - 1} permutation arrays with a leading axis of {n} (one row "
            f"per network), got shapes {[np.shape(p) for p in perms]}")
    return _permute_batch(params, list(perms))


def random_permutations(key: jax.Array, sizes: Sequence[int]) -> list[jax.Array]:
    """Uniformly random permutations for every hidden layer of an MLP with ``sizes``."""
    sizes = mlp.parse_arch(sizes)
    keys = jax.random.split(key, max(len(sizes) - 2, 1))
    return [jax.random.permutation(k, n) for k, n in zip(keys, sizes[1:-1])]


def _check_pair(params: Sequence, reference: Sequence) -> tuple[int, ...]:
    sizes = mlp.validate(params, batched=False)
    ref_sizes = mlp.validate(reference, batched=False)
    if sizes != ref_sizes:
        raise ValueError(
            f"network has layer sizes {sizes} but the reference has {ref_sizes}; "
            "alignment needs networks of the same architecture")
    return sizes


def weight_matching(params: mlp.Params, reference: mlp.Params, *, max_iter: int = 100,
                    seed: int = 0) -> list[np.ndarray]:
    """Permutations aligning one network to a reference by weight matching.

    Args:
      params: network to align, list of ``(W, b)`` (no batch axis).
      reference: network of the same layer sizes.
      max_iter: maximum number of sweeps over the hidden layers.
      seed: seed for the order in which layers are visited in each sweep.

    Returns:
      ``L - 1`` numpy int permutations; ``permute(params, perms)`` is aligned.
    """
    sizes = _check_pair(params, reference)
    w = [np.asarray(a, np.float64) for a, _ in params]
    b = [np.asarray(c, np.float64) for _, c in params]
    wr = [np.asarray(a, np.float64) for a, _ in reference]
    br = [np.asarray(c, np.float64) for _, c in reference]
    n_hidden = len(sizes) - 2
    perms = [np.arange(n) for n in sizes[1:-1]]
    rng = np.random.default_rng(seed)

    def cost(l: int) -> np.ndarray:
        # Similarity between reference neuron i and candidate neuron j of hidden layer l.
        w_in = w[l] if l == 0 else w[l][:, perms[l - 1]]
        c = wr[l] @ w_in.T + np.outer(br[l], b[l])
        w_out = w[l + 1] if l + 1 == n_hidden else w[l + 1][perms[l + 1], :]
        c += wr[l + 1].T @ w_out
        return c

    for _ in range(max_iter):
        changed = False
        for l in rng.permutation(n_hidden):
            c = cost(l)
            _, col = linear_sum_assignment(c, maximize=True)
            old = c[np.arange(len(col)), perms[l]].sum()
            new = c[np.arange(len(col)), col].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                perms[l] = col
                changed = True
        if not changed:
            break
    return perms


def align(params: mlp.Params, reference: mlp.Params, *, max_iter: int = 100, seed: int = 0,
          return_perms: bool = False):
    """Aligns one network, or a batch of networks, to a reference network.

    Works on raw weights and equally on canonical layers (``Canonical.layers``), since
    permutations commute with the per-neuron rescaling of :func:`canonicalize`.

    Args:
      params: list of ``(W, b)``; ``W`` ``(out, in)`` or batched ``(n, out, in)``.
      reference: a single network (no batch axis) of the same layer sizes.
      max_iter: maximum coordinate-descent sweeps per network.
      seed: seed for the layer visiting order.
      return_perms: also return the permutations (``L - 1`` arrays, each ``(n, h_l)``
        for a batch or ``(h_l,)`` for one network).

    Returns:
      The aligned network(s) (same function as the input), and the permutations when
      ``return_perms``.
    """
    params = mlp.as_params(params)
    reference = mlp.as_params(reference)
    batched = np.ndim(params[0][0]) == 3
    if np.ndim(reference[0][0]) != 2:
        raise ValueError(
            f"reference must be a single network (W of rank 2), got W shape "
            f"{np.shape(reference[0][0])}; pick one network of the batch as reference")
    if not batched:
        perms = weight_matching(params, reference, max_iter=max_iter, seed=seed)
        out = _permute_jit(params, [jnp.asarray(p) for p in perms])
        return (out, perms) if return_perms else out
    sizes = mlp.validate(params, batched=True)
    ref_sizes = mlp.validate(reference, batched=False)
    if sizes != ref_sizes:
        raise ValueError(
            f"networks have layer sizes {sizes} but the reference has {ref_sizes}; "
            "alignment needs networks of the same architecture")
    host = [(np.asarray(w), np.asarray(b)) for w, b in params]
    n = host[0][0].shape[0]
    all_perms = [
        weight_matching([(w[i], b[i]) for w, b in host], reference, max_iter=max_iter,
                        seed=seed)
        for i in range(n)
    ]
    stacked = [jnp.asarray(np.stack([p[l] for p in all_perms])) for l in range(len(sizes) - 2)]
    out = _permute_batch(params, stacked)
    return (out, stacked) if return_perms else out
