"""``rt``: the thesis's relational transformer over the full neural graph.

Every neuron is a node (784 input neurons included) and every weight an edge; the model is
:class:`~weightflow_jax.models.VectorField` (sparse attention along the real edges, or dense
over all node pairs). Equivariant to hidden-neuron permutations; runs on other hidden widths.

With ``standardize="per_layer"`` the weight and bias features are standardized per layer
before they enter the graph and the outputs de-standardized (see
:mod:`weightflow_jax.models.base`); ``"none"`` with ``fourier_features=0`` is exactly the
thesis's model.

Config fields (``config.model.rt``): ``num_layers``, ``width``, ``num_heads``, ``mlp_ratio``,
``attention`` (sparse | dense), ``time_features``, ``standardize`` (none | per_layer),
``fourier_features``, ``fourier_scale``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from weightflow_jax import mlp
from weightflow_jax.graphs import mlp_to_graph
from weightflow_jax.models.base import (GRAPH_STANDARDIZE, CoordSpec, Field, Standardizer,
                                        graph_stats_mode, zero_coords)
from weightflow_jax.models.vector_field import VectorField, apply_to_mlp
from weightflow_jax.symmetry import Canonical

__all__ = ["RTField", "default_config", "build", "stats_mode", "STANDARDIZE"]

STANDARDIZE = GRAPH_STANDARDIZE


def default_config() -> ml_collections.ConfigDict:
    """The thesis's MNIST model (5 layers, width 32), unstandardized."""
    return ml_collections.ConfigDict(dict(
        num_layers=5, width=32, num_heads=4, mlp_ratio=2, attention="sparse",
        time_features=64, standardize="none", fourier_features=0, fourier_scale=1.0))


class RTField(Field):
    """:class:`VectorField` read as a map on flow coordinates."""

    name = "rt"
    equivariant = True

    def __init__(self, spec: CoordSpec, stats: Standardizer, module: VectorField):
        super().__init__(spec, stats)
        self.module = module
        self.max_hidden_layers = module.max_hidden_layers

    def init(self, key: jax.Array) -> Any:
        def init(k):
            x = zero_coords(self.spec.sizes, self.spec.has_scale)
            globals_ = x.log_scale[:, None] if self.spec.has_scale else None
            graph = mlp_to_graph(x.layers, globals_=globals_, batched=True)
            return self.module.init(k, graph, jnp.zeros((1,), jnp.float32))
        # Traced as one program: eager flax init dispatches every op separately (~10x slower).
        return jax.jit(init)(key)

    def apply(self, variables: Any, x: Canonical, t: jax.Array) -> Canonical:
        t = self._times(x, t)
        z = self.stats.forward(x)
        globals_ = z.log_scale[:, None] if self.spec.has_scale else None
        out, out_globals = apply_to_mlp(self.module, variables, z.layers, t, globals_=globals_)
        raw = Canonical([(w, b) for w, b in out],
                        out_globals[:, 0] if self.spec.has_scale else None)
        return self.stats.inverse(raw, offset=self.spec.output_offset)


stats_mode = graph_stats_mode


def build(cfg: ml_collections.ConfigDict, spec: CoordSpec, stats: Standardizer) -> RTField:
    """An :class:`RTField` for ``spec`` from ``config.model.rt``."""
    depth = len(spec.sizes) - 2
    module = VectorField(
        d_in=spec.sizes[0], d_out=spec.sizes[-1], max_hidden_layers=max(depth, 1),
        num_layers=int(cfg.num_layers), width=int(cfg.width), num_heads=int(cfg.num_heads),
        mlp_ratio=int(cfg.mlp_ratio), attention=str(cfg.attention),
        time_features=int(cfg.time_features), global_dim=1 if spec.has_scale else 0,
        fourier_features=int(cfg.fourier_features), fourier_scale=float(cfg.fourier_scale))
    return RTField(spec, stats, module)
