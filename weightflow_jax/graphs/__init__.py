"""Neural graphs of MLPs (one node per neuron, one edge per weight) as ``jraph.GraphsTuple``.

See :mod:`weightflow_jax.graphs.neural_graph` for the layout, positional indices and padding.
"""

from weightflow_jax.graphs.neural_graph import (
    KIND_HIDDEN,
    KIND_INPUT,
    KIND_OUTPUT,
    KIND_PAD,
    PadSizes,
    Structure,
    blocks_of,
    check_graph,
    concat_graphs,
    graph_sizes,
    graph_to_globals,
    graph_to_mlp,
    graph_to_mlps,
    mlp_to_graph,
    mlps_to_graph,
    node_graph_index,
    num_positions,
    pad,
    padding_budget,
    structure,
)

__all__ = [
    "KIND_INPUT",
    "KIND_HIDDEN",
    "KIND_OUTPUT",
    "KIND_PAD",
    "PadSizes",
    "Structure",
    "blocks_of",
    "check_graph",
    "concat_graphs",
    "graph_sizes",
    "graph_to_globals",
    "graph_to_mlp",
    "graph_to_mlps",
    "mlp_to_graph",
    "mlps_to_graph",
    "node_graph_index",
    "num_positions",
    "pad",
    "padding_budget",
    "structure",
]
