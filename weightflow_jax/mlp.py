"""ReLU MLP weights: one representation for one network or a batch of them.

The interchange format used by every public function of the package is a list of
``(W, b)`` pairs, one per layer, with ``W`` shaped ``(out, in)`` and ``b`` shaped
``(out,)``. A *batch* of networks carries one leading axis on every array:
``W`` ``(n, out, in)``, ``b`` ``(n, out)``. Lists of tuples are JAX pytrees, so
``jax.vmap``, ``jax.jit`` and ``jax.grad`` apply directly.

Hidden layers use ReLU; the last layer returns logits.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = Any  # jax.Array or np.ndarray
Layer = tuple[Array, Array]
Params = list[Layer]

__all__ = [
    "Params",
    "as_params",
    "layer_sizes",
    "validate",
    "init",
    "forward",
    "num_params",
    "flatten",
    "unflatten",
    "param_shapes",
    "parse_arch",
    "format_arch",
]


def as_params(params: Sequence[Sequence[Array]]) -> Params:
    """Returns ``params`` as a list of ``(W, b)`` tuples (accepts lists of lists)."""
    out = []
    for i, layer in enumerate(params):
        if len(layer) != 2:
            raise ValueError(
                f"layer {i}: expected a (W, b) pair, got {len(layer)} arrays; "
                "pass a list of (W, b) tuples with W shaped (out, in) and b (out,)")
        out.append((layer[0], layer[1]))
    return out


def layer_sizes(params: Params, batched: bool | None = None) -> tuple[int, ...]:
    """Returns ``(d_in, h_1, ..., d_out)`` of a network or of a batch of networks.

    Args:
      params: list of ``(W, b)``.
      batched: whether arrays carry a leading batch axis; ``None`` infers it from
        the rank of the first ``W`` (2 = single, 3 = batch).
    """
    params = as_params(params)
    if not params:
        raise ValueError("an MLP needs at least one (W, b) layer; got an empty list")
    if batched is None:
        batched = np.ndim(params[0][0]) == 3
    off = 1 if batched else 0
    sizes = [int(np.shape(params[0][0])[off + 1])]
    for w, _ in params:
        sizes.append(int(np.shape(w)[off]))
    return tuple(sizes)


def validate(params: Params, batched: bool | None = None,
             check_finite: bool = True) -> tuple[int, ...]:
    """Checks that the layers chain and the arrays are well formed.

    Returns:
      The layer sizes ``(d_in, ..., d_out)``.

    Raises:
      ValueError naming the layer and the shapes when sizes do not chain, ranks
      are wrong, batch sizes differ, or (``check_finite``, concrete arrays only)
      an array holds NaN or Inf.
    """
    params = as_params(params)
    if not params:
        raise ValueError("an MLP needs at least one (W, b) layer; got an empty list")
    if batched is None:
        batched = np.ndim(params[0][0]) == 3
    rank_w, rank_b = (3, 2) if batched else (2, 1)
    batch = None
    prev_out = None
    for i, (w, b) in enumerate(params):
        ws, bs = tuple(np.shape(w)), tuple(np.shape(b))
        kind = "batched " if batched else ""
        if len(ws) != rank_w or len(bs) != rank_b:
            raise ValueError(
                f"layer {i}: expected {kind}W of rank {rank_w} and b of rank {rank_b}, got "
                f"W{ws} and b{bs}; W is (out, in) and b is (out,)"
                + (" with a leading batch axis" if batched else ""))
        if batched:
            if batch is None:
                batch = ws[0]
            if ws[0] != batch or bs[0] != batch:
                raise ValueError(
                    f"layer {i}: batch sizes differ: W{ws}, b{bs}, expected leading axis {batch}")
            ws, bs = ws[1:], bs[1:]
        if bs[0] != ws[0]:
            raise ValueError(
                f"layer {i}: W has {ws[0]} outputs (W shape {ws}) but b has {bs[0]} "
                f"(b shape {bs}); b must be shaped (out,)")
        if prev_out is not None and ws[1] != prev_out:
            raise ValueError(
                f"layer {i}: W shape {ws} takes {ws[1]} inputs but layer {i - 1} has "
                f"{prev_out} outputs; layer sizes must chain (W_i is (out_i, out_(i-1)))")
        prev_out = ws[0]
        if check_finite:
            for name, a in (("W", w), ("b", b)):
                if isinstance(a, jax.core.Tracer):
                    continue
                if not np.all(np.isfinite(np.asarray(a))):
                    raise ValueError(
                        f"layer {i}: {name} (shape {tuple(np.shape(a))}) holds NaN or Inf; "
                        "weights must be finite")
    return layer_sizes(params, batched=batched)


def param_shapes(sizes: Sequence[int]) -> list[tuple[tuple[int, int], tuple[int]]]:
    """Shapes ``[((out, in), (out,)), ...]`` of an MLP with the given layer sizes."""
    sizes = _check_sizes(sizes)
    return [((o, i), (o,)) for i, o in zip(sizes[:-1], sizes[1:])]


def num_params(sizes: Sequence[int]) -> int:
    """Number of weights and biases of an MLP with layer sizes ``sizes``."""
    return sum(o * i + o for (o, i), _ in param_shapes(sizes))


def init(key: jax.Array, sizes: Sequence[int], w_std: float | None = 0.1,
         b_std: float = 0.0, dtype=jnp.float32) -> Params:
    """Random weights for a ReLU MLP.

    Args:
      key: PRNG key.
      sizes: ``(d_in, h_1, ..., d_out)``.
      w_std: weight standard deviation (thesis MNIST zoo: 0.1); ``None`` uses He
        initialisation ``sqrt(2 / fan_in)``.
      b_std: bias standard deviation (0 gives zero biases).
    """
    shapes = param_shapes(sizes)
    keys = jax.random.split(key, 2 * len(shapes))
    params = []
    for l, ((o, i), _) in enumerate(shapes):
        std = math.sqrt(2.0 / i) if w_std is None else w_std
        w = std * jax.random.normal(keys[2 * l], (o, i), dtype)
        b = b_std * jax.random.normal(keys[2 * l + 1], (o,), dtype)
        params.append((w, b))
    return params


def forward(params: Params, x: Array) -> jax.Array:
    """Logits of a single network for inputs ``x`` of shape ``(..., d_in)``.

    Use ``jax.vmap(forward, in_axes=(0, None))`` for a batch of networks.
    """
    h = x
    n = len(params)
    for l, (w, b) in enumerate(params):
        h = h @ jnp.swapaxes(w, -1, -2) + b
        if l < n - 1:
            h = jax.nn.relu(h)
    return h


def flatten(params: Params) -> jax.Array:
    """Concatenates ``W_0, b_0, W_1, b_1, ...`` (row-major) into one vector.

    With a leading batch axis the result is ``(n, num_params)``.
    """
    params = as_params(params)
    batched = np.ndim(params[0][0]) == 3
    lead = (np.shape(params[0][0])[0],) if batched else ()
    parts = []
    for w, b in params:
        parts.append(jnp.reshape(w, lead + (-1,)))
        parts.append(jnp.reshape(b, lead + (-1,)))
    return jnp.concatenate(parts, axis=-1)


def unflatten(vec: Array, sizes: Sequence[int]) -> Params:
    """Inverse of :func:`flatten`; ``vec`` is ``(P,)`` or ``(n, P)``."""
    shapes = param_shapes(sizes)
    total = num_params(sizes)
    if np.shape(vec)[-1] != total:
        raise ValueError(
            f"flat vector has {np.shape(vec)[-1]} entries but an MLP with sizes "
            f"{tuple(sizes)} has {total} parameters")
    lead = tuple(np.shape(vec)[:-1])
    params, pos = [], 0
    for (o, i), _ in shapes:
        w = jnp.reshape(vec[..., pos:pos + o * i], lead + (o, i))
        pos += o * i
        b = jnp.reshape(vec[..., pos:pos + o], lead + (o,))
        pos += o
        params.append((w, b))
    return params


def parse_arch(arch: str | Sequence[int]) -> tuple[int, ...]:
    """``"784-10-10"`` -> ``(784, 10, 10)``; sequences pass through (validated)."""
    if isinstance(arch, str):
        try:
            sizes = tuple(int(s) for s in arch.replace("x", "-").split("-"))
        except ValueError:
            raise ValueError(
                f"cannot parse architecture {arch!r}; write layer sizes joined by '-', "
                "e.g. '784-10-10'") from None
    else:
        sizes = tuple(int(s) for s in arch)
    return _check_sizes(sizes)


def format_arch(sizes: Sequence[int]) -> str:
    """``(784, 10, 10)`` -> ``"784-10-10"``."""
    return "-".join(str(int(s)) for s in sizes)


def _check_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) < 2 or any(s <= 0 for s in sizes):
        raise ValueError(
            f"layer sizes {sizes} are invalid; give at least input and output widths, "
            "all positive, e.g. (784, 10, 10)")
    return sizes
