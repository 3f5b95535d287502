"""Product manifolds over pytrees: one factor per leaf.

A *spec* is a pytree with exactly the structure of the point pytree, whose leaves are
factor descriptors:

- ``Sphere(ndim)``: the trailing ``ndim`` axes of the leaf form ONE point of a unit
  sphere; any leading axes index independent spheres. For a weight matrix ``W`` of shape
  ``(out, in)``: ``Sphere(1)`` makes each row its own ``S^{in-1}`` (one sphere per
  neuron's incoming weights), ``Sphere(2)`` makes the whole matrix one point of
  ``S^{out*in-1}``.
- ``Euclidean()``: the leaf lives in flat space.

Example, the canonical 2-layer MLP ``[(W1, b1), (W2, b2)]``::

    spec = [(Sphere(1), Euclidean()), (Sphere(2), Euclidean())]

The factor classes are frozen dataclasses that are deliberately NOT registered with
JAX, so ``jax.tree`` treats them as leaves. All functions act on ONE point (no batch
axis): ``jax.vmap`` them over batches, with the spec closed over (it is static
structure, not data), e.g. ``jax.vmap(lambda x, y: sq_dist(spec, x, y))``. They work
under ``jit`` and ``grad`` and never produce NaN (see :mod:`.sphere`).

A spec and a point tree that do not match (structure, factor types, ranks, shapes)
raise a ``ValueError`` naming the leaf and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from weightflow_jax.geometry import euclidean as _euc
from weightflow_jax.geometry import sphere as _sph

PyTree = Any
Array = Any

__all__ = [
    "Sphere",
    "Euclidean",
    "Factor",
    "validate",
    "retract",
    "proj",
    "exp",
    "log",
    "transport",
    "geodesic",
    "cond_velocity",
    "inner",
    "sq_norm",
    "sq_dist",
    "sq_dist_per_leaf",
    "dist",
    "dims",
    "random_normal_projected",
]


@dataclasses.dataclass(frozen=True)
class Sphere:
    """Factor: the trailing ``ndim`` axes of a leaf form one unit-sphere point.

    Attributes:
      ndim: number of trailing axes flattened into one sphere (>= 1).
    """

    ndim: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.ndim, bool) or not isinstance(self.ndim, int) or self.ndim < 1:
            raise ValueError(
                f"Sphere(ndim={self.ndim!r}): ndim must be an int >= 1 (1 = each row of the "
                "last axis is a sphere, 2 = the trailing two axes form one sphere)")


@dataclasses.dataclass(frozen=True)
class Euclidean:
    """Factor: the leaf lives in flat space R^{size}."""


Factor = Sphere | Euclidean


# ---------------------------------------------------------------------------------------
# validation and leaf-wise application


def _float(x: Any) -> jax.Array:
    """Returns ``x`` as a floating jax array (integers become the default float)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _path_str(path: tuple) -> str:
    """``(SequenceKey(0), SequenceKey(1))`` -> ``"[0][1]"`` (``"<root>"`` when empty)."""
    return jax.tree_util.keystr(path) or "<root>"


def _shape(leaf: Any) -> tuple[int, ...]:
    """Shape of an array-like leaf (arrays, tracers, ShapeDtypeStruct, Python numbers)."""
    shape = getattr(leaf, "shape", None)
    return tuple(shape) if shape is not None else tuple(jnp.shape(leaf))


def _flatten(spec: PyTree, trees: Sequence[PyTree], names: Sequence[str]
             ) -> tuple[Any, list[tuple[str, Factor]], list[list[Any]]]:
    """Checks spec against the trees; returns (treedef, [(path, factor)], leaves per tree).

    All trees must have the spec's structure, and all trees' leaves at one position must
    have the same shape, of rank >= the Sphere factor's ``ndim``.
    """
    spec_paths, spec_def = jax.tree_util.tree_flatten_with_path(spec)
    factors = []
    for path, factor in spec_paths:
        if not isinstance(factor, (Sphere, Euclidean)):
            raise ValueError(
                f"spec leaf {_path_str(path)} is {factor!r} ({type(factor).__name__}); every "
                "spec leaf must be a factor, Sphere(ndim) or Euclidean()")
        factors.append((_path_str(path), factor))
    all_leaves = []
    for tree, name in zip(trees, names):
        leaves, tree_def = jax.tree_util.tree_flatten(tree)
        if tree_def != spec_def:
            raise ValueError(
                f"spec and {name} do not have the same pytree structure: spec is {spec_def} "
                f"but {name} is {tree_def}; build the spec with the same containers as the "
                "points (e.g. a list of (W, b) tuples -> a list of (Sphere(1), Euclidean()) "
                "tuples)")
        all_leaves.append(leaves)
    for i, (path, factor) in enumerate(factors):
        shapes = [_shape(leaves[i]) for leaves in all_leaves]
        for shape, name in zip(shapes[1:], names[1:]):
            if shape != shapes[0]:
                raise ValueError(
                    f"leaf {path}: {names[0]} has shape {shapes[0]} but {name} has shape "
                    f"{shape}; all trees must have equal leaf shapes (vmap over batches "
                    "instead of broadcasting)")
        if isinstance(factor, Sphere) and shapes and len(shapes[0]) < factor.ndim:
            raise ValueError(
                f"leaf {path}: Sphere(ndim={factor.ndim}) needs a leaf of rank >= "
                f"{factor.ndim}, got shape {shapes[0]}; use a smaller ndim (note that the "
                "functions act on one point: vmap over a batch axis)")
    return spec_def, factors, all_leaves


def validate(spec: PyTree, tree: PyTree, name: str = "tree") -> None:
    """Raises ``ValueError`` unless ``tree`` matches ``spec`` (structure, factor leaves, ranks)."""
    _flatten(spec, [tree], [name])


def _as_sphere_rows(factor: Sphere, a: jax.Array) -> jax.Array:
    """Reshapes a leaf ``(*lead, *trailing)`` to ``(*lead, prod(trailing))``."""
    lead = a.shape[:a.ndim - factor.ndim]
    return a.reshape(lead + (math.prod(a.shape[a.ndim - factor.ndim:]),))


def _map(spec: PyTree, trees: Sequence[PyTree], names: Sequence[str],
         on_sphere: Callable[..., jax.Array], on_flat: Callable[..., jax.Array],
         reshape_back: bool = True) -> PyTree:
    """Applies ``on_sphere(*rows)`` / ``on_flat(*leaves)`` leaf-wise; returns the result tree.

    Sphere leaves are passed with their trailing ``ndim`` axes flattened into one; with
    ``reshape_back`` the result is reshaped to the leaf's shape.
    """
    treedef, factors, all_leaves = _flatten(spec, trees, names)
    out = []
    for i, (_, factor) in enumerate(factors):
        args = [_float(leaves[i]) for leaves in all_leaves]
        if isinstance(factor, Sphere):
            res = on_sphere(*[_as_sphere_rows(factor, a) for a in args])
            if reshape_back:
                res = res.reshape(args[0].shape)
        elif args[0].ndim == 0:
            # Scalar leaves: the flat maps act on a last axis, so give them one.
            res = on_flat(*[a.reshape(1) for a in args])
            if reshape_back:
                res = res.reshape(())
        else:
            res = on_flat(*args)
        out.append(res)
    return jax.tree_util.tree_unflatten(treedef, out)


def _scalar_t(t: Array, dtype: Any) -> jax.Array:
    """Checks that ``t`` is a scalar (the functions act on one point) and casts it."""
    t = jnp.asarray(t)
    if t.ndim != 0:
        raise ValueError(
            f"t must be a scalar (these functions act on one point), got shape {t.shape}; "
            "jax.vmap over the batch to use one t per point")
    return t.astype(dtype)


def _dtype_of(tree: PyTree) -> Any:
    """Common floating dtype of a tree's leaves (default float when there are none)."""
    leaves = [_float(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


# ---------------------------------------------------------------------------------------
# maps


def retract(spec: PyTree, x: PyTree) -> PyTree:
    """Puts a point on the manifold: normalizes every sphere, leaves Euclidean parts as is.

    Args:
      spec: factor pytree.
      x: point pytree (leaves of any shape; sphere leaves of rank >= ndim).

    Returns:
      pytree like ``x``.
    """
    return _map(spec, [x], ["x"], _sph.normalize, _euc.retract)


def proj(spec: PyTree, x: PyTree, u: PyTree) -> PyTree:
    """Projects ambient vectors ``u`` onto the tangent space at ``x`` (factor-wise).

    Args:
      spec: factor pytree.
      x: point pytree.
      u: ambient pytree, same leaf shapes as ``x``.

    Returns:
      tangent pytree like ``x``.
    """
    return _map(spec, [x, u], ["x", "u"], _sph.proj, _euc.proj)


def exp(spec: PyTree, x: PyTree, v: PyTree) -> PyTree:
    """Exponential map factor-wise (sphere: great circle, Euclidean: ``x + v``).

    Args:
      spec: factor pytree.
      x: point pytree.
      v: tangent pytree at ``x`` (project it with :func:`proj` first if unsure).

    Returns:
      point pytree like ``x``.
    """
    return _map(spec, [x, v], ["x", "v"], _sph.exp, _euc.exp)


def log(spec: PyTree, x: PyTree, y: PyTree) -> PyTree:
    """Logarithm map factor-wise: tangent vectors at ``x`` pointing to ``y``.

    Args:
      spec: factor pytree.
      x: point pytree.
      y: point pytree, same leaf shapes.

    Returns:
      tangent pytree like ``x`` (antipodal spheres follow :func:`.sphere.log`'s convention).
    """
    return _map(spec, [x, y], ["x", "y"], _sph.log, _euc.log)


def transport(spec: PyTree, x: PyTree, y: PyTree, u: PyTree) -> PyTree:
    """Parallel transport of the tangent vectors ``u`` at ``x`` to ``y``, factor-wise
    (sphere: along the shortest great circle; Euclidean: unchanged).

    Returns:
      tangent pytree at ``y``.
    """
    return _map(spec, [x, y, u], ["x", "y", "u"], _sph.transport, _euc.transport)


def geodesic(spec: PyTree, x0: PyTree, x1: PyTree, t: Array) -> PyTree:
    """Point at time ``t`` on the geodesic from ``x0`` (t=0) to ``x1`` (t=1).

    Args:
      spec: factor pytree.
      x0: point pytree.
      x1: point pytree, same leaf shapes.
      t: scalar.

    Returns:
      point pytree like ``x0``.
    """
    t = _scalar_t(t, _dtype_of(x0))
    return _map(spec, [x0, x1], ["x0", "x1"],
                lambda a, b: _sph.geodesic(a, b, t), lambda a, b: _euc.geodesic(a, b, t))


def cond_velocity(spec: PyTree, xt: PyTree, x1: PyTree, t: Array,
                  eps: float = 1e-5) -> PyTree:
    """Conditional flow-matching target ``log_{xt}(x1) / max(1 - t, eps)`` factor-wise.

    Args:
      spec: factor pytree.
      xt: point pytree (current point of the path).
      x1: point pytree (end point), same leaf shapes.
      t: scalar.
      eps: lower bound on ``1 - t``.

    Returns:
      tangent pytree at ``xt``.
    """
    t = _scalar_t(t, _dtype_of(xt))
    return _map(spec, [xt, x1], ["xt", "x1"],
                lambda a, b: _sph.cond_velocity(a, b, t, eps),
                lambda a, b: _euc.cond_velocity(a, b, t, eps))


# ---------------------------------------------------------------------------------------
# metric


def _sum_tree(tree: PyTree, dtype: Any) -> jax.Array:
    """Sum of all leaves of a tree of scalars (0 for an empty tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    return sum(leaves, jnp.zeros((), dtype))


def inner(spec: PyTree, x: PyTree, u: PyTree, v: PyTree) -> jax.Array:
    """Riemannian inner product ``<u, v>_x``: sum of ``u * v`` over all entries.

    Both factor types use the metric induced by the ambient space.

    Args:
      spec: factor pytree.
      x: point pytree (checked for structure; the metric does not depend on it).
      u, v: tangent pytrees at ``x``.

    Returns:
      scalar.
    """
    per_leaf = _map(spec, [x, u, v], ["x", "u", "v"],
                    lambda _, a, b: jnp.sum(a * b), lambda _, a, b: jnp.sum(a * b),
                    reshape_back=False)
    return _sum_tree(per_leaf, _dtype_of(u))


def sq_norm(spec: PyTree, x: PyTree, u: PyTree) -> jax.Array:
    """Squared Riemannian norm ``<u, u>_x`` of a tangent pytree; returns a scalar."""
    return inner(spec, x, u, u)


def sq_dist_per_leaf(spec: PyTree, x: PyTree, y: PyTree) -> PyTree:
    """Squared geodesic distance per leaf: a pytree of scalars with the spec's structure.

    Sphere leaves: the sum over the leaf's spheres of squared great-circle distances;
    Euclidean leaves: the squared Euclidean distance. Gradients are finite (0 at
    ``x == y``). Useful for per-layer losses.

    Args:
      spec: factor pytree.
      x, y: point pytrees with equal leaf shapes.

    Returns:
      pytree of scalars.
    """
    return _map(spec, [x, y], ["x", "y"],
                lambda a, b: jnp.sum(_sph.sq_dist(a, b)),
                lambda a, b: jnp.sum((b - a) ** 2),
                reshape_back=False)


def sq_dist(spec: PyTree, x: PyTree, y: PyTree) -> jax.Array:
    """Squared geodesic distance on the product manifold (sum over factors); a scalar."""
    return _sum_tree(sq_dist_per_leaf(spec, x, y), _dtype_of(x))


def dist(spec: PyTree, x: PyTree, y: PyTree) -> jax.Array:
    """Geodesic distance on the product manifold; a scalar with gradient 0 at ``x == y``."""
    sq = sq_dist(spec, x, y)
    nonzero = sq > jnp.finfo(sq.dtype).tiny
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


# ---------------------------------------------------------------------------------------
# sizes and sampling


def dims(spec: PyTree, like: PyTree) -> int:
    """Manifold dimension (a Python int): per sphere ``size - 1``, per Euclidean leaf ``size``.

    Args:
      spec: factor pytree.
      like: pytree of arrays or ``jax.ShapeDtypeStruct`` with the points' shapes.
    """
    _, factors, (leaves,) = _flatten(spec, [like], ["like"])
    total = 0
    for (_, factor), leaf in zip(factors, leaves):
        shape = _shape(leaf)
        if isinstance(factor, Sphere):
            split = len(shape) - factor.ndim
            n_spheres = math.prod(shape[:split])
            total += n_spheres * max(math.prod(shape[split:]) - 1, 0)
        else:
            total += math.prod(shape)
    return total


def random_normal_projected(key: jax.Array, spec: PyTree, like_tree: PyTree,
                            std: float = 0.1) -> PyTree:
    """Samples the prior: i.i.d. ``N(0, std^2)`` entries, then every sphere normalized.

    The sphere parts are therefore uniform on their spheres (whatever ``std``); the
    Euclidean parts are Gaussian with standard deviation ``std`` (the thesis uses 0.1).

    Args:
      key: jax PRNG key (split once per leaf).
      spec: factor pytree.
      like_tree: pytree of arrays or ``jax.ShapeDtypeStruct`` giving shapes and dtypes
        (non-floating dtypes become the default float).
      std: standard deviation of the Gaussian.

    Returns:
      point pytree with ``like_tree``'s shapes.
    """
    treedef, factors, (leaves,) = _flatten(spec, [like_tree], ["like_tree"])
    keys = jax.random.split(key, max(len(leaves), 1))
    out = []
    for k, (_, factor), leaf in zip(keys, factors, leaves):
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = jnp.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            dtype = jnp.result_type(float)
        shape = _shape(leaf)
        sample = std * jax.random.normal(k, shape, dtype)
        if isinstance(factor, Sphere):
            sample = _sph.normalize(_as_sphere_rows(factor, sample)).reshape(shape)
        out.append(sample)
    return jax.tree_util.tree_unflatten(treedef, out)
