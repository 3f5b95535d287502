"""The learned field: a relational transformer read as a map on flow coordinates.

:func:`make_model` builds a :class:`~weightflow_jax.models.VectorField` for a flow space
and :func:`predict` applies it to a batch of coordinates: the weights become edge features,
the biases node features and (exact canonical mode) ``log_scale`` a per-graph global; the
per-edge / per-node / global outputs come back as coordinates of the same layout. The
output is the raw prediction (``x1`` or a velocity, by the flow's parameterization).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.graphs import mlp_to_graph
from weightflow_jax.models import VectorField, apply_to_mlp
from weightflow_jax.symmetry import Canonical

__all__ = ["make_model", "predict", "init_variables"]


def make_model(space: FlowSpace, *, num_layers: int = 5, width: int = 32, num_heads: int = 4,
               attention: str = "sparse", max_hidden_layers: int | None = None,
               **kwargs: Any) -> VectorField:
    """A vector field for networks with ``space``'s input and output widths.

    Hidden widths are free (the positional embedding is shared within a hidden layer), so
    the same model serves ``space.with_sizes(...)`` of other hidden widths.
    """
    depth = len(space.sizes) - 2
    return VectorField(
        d_in=space.sizes[0], d_out=space.sizes[-1],
        max_hidden_layers=max(depth, max_hidden_layers or 0), num_layers=num_layers,
        width=width, num_heads=num_heads, attention=attention,
        global_dim=1 if space.has_scale else 0, **kwargs)


def predict(model: VectorField, variables: Any, space: FlowSpace, x: Canonical,
            t: jax.Array) -> Canonical:
    """Raw model output for a batch ``x`` (leading axis ``n``) at time ``t`` (scalar or (n,))."""
    n = x.layers[0][0].shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))
    globals_ = x.log_scale[:, None] if space.has_scale else None
    out, out_globals = apply_to_mlp(model, variables, x.layers, t, globals_=globals_)
    scale = out_globals[:, 0] if space.has_scale else None
    return Canonical([(w, b) for w, b in out], scale)


def init_variables(model: VectorField, space: FlowSpace, key: jax.Array) -> Any:
    """Initial model variables, traced on one zero network of ``space``'s architecture."""
    shapes = space.coord_shapes()

    def init(k):
        # Traced as one program: eager flax init dispatches every op separately (~10x slower).
        x = jax.tree.map(lambda s: jnp.zeros((1,) + s.shape, s.dtype), shapes)
        globals_ = x.log_scale[:, None] if space.has_scale else None
        graph = mlp_to_graph(x.layers, globals_=globals_, batched=True)
        return model.init(k, graph, jnp.zeros((1,), jnp.float32))

    return jax.jit(init)(key)
