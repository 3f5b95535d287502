"""``rt``: the thesis's relational transformer over the full neural graph — field and model.

Every neuron is a node (784 input neurons included) and every weight an edge; the model is
:class:`VectorField` (sparse attention along the real edges, or dense over all node pairs),
built from the shared RT layer (:mod:`weightflow_jax.models.layers`), and :class:`RTField`
reads it as a map on flow coordinates. Equivariant to hidden-neuron permutations; runs on
other hidden widths.

With ``standardize="per_layer"`` the weight and bias features are standardized per layer
before they enter the graph and the outputs de-standardized (see
:mod:`weightflow_jax.models.base`); ``"none"`` with ``fourier_features=0`` is exactly the
thesis's model.

Config fields (``config.model.rt``): ``num_layers``, ``width``, ``num_heads``, ``mlp_ratio``,
``attention`` (sparse | dense), ``time_features``, ``standardize`` (none | per_layer),
``fourier_features``, ``fourier_scale``.

The model: a time-conditioned relational-transformer vector field over neural graphs.
``VectorField`` maps a neural graph (from :mod:`weightflow_jax.graphs`) and a time ``t`` to
one scalar per edge (weight) and per non-input node (bias), plus ``global_dim`` scalars per
graph when the graph carries Euclidean globals. ``model.apply(variables, graph, t)`` is a
pure function; outputs come back in graph layout (a ``GraphsTuple`` with array features) and
map to MLP layout with :func:`weightflow_jax.graphs.graph_to_mlp` / ``graph_to_mlps``, or all
in one go with :func:`apply_to_mlp`.

Inputs:

* node state ``h_i = Dense(bias_i) + P[pos_i] + Dense(temb_g)``, where ``P`` holds the
  learned positional embeddings (one per input neuron, one per output neuron, one shared
  per hidden layer; layout in :mod:`weightflow_jax.graphs.neural_graph`). Sharing one
  embedding per hidden layer makes the model equivariant to permutations of hidden neurons
  and lets it run on any hidden width (784-32-10 after init on 784-10-10).
* edge state ``e = Dense(weight) + Dense(temb_g)``; the two directed states of a weight are
  ``e + dir_fwd`` and ``e + dir_bwd`` (learned direction embeddings).
* time: ``temb = MLP(sinusoidal(t))`` per graph, added to nodes and edges at the input and,
  projected per layer, to the nodes at the start of every layer.
* globals (``global_dim > 0``): ``Dense(globals)`` forms a per-graph state that joins the
  per-layer conditioning and is updated after each layer from the mean of its graph's node
  states; a head reads it out.

Attention modes (field ``attention``):

* ``"sparse"``: attention along the real edges in both directions (segment ops, ``O(E)``).
* ``"dense"``: all node pairs of a graph (``(G, M, M, D)``, ``M = max_nodes_per_graph``),
  non-edges start from a learned "no edge" embedding, like the reference implementations.
  Every graph slot costs ``M x M`` pair states, padding graphs included: pad with as few
  graphs as possible (``padding_budget`` adds one), or not at all for single-architecture
  batches.
  ``dense_attend="edges"`` restricts the dense attention to real edges: then the dense mode
  computes exactly the sparse model (a cross-check of the segment ops, tested); the default
  ``"all"`` is the reference-like model, a *different* function of the same parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import ml_collections
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.graphs import mlp_to_graph
from weightflow_jax.graphs import neural_graph as ng
from weightflow_jax.models.base import (GRAPH_STANDARDIZE, CoordSpec, Field, Standardizer,
                                        graph_stats_mode, zero_coords)
from weightflow_jax.models.base import fourier_features as _fourier
from weightflow_jax.models.conditioning import time_condition_features
from weightflow_jax.models.layers import EMBED_STD, _DenseBlock, _scan_blocks, _SparseBlock
from weightflow_jax.symmetry import Canonical

__all__ = ["RTField", "default_config", "build", "stats_mode", "STANDARDIZE", "VectorField",
           "apply_to_mlp", "ATTENTION_MODES"]

STANDARDIZE = GRAPH_STANDARDIZE


ATTENTION_MODES = ("sparse", "dense")
DENSE_ATTEND = ("all", "edges")


class VectorField(nn.Module):
    """Relational-transformer vector field on neural graphs.

    Attributes:
      d_in, d_out: input/output widths of the networks; fix the positional embeddings.
      max_hidden_layers: number of hidden-layer positional embeddings (depth limit).
      num_layers: RT layers (thesis: 5).
      width: node/edge state width ``D`` (thesis: 32 MNIST, 64 breast cancer).
      num_heads: attention heads (``width % num_heads == 0``).
      mlp_ratio: hidden width of the MLPs is ``mlp_ratio * width``.
      attention: ``"sparse"`` (real edges, both directions) or ``"dense"`` (all pairs).
      dense_attend: dense mode only: ``"all"`` pairs (reference-like) or ``"edges"`` (real
        edges only: reproduces the sparse model; for cross-checks).
      max_nodes_per_graph: dense mode: node slots ``M`` per graph (static). ``None`` infers it
        from concrete inputs (outside ``jit`` only). Graphs with more nodes are an error
        when checkable (eager), silently truncated under ``jit``.
      global_dim: number of per-graph Euclidean globals in and out (``0``: none).
      time_features: sinusoidal features of ``t``.
      remat: rematerialize each layer in the backward pass (saves memory, costs compute).
      fourier_features, fourier_scale: random Fourier features of the scalar weight and bias
        features (``0``: the plain scalar, the thesis's input).

    Layers run under ``nn.scan``: their parameters sit under ``params['layers']`` with a
    leading axis of length ``num_layers``, and the layer body is compiled once.

    Input checks: shapes (feature sizes, globals width, ``t``) are checked on every call. The
    architecture checks (input/output widths vs ``d_in``/``d_out``, depth, dense slot count)
    need concrete values: they run when the graph's structure arrays are concrete (eager
    calls, ``init``, or graphs built *inside* a jitted function with ``mlp_to_graph``, whose
    structure is numpy) and are skipped for a graph passed into ``jit`` as an argument;
    :func:`apply_to_mlp` also checks statically from the weight shapes.
    """

    d_in: int
    d_out: int
    max_hidden_layers: int = 2
    num_layers: int = 5
    width: int = 32
    num_heads: int = 4
    mlp_ratio: int = 2
    attention: str = "sparse"
    dense_attend: str = "all"
    max_nodes_per_graph: int | None = None
    global_dim: int = 0
    time_features: int = 64
    remat: bool = False
    fourier_features: int = 0
    fourier_scale: float = 1.0

    def _check_config(self) -> None:
        if self.attention not in ATTENTION_MODES:
            raise ValueError(f"attention={self.attention!r}; choose one of {ATTENTION_MODES}")
        if self.dense_attend not in DENSE_ATTEND:
            raise ValueError(f"dense_attend={self.dense_attend!r}; choose one of {DENSE_ATTEND}")
        if self.width % self.num_heads:
            raise ValueError(
                f"width={self.width} is not divisible by num_heads={self.num_heads}")
        sizes_ok = min(self.d_in, self.d_out, self.num_layers, self.width) >= 1
        if not sizes_ok or self.max_hidden_layers < 0:
            raise ValueError(
                f"d_in={self.d_in}, d_out={self.d_out}, num_layers={self.num_layers}, "
                f"width={self.width} must be >= 1 and max_hidden_layers="
                f"{self.max_hidden_layers} >= 0")

    def _check_graph(self, graph: jraph.GraphsTuple) -> bool:
        ng.check_graph(graph, d_in=self.d_in, d_out=self.d_out,
                       max_hidden_layers=self.max_hidden_layers)
        has_globals = isinstance(graph.globals, dict) and "x" in graph.globals
        if has_globals:
            k = int(np.shape(graph.globals["x"])[-1]) if np.ndim(graph.globals["x"]) == 2 else -1
            if k != self.global_dim:
                raise ValueError(
                    f"graph globals have shape {tuple(np.shape(graph.globals['x']))} but the "
                    f"model was built with global_dim={self.global_dim}; expected (G, "
                    f"{self.global_dim})")
        elif self.global_dim:
            raise ValueError(
                f"the model was built with global_dim={self.global_dim} but the graph has no "
                "globals['x']; pass globals_ to mlp_to_graph")
        return has_globals

    def _times(self, t: jax.Array, n_graph: int) -> jax.Array:
        t = jnp.asarray(t, jnp.float32)
        if t.ndim == 0:
            return jnp.full((n_graph,), t)
        if t.ndim != 1 or t.shape[0] > n_graph:
            raise ValueError(
                f"t has shape {t.shape}; give a scalar or one time per graph, (k,) with "
                f"k <= {n_graph} graphs (graphs beyond k, e.g. padding, get t = 0)")
        return jnp.pad(t, (0, n_graph - t.shape[0]))

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, t: jax.Array,
                 c: jax.Array | None = None) -> jraph.GraphsTuple:
        """Evaluates the field.

        Args:
          graph: neural graph (possibly padded, possibly mixing architectures) with ``N``
            nodes, ``E`` edges, ``G`` graphs.
          t: scalar, or ``(k,)`` times for the first ``k <= G`` graphs.
          c: optional condition features ``(k, F)`` of the first ``k <= G`` graphs
            (:mod:`weightflow_jax.models.conditioning`); padding graphs get zeros.

        Returns:
          ``GraphsTuple`` with the input's structure and ``nodes`` ``(N,)`` (zero on input
          neurons and padding), ``edges`` ``(E,)`` (zero on padding), ``globals``
          ``(G, global_dim)`` or ``None``.
        """
        self._check_config()
        has_globals = self._check_graph(graph)
        d = self.width
        n, e_n, g_n = ng.graph_sizes(graph)
        nodes, edges = graph.nodes, graph.edges
        node_mask = jnp.asarray(nodes["mask"], bool)
        edge_mask = jnp.asarray(edges["mask"], bool)
        graph_mask = jnp.asarray(graph.globals["mask"], bool) if isinstance(
            graph.globals, dict) and "mask" in graph.globals else jnp.ones((g_n,), bool)
        senders = jnp.asarray(graph.senders, jnp.int32)
        receivers = jnp.asarray(graph.receivers, jnp.int32)
        node_graph = ng.node_graph_index(graph)
        edge_graph = node_graph[senders] if e_n else jnp.zeros((0,), jnp.int32)
        dtype = jnp.result_type(nodes["x"], jnp.float32)

        if c is not None:
            c = jnp.asarray(c, jnp.float32)
            c = jnp.pad(c, ((0, g_n - c.shape[0]), (0, 0)))
        temb = time_condition_features(self._times(t, g_n), self.time_features, c)
        temb = nn.Dense(d, name="time_mlp_out")(nn.gelu(nn.Dense(d, name="time_mlp_in")(temb)))

        n_pos = ng.num_positions(self.d_in, self.d_out, self.max_hidden_layers)
        pos_table = self.param("pos_embed", nn.initializers.normal(EMBED_STD), (n_pos, d), dtype)
        pos = jnp.clip(jnp.asarray(nodes["pos"], jnp.int32), 0, n_pos - 1)
        ff = lambda v: _fourier(jnp.asarray(v, dtype), self.fourier_features, self.fourier_scale)
        h = (nn.Dense(d, name="node_in")(ff(nodes["x"]))
             + pos_table[pos] + nn.Dense(d, name="node_time")(temb)[node_graph])
        e_time = nn.Dense(d, name="edge_time")(temb)
        e = (nn.Dense(d, name="edge_in")(ff(edges["x"]))
             + e_time[edge_graph])
        direction = self.param("direction_embed", nn.initializers.normal(EMBED_STD), (2, d), dtype)
        e = jnp.concatenate([e + direction[0], e + direction[1]], axis=0)  # [fwd; bwd]

        gs = None
        if has_globals:
            gs = nn.Dense(d, name="global_in")(jnp.asarray(graph.globals["x"], dtype))

        node_w = node_mask.astype(dtype)[:, None]
        block_kw = dict(width=d, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
                        has_globals=gs is not None, name="layers")
        if self.attention == "sparse":
            recv = jnp.concatenate([receivers, senders])
            send = jnp.concatenate([senders, receivers])
            msg_mask = jnp.concatenate([edge_mask, edge_mask])
            blocks = _scan_blocks(_SparseBlock, self.remat, self.num_layers)(**block_kw)
            (h, e, gs), _ = blocks((h, e, gs), (temb, node_graph, node_w, recv, send, msg_mask))
            e_fwd, e_bwd = e[:e_n], e[e_n:]
        else:
            m = self._dense_slots(graph, node_mask)
            node_start = jnp.cumsum(jnp.asarray(graph.n_node, jnp.int32)) - jnp.asarray(
                graph.n_node, jnp.int32)
            local = jnp.arange(n, dtype=jnp.int32) - node_start[node_graph]
            gslot = jnp.where(node_mask, node_graph, g_n)  # padding -> out of range (dropped)
            loc_s, loc_r = local[senders], local[receivers]
            eslot = jnp.where(edge_mask, edge_graph, g_n)
            hd = jnp.zeros((g_n, m, d), dtype).at[gslot, local].set(h, mode="drop")
            valid = jnp.zeros((g_n, m), bool).at[gslot, local].set(True, mode="drop")
            no_edge = self.param("no_edge_embed", nn.initializers.normal(EMBED_STD), (d,), dtype)
            ed = jnp.broadcast_to(no_edge + e_time[:, None, None, :], (g_n, m, m, d))
            ed = ed.at[eslot, loc_r, loc_s].set(e[:e_n], mode="drop")
            ed = ed.at[eslot, loc_s, loc_r].set(e[e_n:], mode="drop")
            if self.dense_attend == "all":
                attn_mask = valid[:, :, None] & valid[:, None, :]
            else:
                attn_mask = jnp.zeros((g_n, m, m), bool)
                attn_mask = attn_mask.at[eslot, loc_r, loc_s].set(True, mode="drop")
                attn_mask = attn_mask.at[eslot, loc_s, loc_r].set(True, mode="drop")
            slot_w = valid.astype(dtype)[..., None]
            blocks = _scan_blocks(_DenseBlock, self.remat, self.num_layers)(**block_kw)
            (hd, ed, gs), _ = blocks((hd, ed, gs), (temb, attn_mask, slot_w))
            h = hd.at[gslot, local].get(mode="fill", fill_value=0)
            e_fwd = ed.at[eslot, loc_r, loc_s].get(mode="fill", fill_value=0)
            e_bwd = ed.at[eslot, loc_s, loc_r].get(mode="fill", fill_value=0)

        kind = jnp.asarray(nodes["kind"], jnp.int32)
        node_keep = (node_mask & (kind != ng.KIND_INPUT)).astype(dtype)
        node_out = nn.Dense(1, name="node_head_out")(
            nn.gelu(nn.Dense(d, name="node_head_in")(h)))[:, 0] * node_keep
        edge_out = nn.Dense(1, name="edge_head_out")(
            nn.gelu(nn.Dense(d, name="edge_head_in")(jnp.concatenate([e_fwd, e_bwd], -1)))
        )[:, 0] * edge_mask.astype(dtype)
        glob_out = None
        if gs is not None:
            glob_out = nn.Dense(self.global_dim, name="global_head_out")(
                nn.gelu(nn.Dense(d, name="global_head_in")(gs))) * graph_mask.astype(dtype)[:, None]
        return jraph.GraphsTuple(nodes=node_out, edges=edge_out, globals=glob_out,
                                 senders=graph.senders, receivers=graph.receivers,
                                 n_node=graph.n_node, n_edge=graph.n_edge)

    def _dense_slots(self, graph: jraph.GraphsTuple, node_mask: jax.Array) -> int:
        """Static node slots ``M`` per graph for the dense mode."""
        n_node = ng._concrete(graph.n_node)
        gmask = ng._concrete(graph.globals["mask"]) if isinstance(graph.globals, dict) else None
        real_max = None
        if n_node is not None:
            real = gmask.astype(bool) if gmask is not None else np.ones(len(n_node), bool)
            real_max = int(n_node[real].max()) if real.any() else 1
        if self.max_nodes_per_graph is None:
            if real_max is None:
                raise ValueError(
                    "attention='dense' under jit needs a static max_nodes_per_graph (the largest "
                    "number of neurons of one network, e.g. 804 for 784-10-10)")
            return real_max
        if real_max is not None and real_max > self.max_nodes_per_graph:
            raise ValueError(
                f"a graph has {real_max} nodes but max_nodes_per_graph="
                f"{self.max_nodes_per_graph}; raise it to at least {real_max}")
        return int(self.max_nodes_per_graph)


def apply_to_mlp(model: VectorField, variables: Any, params: mlp.Params, t: jax.Array, *,
                 globals_: jax.Array | None = None, pad_to: Sequence[int] | None = None,
                 cond: jax.Array | None = None) -> tuple[mlp.Params, jax.Array | None]:
    """Runs ``model`` on MLP weights and returns its output in MLP layout.

    Converts (jit-friendly) with :func:`~weightflow_jax.graphs.mlp_to_graph`, checks the
    architecture against the model statically (so also under ``jit``), applies the model and
    maps the per-edge / per-node outputs back.

    Args:
      model: a :class:`VectorField`.
      variables: its variables (``{"params": ...}``).
      params: one MLP (``W`` ``(out, in)``) or a batch (leading axis ``n``).
      t: scalar or ``(n,)``.
      globals_: optional per-network globals (see ``mlp_to_graph``).
      pad_to: optional ``(n_node, n_edge, n_graph)`` padding (e.g. for the dense mode's
        static shapes or to share a compiled function).
      cond: optional condition features ``(n, F)`` of a conditioned model.

    Returns:
      ``(out_params, out_globals)``: ``out_params`` has the layout of ``params`` (input
      neurons have no bias, so nothing is lost); ``out_globals`` is ``(k,)`` / ``(n, k)`` or
      ``None``.
    """
    params = mlp.as_params(params)
    batched = np.ndim(params[0][0]) == 3
    sizes = mlp.layer_sizes(params, batched=batched)
    if sizes[0] != model.d_in or sizes[-1] != model.d_out:
        raise ValueError(
            f"network {mlp.format_arch(sizes)} has d_in={sizes[0]}, d_out={sizes[-1]} but the "
            f"model's positional embeddings were built for d_in={model.d_in}, "
            f"d_out={model.d_out}")
    if len(sizes) - 2 > model.max_hidden_layers:
        raise ValueError(
            f"network {mlp.format_arch(sizes)} has {len(sizes) - 2} hidden layers but the model "
            f"has max_hidden_layers={model.max_hidden_layers}")
    graph = ng.mlp_to_graph(params, globals_=globals_, batched=batched)
    if pad_to is not None:
        graph = ng.pad(graph, *pad_to)
    out = model.apply(variables, graph, t, cond)
    n = int(np.shape(params[0][0])[0]) if batched else None
    out_params = ng.graph_to_mlp(out, sizes, n=n)
    out_globals = None
    if out.globals is not None:
        out_globals = ng.graph_to_globals(out.globals, n=n)
    return out_params, out_globals


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
            return self.module.init(k, graph, jnp.zeros((1,), jnp.float32),
                                    self._init_condition())
        # Traced as one program: eager flax init dispatches every op separately (~10x slower).
        return jax.jit(init)(key)

    def apply(self, variables: Any, x: Canonical, t: jax.Array,
              cond: jax.Array | None = None) -> Canonical:
        t = self._times(x, t)
        c = self._condition(t.shape[0], cond)
        z = self.stats.forward(x)
        globals_ = z.log_scale[:, None] if self.spec.has_scale else None
        out, out_globals = apply_to_mlp(self.module, variables, z.layers, t, globals_=globals_,
                                        cond=c)
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
