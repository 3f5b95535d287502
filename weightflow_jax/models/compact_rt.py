"""``compact_rt``: relational-transformer layers on the *compact* neural graph.

The input neurons of an MLP carry no symmetry, so they need not be nodes. The compact graph
of ``(d_0, d_1, ..., d_L)`` has one node per non-input neuron (``N = d_1 + ... + d_L``) and one
edge per weight between non-input neurons (``E = sum_{l>=1} d_l d_(l+1)``); 784-10-10 gives 20
nodes and 100 edges instead of 804 and 7,940.

* A first-layer node's feature is its whole fan-in row and bias, ``[W_0[j], b_0[j]]``
  (``d_0 + 1`` numbers), embedded by one Dense map shared by all nodes of that layer; other
  nodes get their bias, edges their weight (optionally through random Fourier features).
* Positional embeddings: one shared per hidden layer, one per output neuron, so the model is
  exactly equivariant to permutations of hidden neurons and runs on any hidden width (the
  input width ``d_0`` is fixed by the first layer's Dense map).
* Time: sinusoidal features -> MLP, added to every node and edge at the input and, projected,
  to the nodes at the start of every layer; ``log_scale`` (exact canonical mode) is a
  per-graph global state, as in :class:`~weightflow_jax.models.VectorField`.
* Layers: :class:`~weightflow_jax.models.RTLayer` in its sparse mode (segment ops along the
  real edges in both directions), scanned over depth.
* Heads (zero-initialised last layers, so the initial prediction is the de-standardized
  zero: the per-layer data mean for an ``x1`` prediction): a first-layer node's state ->
  its fan-in row and bias with one shared Dense; other nodes -> bias; the two directed
  states of an edge -> its weight; the global state -> ``log_scale``.

Features are standardized per layer (``standardize="per_layer"``, the default) and outputs
de-standardized, see :mod:`weightflow_jax.models.base`. With ``input_skip`` the standardized
prediction is ``z_t + out`` instead of ``out``.

Config fields (``config.model.compact_rt``): ``num_layers``, ``width``, ``num_heads``,
``mlp_ratio``, ``time_features``, ``standardize`` (none | per_layer), ``fourier_features``,
``fourier_scale``, ``input_skip``, ``max_hidden_layers`` (depth limit of the positional
embeddings; ``0`` = the training depth).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.models.base import (GRAPH_STANDARDIZE, CoordSpec, ModuleField,
                                        Standardizer, fourier_features, graph_stats_mode)
from weightflow_jax.models.conditioning import time_condition_features
from weightflow_jax.models.layers import EMBED_STD, _scan_blocks, _SparseBlock
from weightflow_jax.symmetry import Canonical

__all__ = ["CompactRT", "CompactRTField", "compact_structure", "default_config", "build",
           "stats_mode",
           "STANDARDIZE"]

STANDARDIZE = GRAPH_STANDARDIZE


def default_config() -> ml_collections.ConfigDict:
    """3 layers of width 32: on 2 CPU cores it learned breast cancer faster per second than
    4 x 64 (docs/learning/breast_cancer_geometric.md)."""
    return ml_collections.ConfigDict(dict(
        num_layers=3, width=32, num_heads=4, mlp_ratio=2, time_features=64,
        standardize="per_layer", fourier_features=0, fourier_scale=1.0, input_skip=False,
        max_hidden_layers=0))


@functools.lru_cache(maxsize=64)
def compact_structure(sizes: tuple[int, ...], max_hidden_layers: int) -> dict[str, np.ndarray]:
    """Static structure of one network's compact graph (numpy, cached).

    Returns:
      ``pos`` ``(N,)`` positional index (hidden layer ``l`` = 1..L-1 -> ``l - 1``; output
      neuron ``j`` -> ``max_hidden_layers + j``); ``senders``/``receivers`` ``(E,)`` in the
      row-major order of ``W_1, ..., W_(L-1)``; ``n_first`` = ``d_1``.
    """
    widths = sizes[1:]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    pos = []
    for li, w in enumerate(widths):
        if li < len(widths) - 1:
            pos.append(np.full((w,), li))
        else:
            pos.append(max_hidden_layers + np.arange(w))
    senders, receivers = [], []
    for li in range(len(widths) - 1):
        d_s, d_r = widths[li], widths[li + 1]
        r, s = np.meshgrid(np.arange(d_r), np.arange(d_s), indexing="ij")
        senders.append(offsets[li] + s.reshape(-1))
        receivers.append(offsets[li + 1] + r.reshape(-1))
    cat = lambda xs: np.concatenate(xs).astype(np.int32) if xs else np.zeros((0,), np.int32)
    return {"pos": cat(pos), "senders": cat(senders), "receivers": cat(receivers),
            "n_first": int(widths[0])}


def _mlp_head(x: jax.Array, width: int, out: int, name: str) -> jax.Array:
    h = nn.gelu(nn.Dense(width, name=f"{name}_in")(x))
    return nn.Dense(out, kernel_init=nn.initializers.zeros, name=f"{name}_out")(h)


class CompactRT(nn.Module):
    """The compact-graph RT on standardized coordinates (a batch ``Canonical``).

    Attributes:
      d_in, d_out: the networks' input/output widths.
      max_hidden_layers: hidden-layer positional embeddings (depth limit).
      num_layers, width, num_heads, mlp_ratio, time_features: as
        :class:`~weightflow_jax.models.VectorField`.
      fourier_features, fourier_scale: random Fourier features of scalar node/edge features.
      has_scale: coordinates carry ``log_scale`` (a per-graph global).
    """

    d_in: int
    d_out: int
    max_hidden_layers: int = 1
    num_layers: int = 3
    width: int = 32
    num_heads: int = 4
    mlp_ratio: int = 2
    time_features: int = 64
    fourier_features: int = 0
    fourier_scale: float = 1.0
    has_scale: bool = False

    @nn.compact
    def __call__(self, z: Canonical, t: jax.Array, c: jax.Array | None = None) -> Canonical:
        sizes = (int(z.layers[0][0].shape[-1]),) + tuple(int(w.shape[-2]) for w, _ in z.layers)
        if sizes[0] != self.d_in or sizes[-1] != self.d_out:
            raise ValueError(f"compact_rt was built for d_in={self.d_in}, d_out={self.d_out}; "
                             f"got {mlp.format_arch(sizes)}")
        if len(sizes) - 2 > self.max_hidden_layers:
            raise ValueError(f"{mlp.format_arch(sizes)} has {len(sizes) - 2} hidden layers; "
                             f"compact_rt covers at most {self.max_hidden_layers}")
        if self.width % self.num_heads:
            raise ValueError(f"width={self.width} is not divisible by num_heads="
                             f"{self.num_heads}")
        d = self.width
        n = z.layers[0][0].shape[0]
        st = compact_structure(sizes, self.max_hidden_layers)
        n_nodes, n_edges, d1 = len(st["pos"]), len(st["senders"]), st["n_first"]
        dtype = jnp.result_type(z.layers[0][0], jnp.float32)
        ff = lambda v: fourier_features(v, self.fourier_features, self.fourier_scale)

        temb = time_condition_features(t, self.time_features, c)
        temb = nn.Dense(d, name="time_mlp_out")(nn.gelu(nn.Dense(d, name="time_mlp_in")(temb)))

        w0, b0 = z.layers[0]
        first = nn.Dense(d, name="first_in")(jnp.concatenate([w0, b0[..., None]], -1))
        rest = [b for _, b in z.layers[1:]]
        if rest:
            rest = nn.Dense(d, name="bias_in")(ff(jnp.concatenate(rest, axis=1)))
            h = jnp.concatenate([first, rest], axis=1)  # (n, N, D)
        else:
            h = first
        n_pos = self.max_hidden_layers + self.d_out
        pos_table = self.param("pos_embed", nn.initializers.normal(EMBED_STD), (n_pos, d), dtype)
        h = h + pos_table[st["pos"]][None] + nn.Dense(d, name="node_time")(temb)[:, None]
        h = h.reshape(n * n_nodes, d)

        node_graph = jnp.repeat(jnp.arange(n, dtype=jnp.int32), n_nodes)
        base = (np.arange(n, dtype=np.int32) * n_nodes)[:, None]
        senders = (base + st["senders"][None]).reshape(-1)
        receivers = (base + st["receivers"][None]).reshape(-1)
        gs = None
        if self.has_scale:
            gs = nn.Dense(d, name="global_in")(z.log_scale[:, None])
        if n_edges:
            wflat = jnp.concatenate([w.reshape(n, -1) for w, _ in z.layers[1:]], axis=1)
            e = (nn.Dense(d, name="edge_in")(ff(wflat))
                 + nn.Dense(d, name="edge_time")(temb)[:, None]).reshape(n * n_edges, d)
            direction = self.param("direction_embed", nn.initializers.normal(EMBED_STD),
                                   (2, d), dtype)
            e = jnp.concatenate([e + direction[0], e + direction[1]], axis=0)
            recv = jnp.concatenate([receivers, senders])
            send = jnp.concatenate([senders, receivers])
        else:  # a network without hidden layers: nodes attend to nothing
            e = jnp.zeros((0, d), dtype)
            recv = send = jnp.zeros((0,), jnp.int32)
        msg_mask = jnp.ones(recv.shape, bool)
        node_w = jnp.ones((n * n_nodes, 1), dtype)
        blocks = _scan_blocks(_SparseBlock, False, self.num_layers)(
            width=d, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            has_globals=gs is not None, name="layers")
        (h, e, gs), _ = blocks((h, e, gs), (temb, node_graph, node_w, recv, send, msg_mask))

        h = h.reshape(n, n_nodes, d)
        row = _mlp_head(h[:, :d1], d, self.d_in + 1, "first_head")
        layers = [(row[..., :-1], row[..., -1])]
        if len(sizes) > 2:
            bias = _mlp_head(h[:, d1:], d, 1, "bias_head")[..., 0]
            e_fwd, e_bwd = e[:n * n_edges], e[n * n_edges:]
            wout = _mlp_head(jnp.concatenate([e_fwd, e_bwd], -1), d, 1, "edge_head")
            wout = wout.reshape(n, n_edges)
            bi = wi = 0
            for (wo, wn), (bo,) in mlp.param_shapes(sizes)[1:]:
                layers.append((wout[:, wi:wi + wo * wn].reshape(n, wo, wn), bias[:, bi:bi + bo]))
                wi += wo * wn
                bi += bo
        scale = _mlp_head(gs, d, 1, "global_head")[:, 0] if gs is not None else None
        return Canonical(layers, scale)


class CompactRTField(ModuleField):
    """:class:`CompactRT` with per-layer standardization, as a field on coordinates."""

    name = "compact_rt"
    equivariant = True

    def __init__(self, spec: CoordSpec, stats: Standardizer, module: CompactRT,
                 input_skip: bool):
        super().__init__(spec, stats, module, input_skip)
        self.max_hidden_layers = module.max_hidden_layers


stats_mode = graph_stats_mode


def build(cfg: ml_collections.ConfigDict, spec: CoordSpec,
          stats: Standardizer) -> CompactRTField:
    """A :class:`CompactRTField` for ``spec`` from ``config.model.compact_rt``."""
    depth = len(spec.sizes) - 2
    module = CompactRT(
        d_in=spec.sizes[0], d_out=spec.sizes[-1],
        max_hidden_layers=max(depth, int(cfg.max_hidden_layers), 1),
        num_layers=int(cfg.num_layers), width=int(cfg.width), num_heads=int(cfg.num_heads),
        mlp_ratio=int(cfg.mlp_ratio), time_features=int(cfg.time_features),
        fourier_features=int(cfg.fourier_features), fourier_scale=float(cfg.fourier_scale),
        has_scale=spec.has_scale)
    return CompactRTField(spec, stats, module, bool(cfg.input_skip))
