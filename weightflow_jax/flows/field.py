"""The learned field read as a map on a flow's coordinates.

The vector fields live in :mod:`weightflow_jax.models` and are chosen by name
(``config.model.name``: ``rt``, ``compact_rt``, ``mlp``). This module connects them to a
:class:`FlowSpace`: :func:`coord_spec` says which coordinates the field serves,
:func:`fit_stats` computes its standardization statistics from the training coordinates and
:func:`make_field` builds it. ``field.apply(variables, x, t)`` returns the raw prediction
(``x1`` or a velocity, by the flow's parameterization) in the coordinates' layout.

:func:`make_model` / :func:`predict` / :func:`init_variables` are the original direct way to
use the full-graph :class:`~weightflow_jax.models.VectorField` (kept for benchmarks).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.graphs import mlp_to_graph
from weightflow_jax.models import (CoordSpec, Field, Standardizer, VectorField, apply_to_mlp,
                                   build_field, stats_mode)
from weightflow_jax.symmetry import Canonical

__all__ = ["coord_spec", "fit_stats", "make_field", "make_model", "predict", "init_variables"]


def coord_spec(space: FlowSpace, parameterization: str = "target") -> CoordSpec:
    """The coordinates of ``space`` as a field sees them."""
    return CoordSpec(space.sizes, space.has_scale, output_offset=parameterization == "target")


def fit_stats(model_cfg: ml_collections.ConfigDict, coords: Canonical) -> Standardizer:
    """The standardization statistics the chosen field needs, from training ``coords``."""
    return Standardizer.fit(stats_mode(model_cfg), coords)


def make_field(model_cfg: ml_collections.ConfigDict, space: FlowSpace, parameterization: str,
               stats: Standardizer) -> Field:
    """The field named ``model_cfg.name`` for ``space`` (see :mod:`weightflow_jax.models`)."""
    return build_field(model_cfg, coord_spec(space, parameterization), stats)


def make_model(space: FlowSpace, *, num_layers: int = 5, width: int = 32, num_heads: int = 4,
               attention: str = "sparse", max_hidden_layers: int | None = None,
               **kwargs: Any) -> VectorField:
    """A full-graph :class:`VectorField` for networks with ``space``'s input/output widths."""
    depth = len(space.sizes) - 2
    return VectorField(
        d_in=space.sizes[0], d_out=space.sizes[-1],
        max_hidden_layers=max(depth, max_hidden_layers or 0), num_layers=num_layers,
        width=width, num_heads=num_heads, attention=attention,
        global_dim=1 if space.has_scale else 0, **kwargs)


def predict(model: VectorField, variables: Any, space: FlowSpace, x: Canonical,
            t: jax.Array) -> Canonical:
    """Raw :class:`VectorField` output for a batch ``x`` at time ``t`` (scalar or (n,))."""
    n = x.layers[0][0].shape[0]
    t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))
    globals_ = x.log_scale[:, None] if space.has_scale else None
    out, out_globals = apply_to_mlp(model, variables, x.layers, t, globals_=globals_)
    scale = out_globals[:, 0] if space.has_scale else None
    return Canonical([(w, b) for w, b in out], scale)


def init_variables(model: VectorField, space: FlowSpace, key: jax.Array) -> Any:
    """Initial :class:`VectorField` variables, traced on one zero network of ``space``."""
    shapes = space.coord_shapes()

    def init(k):
        x = jax.tree.map(lambda s: jnp.zeros((1,) + s.shape, s.dtype), shapes)
        globals_ = x.log_scale[:, None] if space.has_scale else None
        graph = mlp_to_graph(x.layers, globals_=globals_, batched=True)
        return model.init(k, graph, jnp.zeros((1,), jnp.float32))

    return jax.jit(init)(key)
