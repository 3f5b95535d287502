"""Neural graphs: MLP weights <-> ``jraph.GraphsTuple`` (one network, a batch, or a mix).

One node per neuron, one edge per weight (Kofinas et al. 2024). For an MLP with layer sizes
``(d_0, ..., d_L)``:

* **Nodes** are numbered layer by layer: the ``d_0`` input neurons first, then layer 1, ...,
  then the ``d_L`` output neurons (``N = sum(d_l)`` nodes). Node feature ``x`` = the neuron's
  bias (``0`` for input neurons).
* **Edges** are numbered layer by layer and, inside layer ``l``, in the row-major order of
  ``W_l`` (shape ``(d_(l+1), d_l)``): edge ``o * d_l + i`` of layer ``l`` carries ``W_l[o, i]``,
  its sender is neuron ``i`` of layer ``l`` and its receiver is neuron ``o`` of layer ``l + 1``
  (``E = sum(d_l d_(l+1))`` edges). So ``W.reshape(-1)`` *is* the edge feature block and the
  conversion is a pure reshape/concatenate.

Features are dicts (jraph allows any pytree):

* ``nodes``: ``x`` float ``(N,)`` bias; ``pos`` int32 ``(N,)`` positional-embedding index;
  ``layer`` int32 ``(N,)`` layer index ``0..L``; ``index`` int32 ``(N,)`` index of the neuron
  inside its layer; ``kind`` int32 ``(N,)`` one of :data:`KIND_INPUT`, :data:`KIND_HIDDEN`,
  :data:`KIND_OUTPUT`, :data:`KIND_PAD`; ``mask`` bool ``(N,)`` (``False`` on padding).
* ``edges``: ``x`` float ``(E,)`` weight; ``layer`` int32 ``(E,)`` index ``l`` of the weight
  matrix ``W_l``; ``mask`` bool ``(E,)``.
* ``globals``: ``mask`` bool ``(G,)`` and, when given, ``x`` float ``(G, k)`` (per-network
  Euclidean extras, e.g. the canonical form's last-layer log-norm).

**Positional index layout** (``pos``), chosen so that input/output indices do not depend on the
depth of the network::

    [0, d_in)                     one per input neuron
    [d_in, d_in + d_out)          one per output neuron
    d_in + d_out + (l - 1)        ONE shared by all neurons of hidden layer l = 1..L-1

A model built for ``(d_in, d_out, max_hidden_layers)`` therefore needs
:func:`num_positions` ``= d_in + d_out + max_hidden_layers`` embeddings and can read any
architecture with the same input/output widths and at most ``max_hidden_layers`` hidden
layers, of any hidden width (784-32-10 after training on 784-10-10).

The graph *structure* (senders, receivers, indices) of an architecture is static numpy,
computed once and cached; weights -> features is a pure ``jnp`` reshape/concatenate, so
:func:`mlp_to_graph`, :func:`concat_graphs`, :func:`pad` and :func:`graph_to_mlp` all work
inside ``jax.jit`` (the shapes are static) and under ``jax.grad``.

Padding follows the jraph convention: all padding nodes and edges go into one padding graph
appended after the real graphs (padding edges are self-loops on the first padding node),
followed by empty graphs. Use :func:`padding_budget` to size a whole run once.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jraph
import numpy as np

from weightflow_jax import mlp

Array = Any
Params = mlp.Params

__all__ = [
    "KIND_INPUT",
    "KIND_HIDDEN",
    "KIND_OUTPUT",
    "KIND_PAD",
    "Structure",
    "PadSizes",
    "structure",
    "num_positions",
    "mlp_to_graph",
    "mlps_to_graph",
    "concat_graphs",
    "pad",
    "padding_budget",
    "graph_to_mlp",
    "graph_to_mlps",
    "graph_to_globals",
    "blocks_of",
    "node_graph_index",
    "check_graph",
    "graph_sizes",
]

KIND_INPUT = 0
KIND_HIDDEN = 1
KIND_OUTPUT = 2
KIND_PAD = 3

_NODE_KEYS = ("x", "pos", "layer", "index", "kind", "mask")
_EDGE_KEYS = ("x", "layer", "mask")


class Structure(NamedTuple):
    """Static (numpy, read-only) structure of the neural graph of one architecture.

    Attributes:
      sizes: ``(d_0, ..., d_L)``.
      n_node: ``N = sum(sizes)``.
      n_edge: ``E = sum(d_l * d_(l+1))``.
      senders, receivers: int32 ``(E,)``.
      node_pos, node_layer, node_index, node_kind: int32 ``(N,)``.
      edge_layer: int32 ``(E,)``.
      node_offsets: int ``(L + 2,)``: nodes of layer ``l`` are ``[node_offsets[l],
        node_offsets[l+1])``.
      edge_offsets: int ``(L + 1,)``: edges of ``W_l`` are ``[edge_offsets[l],
        edge_offsets[l+1])``.
    """

    sizes: tuple[int, ...]
    n_node: int
    n_edge: int
    senders: np.ndarray
    receivers: np.ndarray
    node_pos: np.ndarray
    node_layer: np.ndarray
    node_index: np.ndarray
    node_kind: np.ndarray
    edge_layer: np.ndarray
    node_offsets: tuple[int, ...]
    edge_offsets: tuple[int, ...]


class PadSizes(NamedTuple):
    """Static padded sizes of a batch of graphs (arguments of :func:`pad`)."""

    n_node: int
    n_edge: int
    n_graph: int


def num_positions(d_in: int, d_out: int, max_hidden_layers: int) -> int:
    """Number of positional embeddings for the layout described in the module docstring."""
    return int(d_in) + int(d_out) + int(max_hidden_layers)


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


@functools.lru_cache(maxsize=256)
def _structure(sizes: tuple[int, ...]) -> Structure:
    d_in, d_out = sizes[0], sizes[-1]
    n_layers = len(sizes) - 1
    node_off = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    edge_counts = [sizes[l] * sizes[l + 1] for l in range(n_layers)]
    edge_off = np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64)
    pos, layer, index, kind = [], [], [], []
    for l, d in enumerate(sizes):
        idx = np.arange(d, dtype=np.int32)
        index.append(idx)
        layer.append(np.full(d, l, np.int32))
        if l == 0:
            pos.append(idx)
            kind.append(np.full(d, KIND_INPUT, np.int32))
        elif l == n_layers:
            pos.append(d_in + idx)
            kind.append(np.full(d, KIND_OUTPUT, np.int32))
        else:
            pos.append(np.full(d, d_in + d_out + l - 1, np.int32))
            kind.append(np.full(d, KIND_HIDDEN, np.int32))
    senders, receivers, edge_layer = [], [], []
    for l in range(n_layers):
        d_i, d_o = sizes[l], sizes[l + 1]
        o, i = np.meshgrid(np.arange(d_o), np.arange(d_i), indexing="ij")  # row-major (o, i)
        senders.append(node_off[l] + i.reshape(-1))
        receivers.append(node_off[l + 1] + o.reshape(-1))
        edge_layer.append(np.full(d_o * d_i, l, np.int32))
    return Structure(
        sizes=sizes,
        n_node=int(node_off[-1]),
        n_edge=int(edge_off[-1]),
        senders=_readonly(np.concatenate(senders).astype(np.int32)),
        receivers=_readonly(np.concatenate(receivers).astype(np.int32)),
        node_pos=_readonly(np.concatenate(pos)),
        node_layer=_readonly(np.concatenate(layer)),
        node_index=_readonly(np.concatenate(index)),
        node_kind=_readonly(np.concatenate(kind)),
        edge_layer=_readonly(np.concatenate(edge_layer)),
        node_offsets=tuple(int(v) for v in node_off),
        edge_offsets=tuple(int(v) for v in edge_off),
    )


def structure(sizes: Sequence[int] | str) -> Structure:
    """Cached static structure of the neural graph of architecture ``sizes``.

    Args:
      sizes: ``(d_0, ..., d_L)`` or ``"784-10-10"``.
    """
    return _structure(mlp.parse_arch(sizes))


@functools.lru_cache(maxsize=256)
def _batched_structure(sizes: tuple[int, ...], n: int) -> dict[str, np.ndarray]:
    s = _structure(sizes)
    node_shift = (np.arange(n, dtype=np.int32) * s.n_node)[:, None]
    out = {
        "senders": (s.senders[None, :] + node_shift).reshape(-1),
        "receivers": (s.receivers[None, :] + node_shift).reshape(-1),
        "pos": np.tile(s.node_pos, n),
        "layer": np.tile(s.node_layer, n),
        "index": np.tile(s.node_index, n),
        "kind": np.tile(s.node_kind, n),
        "node_mask": np.ones(n * s.n_node, bool),
        "edge_layer": np.tile(s.edge_layer, n),
        "edge_mask": np.ones(n * s.n_edge, bool),
        "graph_mask": np.ones(n, bool),
        "n_node": np.full(n, s.n_node, np.int32),
        "n_edge": np.full(n, s.n_edge, np.int32),
    }
    return {k: _readonly(v.astype(np.int32) if v.dtype != bool else v) for k, v in out.items()}


def _is_numpy(*arrays) -> bool:
    return all(isinstance(a, (np.ndarray, np.generic)) for a in arrays)


def _cat(arrays: Sequence[Array]) -> Array:
    if _is_numpy(*arrays):
        return np.concatenate(arrays, axis=0)
    return jnp.concatenate([jnp.asarray(a) for a in arrays], axis=0)


def _x(feat: Any, what: str) -> Array:
    if isinstance(feat, dict):
        if "x" not in feat:
            raise ValueError(f"graph {what} dict has no 'x' entry (keys {sorted(feat)})")
        return feat["x"]
    if feat is None:
        raise ValueError(f"graph has no {what} features")
    return feat


def mlp_to_graph(params: Params, *, globals_: Array | None = None,
                 batched: bool | None = None) -> jraph.GraphsTuple:
    """Neural graph of one MLP or of a batch of MLPs of the same architecture.

    Args:
      params: list of ``(W, b)``, ``W`` ``(out, in)`` and ``b`` ``(out,)``, or with a leading
        batch axis ``n`` on every array.
      globals_: optional per-network Euclidean features: ``()`` or ``(k,)`` for one network,
        ``(n,)`` or ``(n, k)`` for a batch (a scalar per network becomes ``k = 1``).
      batched: whether ``params`` carry a batch axis; ``None`` infers it from ``W``'s rank.

    Returns:
      A ``GraphsTuple`` with ``n`` graphs (``1`` for a single network), ``n * N`` nodes and
      ``n * E`` edges, features as described in the module docstring. Structure arrays are
      numpy (static), ``x`` arrays are ``jnp`` (or numpy if the weights were numpy).
    """
    params = mlp.as_params(params)
    if batched is None:
        batched = np.ndim(params[0][0]) == 3
    sizes = mlp.validate(params, batched=batched, check_finite=False)
    _structure(sizes)  # builds (and caches) the static structure; validates sizes
    n = int(np.shape(params[0][0])[0]) if batched else 1
    xp = np if _is_numpy(*[a for layer in params for a in layer]) else jnp
    dtype = xp.result_type(*[a for layer in params for a in layer])
    if not xp.issubdtype(dtype, xp.floating):
        dtype = xp.float32
    bs = [xp.reshape(xp.asarray(b, dtype), (n, -1)) for _, b in params]
    ws = [xp.reshape(xp.asarray(w, dtype), (n, -1)) for w, _ in params]
    node_x = xp.concatenate([xp.zeros((n, sizes[0]), dtype)] + bs, axis=1).reshape(-1)
    edge_x = xp.concatenate(ws, axis=1).reshape(-1)
    st = _batched_structure(sizes, n)
    glob = {"mask": st["graph_mask"]}
    if globals_ is not None:
        g = globals_ if isinstance(globals_, jax.Array) else np.asarray(globals_)
        gshape = tuple(np.shape(g))
        if batched:
            if len(gshape) not in (1, 2) or gshape[0] != n:
                raise ValueError(
                    f"globals_ has shape {gshape} but a batch of {n} networks needs ({n},) "
                    f"or ({n}, k)")
            g = g.reshape(n, -1)
        else:
            if len(gshape) > 1:
                raise ValueError(
                    f"globals_ has shape {gshape} but a single network needs () or (k,); "
                    "pass batched params for per-network globals")
            g = g.reshape(1, -1)
        gx = jnp if isinstance(g, jax.Array) else np
        glob["x"] = gx.asarray(g, dtype)
    return jraph.GraphsTuple(
        nodes={"x": node_x, "pos": st["pos"], "layer": st["layer"], "index": st["index"],
               "kind": st["kind"], "mask": st["node_mask"]},
        edges={"x": edge_x, "layer": st["edge_layer"], "mask": st["edge_mask"]},
        senders=st["senders"],
        receivers=st["receivers"],
        globals=glob,
        n_node=st["n_node"],
        n_edge=st["n_edge"],
    )


def concat_graphs(graphs: Sequence[jraph.GraphsTuple]) -> jraph.GraphsTuple:
    """Concatenates graphs (each possibly holding several graphs) into one ``GraphsTuple``.

    Like ``jraph.batch`` but keeps integer metadata and static numpy structure, and works
    under ``jit`` (offsets come from static shapes). All inputs must have the same feature
    keys (e.g. all with or all without ``globals['x']``).
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("concat_graphs needs at least one graph")
    struct0 = jax.tree_util.tree_structure(graphs[0])
    for i, g in enumerate(graphs[1:], 1):
        if jax.tree_util.tree_structure(g) != struct0:
            raise ValueError(
                f"graph {i} has feature structure {jax.tree_util.tree_structure(g)} but graph 0 "
                f"has {struct0}; give all graphs the same feature keys (globals_ on all or none)")
    if len(graphs) == 1:
        return graphs[0]
    offsets = np.cumsum([0] + [_num_nodes(g) for g in graphs])
    senders = _cat([g.senders + np.int32(o) for g, o in zip(graphs, offsets)])
    receivers = _cat([g.receivers + np.int32(o) for g, o in zip(graphs, offsets)])
    cat_tree = lambda *xs: _cat(xs)  # noqa: E731
    return jraph.GraphsTuple(
        nodes=jax.tree_util.tree_map(cat_tree, *[g.nodes for g in graphs]),
        edges=jax.tree_util.tree_map(cat_tree, *[g.edges for g in graphs]),
        globals=jax.tree_util.tree_map(cat_tree, *[g.globals for g in graphs]),
        senders=senders,
        receivers=receivers,
        n_node=_cat([g.n_node for g in graphs]),
        n_edge=_cat([g.n_edge for g in graphs]),
    )


def _num_nodes(graph: jraph.GraphsTuple) -> int:
    leaves = jax.tree_util.tree_leaves(graph.nodes)
    if not leaves:
        raise ValueError("graph has no node features; cannot infer the number of nodes")
    return int(np.shape(leaves[0])[0])


def _num_edges(graph: jraph.GraphsTuple) -> int:
    return int(np.shape(graph.senders)[0])


def graph_sizes(graph: jraph.GraphsTuple) -> PadSizes:
    """Static ``(n_node, n_edge, n_graph)`` of a ``GraphsTuple`` (from array shapes)."""
    return PadSizes(_num_nodes(graph), _num_edges(graph), int(np.shape(graph.n_node)[0]))


def mlps_to_graph(param_sets: Sequence[Params], *,
                  globals_: Sequence[Array | None] | None = None,
                  pad_to: PadSizes | tuple[int, int, int] | None = None) -> jraph.GraphsTuple:
    """One ``GraphsTuple`` from several MLP batches, possibly of different architectures.

    Args:
      param_sets: sequence of params, each a single MLP or a batch (``W`` rank 3); e.g.
        ``[batch_784_10_10, batch_784_32_10]``. Graph order follows the sequence.
      globals_: ``None`` or one globals array per entry (see :func:`mlp_to_graph`).
      pad_to: optional ``(n_node, n_edge, n_graph)`` passed to :func:`pad`.

    Returns:
      The concatenated (and optionally padded) graph. Map it (or a model output on it) back
      with ``graph_to_mlps(graph, blocks_of(param_sets))``.
    """
    param_sets = list(param_sets)
    if globals_ is None:
        globals_ = [None] * len(param_sets)
    if len(globals_) != len(param_sets):
        raise ValueError(
            f"got {len(globals_)} globals_ entries for {len(param_sets)} parameter sets")
    graph = concat_graphs([mlp_to_graph(p, globals_=g) for p, g in zip(param_sets, globals_)])
    if pad_to is not None:
        graph = pad(graph, *pad_to)
    return graph


def blocks_of(param_sets: Sequence[Params]) -> list[tuple[tuple[int, ...], int | None]]:
    """``[(sizes, n), ...]`` describing ``param_sets`` (``n = None`` for a single network).

    This is the layout argument of :func:`graph_to_mlps`.
    """
    out = []
    for p in param_sets:
        p = mlp.as_params(p)
        batched = np.ndim(p[0][0]) == 3
        out.append((mlp.layer_sizes(p, batched=batched),
                    int(np.shape(p[0][0])[0]) if batched else None))
    return out


def pad(graph: jraph.GraphsTuple, n_node: int, n_edge: int, n_graph: int) -> jraph.GraphsTuple:
    """Pads ``graph`` to static sizes (works under ``jit``).

    Padding nodes/edges go to one padding graph appended after the real graphs (padding edges
    are self-loops on the first padding node), then empty graphs. Padding features are zero,
    masks ``False``, ``kind`` is :data:`KIND_PAD`; real nodes and edges keep their indices.

    Args:
      graph: a graph from :func:`mlp_to_graph` / :func:`concat_graphs` (or any GraphsTuple
        whose features are arrays or dicts of arrays).
      n_node, n_edge, n_graph: the padded totals.

    Returns:
      The padded graph; ``graph`` itself if it already has exactly these sizes.

    Raises:
      ValueError if the graph is larger than the padding, or if padding is needed but
      ``n_node`` / ``n_graph`` leave no room for the padding graph and its node.
    """
    cur = graph_sizes(graph)
    n_node, n_edge, n_graph = int(n_node), int(n_edge), int(n_graph)
    if (n_node, n_edge, n_graph) == tuple(cur):
        return graph
    if n_node <= cur.n_node or n_graph <= cur.n_graph or n_edge < cur.n_edge:
        raise ValueError(
            f"padding too small: graph has {cur.n_node} nodes, {cur.n_edge} edges, "
            f"{cur.n_graph} graphs but the padding is n_node={n_node}, n_edge={n_edge}, "
            f"n_graph={n_graph}; padding needs n_node >= {cur.n_node + 1}, n_edge >= "
            f"{cur.n_edge}, n_graph >= {cur.n_graph + 1} (one padding graph holding at least "
            "one padding node); use padding_budget() to size it")
    dn, de, dg = n_node - cur.n_node, n_edge - cur.n_edge, n_graph - cur.n_graph

    def pad_leaf(a, k, fill=0):
        a_np = _is_numpy(a)
        xp = np if a_np else jnp
        extra = xp.full((k,) + tuple(np.shape(a)[1:]), fill, dtype=a.dtype)
        return xp.concatenate([a, extra], axis=0)

    def pad_feat(feat, k):
        if isinstance(feat, dict):
            return {key: pad_leaf(v, k, KIND_PAD if key == "kind" else 0)
                    for key, v in feat.items()}
        return jax.tree_util.tree_map(lambda a: pad_leaf(a, k), feat)

    pad_node = np.int32(cur.n_node)
    xp_s = np if _is_numpy(graph.senders) else jnp
    senders = xp_s.concatenate([graph.senders, np.full(de, pad_node, np.int32)])
    xp_r = np if _is_numpy(graph.receivers) else jnp
    receivers = xp_r.concatenate([graph.receivers, np.full(de, pad_node, np.int32)])
    extra_n = np.zeros(dg, np.int32)
    extra_n[0] = dn
    extra_e = np.zeros(dg, np.int32)
    extra_e[0] = de
    xp_n = np if _is_numpy(graph.n_node) else jnp
    xp_e = np if _is_numpy(graph.n_edge) else jnp
    return jraph.GraphsTuple(
        nodes=pad_feat(graph.nodes, dn),
        edges=pad_feat(graph.edges, de),
        globals=pad_feat(graph.globals, dg) if graph.globals is not None else None,
        senders=senders,
        receivers=receivers,
        n_node=xp_n.concatenate([graph.n_node, extra_n.astype(graph.n_node.dtype)]),
        n_edge=xp_e.concatenate([graph.n_edge, extra_e.astype(graph.n_edge.dtype)]),
    )


def padding_budget(archs: Sequence[Sequence[int] | str], batch_size: int) -> PadSizes:
    """Static padding that fits any batch of ``batch_size`` networks drawn from ``archs``.

    ``n_node = batch_size * max N + 1``, ``n_edge = batch_size * max E``,
    ``n_graph = batch_size + 1`` (one padding graph). Pass the result to :func:`pad` so one
    compiled step serves a whole run, even for batches mixing architectures.
    """
    if not archs:
        raise ValueError("padding_budget needs at least one architecture")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    structs = [structure(a) for a in archs]
    return PadSizes(
        n_node=batch_size * max(s.n_node for s in structs) + 1,
        n_edge=batch_size * max(s.n_edge for s in structs),
        n_graph=batch_size + 1,
    )


def graph_to_mlp(graph: jraph.GraphsTuple | tuple[Array, Array], sizes: Sequence[int] | str, *,
                 n: int | None = None, node_offset: int = 0,
                 edge_offset: int = 0) -> Params:
    """Exact inverse of :func:`mlp_to_graph`; also maps model outputs back to MLP layout.

    Reads ``n`` consecutive networks of architecture ``sizes`` starting at node
    ``node_offset`` and edge ``edge_offset``. Node values of input neurons are ignored.

    Args:
      graph: a ``GraphsTuple`` whose ``nodes``/``edges`` are arrays ``(N_tot, ...)`` /
        ``(E_tot, ...)`` (model outputs) or dicts with ``'x'``; or a pair
        ``(node_values, edge_values)``. Trailing feature dims are kept.
      sizes: the architecture, ``(d_0, ..., d_L)`` or ``"784-10-10"``.
      n: ``None`` -> one network (arrays without batch axis); an int -> a batch of ``n``
        (leading axis ``n``, even for ``n = 1``).
      node_offset, edge_offset: where the block starts (static ints).

    Returns:
      List of ``(W, b)``: ``W`` ``([n,] out, in, *trailing)``, ``b`` ``([n,] out, *trailing)``.
    """
    if isinstance(graph, jraph.GraphsTuple):
        node_v, edge_v = _x(graph.nodes, "nodes"), _x(graph.edges, "edges")
    else:
        node_v, edge_v = graph
    s = structure(sizes)
    m = 1 if n is None else int(n)
    n_tot, e_tot = int(np.shape(node_v)[0]), int(np.shape(edge_v)[0])
    if node_offset + m * s.n_node > n_tot or edge_offset + m * s.n_edge > e_tot:
        raise ValueError(
            f"graph has {n_tot} nodes and {e_tot} edges but {m} network(s) of architecture "
            f"{mlp.format_arch(s.sizes)} ({s.n_node} nodes, {s.n_edge} edges each) starting at "
            f"node {node_offset}, edge {edge_offset} need {node_offset + m * s.n_node} nodes and "
            f"{edge_offset + m * s.n_edge} edges; check sizes, n and the offsets")
    node_rest, edge_rest = tuple(np.shape(node_v)[1:]), tuple(np.shape(edge_v)[1:])
    nb = node_v[node_offset:node_offset + m * s.n_node].reshape((m, s.n_node) + node_rest)
    eb = edge_v[edge_offset:edge_offset + m * s.n_edge].reshape((m, s.n_edge) + edge_rest)
    params = []
    for l in range(len(s.sizes) - 1):
        d_i, d_o = s.sizes[l], s.sizes[l + 1]
        w = eb[:, s.edge_offsets[l]:s.edge_offsets[l + 1]].reshape((m, d_o, d_i) + edge_rest)
        b = nb[:, s.node_offsets[l + 1]:s.node_offsets[l + 2]]
        if n is None:
            w, b = w[0], b[0]
        params.append((w, b))
    return params


def graph_to_mlps(graph: jraph.GraphsTuple | tuple[Array, Array],
                  blocks: Sequence[tuple[Sequence[int] | str, int | None]]) -> list[Params]:
    """Inverse of :func:`mlps_to_graph`: one params entry per ``(sizes, n)`` block, in order.

    ``blocks`` is e.g. ``blocks_of(param_sets)``; padding after the blocks is ignored.
    """
    out, node_off, edge_off = [], 0, 0
    for sizes, n in blocks:
        out.append(graph_to_mlp(graph, sizes, n=n, node_offset=node_off, edge_offset=edge_off))
        s = structure(sizes)
        m = 1 if n is None else int(n)
        node_off += m * s.n_node
        edge_off += m * s.n_edge
    return out


def graph_to_globals(graph: jraph.GraphsTuple | Array, *, n: int | None = None,
                     offset: int = 0) -> Array:
    """Per-network globals of ``n`` graphs starting at graph ``offset``.

    Args:
      graph: a ``GraphsTuple`` (``globals`` an array ``(G, k)`` or a dict with ``'x'``) or the
        ``(G, k)`` array itself.
      n: ``None`` -> ``(k,)`` for one network; an int -> ``(n, k)``.
    """
    g = graph
    if isinstance(graph, jraph.GraphsTuple):
        g = _x(graph.globals, "globals")
    m = 1 if n is None else int(n)
    if offset + m > int(np.shape(g)[0]):
        raise ValueError(f"globals have {np.shape(g)[0]} rows; asked for rows "
                         f"[{offset}, {offset + m})")
    out = g[offset:offset + m]
    return out[0] if n is None else out


def node_graph_index(graph: jraph.GraphsTuple) -> jax.Array:
    """int32 ``(N,)``: the graph each node belongs to (jit-friendly, static total length)."""
    n_graph = int(np.shape(graph.n_node)[0])
    return jnp.repeat(jnp.arange(n_graph, dtype=jnp.int32), jnp.asarray(graph.n_node),
                      total_repeat_length=_num_nodes(graph))


def _concrete(a: Any) -> np.ndarray | None:
    if isinstance(a, jax.core.Tracer):
        return None
    try:
        return np.asarray(a)
    except Exception:  # noqa: BLE001 - anything not convertible is treated as abstract
        return None


def check_graph(graph: jraph.GraphsTuple, *, d_in: int | None = None, d_out: int | None = None,
                max_hidden_layers: int | None = None) -> None:
    """Validates a neural graph; raises ``ValueError`` naming the sizes.

    Shape checks (always, also under ``jit``): the node/edge dict keys and that every node
    array has ``N`` rows, every edge array and senders/receivers ``E`` rows, ``x`` is one
    scalar per node/edge, globals have ``G`` rows. Value checks (only when the arrays are
    concrete, i.e. outside ``jit``): ``sum(n_node) == N``, ``sum(n_edge) == E``, and, if
    given, each real graph has ``d_in`` input and ``d_out`` output neurons and at most
    ``max_hidden_layers`` hidden layers.
    """
    if not isinstance(graph.nodes, dict) or not isinstance(graph.edges, dict):
        raise ValueError(
            "expected a neural graph with dict features (from weightflow_jax.graphs."
            f"mlp_to_graph); got nodes {type(graph.nodes).__name__}, edges "
            f"{type(graph.edges).__name__}")
    missing = [k for k in _NODE_KEYS if k not in graph.nodes]
    missing += [f"edges.{k}" for k in _EDGE_KEYS if k not in graph.edges]
    if missing:
        raise ValueError(f"neural graph lacks features {missing}; build it with mlp_to_graph")
    n_tot = int(np.shape(graph.nodes["x"])[0])
    e_tot = int(np.shape(graph.senders)[0])
    g_tot = int(np.shape(graph.n_node)[0])
    for k, v in graph.nodes.items():
        if int(np.shape(v)[0]) != n_tot:
            raise ValueError(f"node feature {k!r} has {np.shape(v)[0]} rows but nodes['x'] has "
                             f"{n_tot}; all node arrays must have one row per node")
    for name, v in [("receivers", graph.receivers)] + list(graph.edges.items()):
        if int(np.shape(v)[0]) != e_tot:
            raise ValueError(f"edge array {name!r} has {np.shape(v)[0]} rows but senders has "
                             f"{e_tot}; all edge arrays must have one row per edge")
    if np.ndim(graph.nodes["x"]) != 1 or np.ndim(graph.edges["x"]) != 1:
        raise ValueError(
            f"node feature x has shape {tuple(np.shape(graph.nodes['x']))} and edge feature x "
            f"{tuple(np.shape(graph.edges['x']))}; the model takes one scalar per node (bias) "
            "and per edge (weight): shapes (N,) and (E,)")
    if int(np.shape(graph.n_edge)[0]) != g_tot:
        raise ValueError(f"n_node has {g_tot} graphs but n_edge {np.shape(graph.n_edge)[0]}")
    if isinstance(graph.globals, dict):
        for k, v in graph.globals.items():
            if int(np.shape(v)[0]) != g_tot:
                raise ValueError(f"globals[{k!r}] has {np.shape(v)[0]} rows for {g_tot} graphs")
    n_node, n_edge = _concrete(graph.n_node), _concrete(graph.n_edge)
    if n_node is None or n_edge is None:
        return
    if int(n_node.sum()) != n_tot or int(n_edge.sum()) != e_tot:
        raise ValueError(
            f"n_node sums to {int(n_node.sum())} and n_edge to {int(n_edge.sum())} but the graph "
            f"holds {n_tot} nodes and {e_tot} edges")
    kind, layer, mask = (_concrete(graph.nodes[k]) for k in ("kind", "layer", "mask"))
    if kind is None or layer is None or mask is None:
        return
    gid = np.repeat(np.arange(g_tot), n_node)
    real = mask.astype(bool)
    n_in = np.bincount(gid[real & (kind == KIND_INPUT)], minlength=g_tot)
    n_out = np.bincount(gid[real & (kind == KIND_OUTPUT)], minlength=g_tot)
    has_real = np.bincount(gid[real], minlength=g_tot) > 0
    for g in np.nonzero(has_real)[0]:
        if d_in is not None and n_in[g] != d_in:
            raise ValueError(
                f"graph {g} has {n_in[g]} input neurons but the model's positional embeddings "
                f"were built for d_in={d_in}; build the model with d_in={n_in[g]} or feed "
                f"networks with {d_in} inputs")
        if d_out is not None and n_out[g] != d_out:
            raise ValueError(
                f"graph {g} has {n_out[g]} output neurons but the model's positional embeddings "
                f"were built for d_out={d_out}; build the model with d_out={n_out[g]} or feed "
                f"networks with {d_out} outputs")
    if max_hidden_layers is not None and real.any():
        deepest = int(layer[real].max()) - 1
        if deepest > max_hidden_layers:
            raise ValueError(
                f"a graph has {deepest} hidden layers but the model has positional embeddings "
                f"for at most max_hidden_layers={max_hidden_layers}; raise max_hidden_layers")
