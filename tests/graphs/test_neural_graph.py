"""Tests for weightflow_jax.graphs: MLP <-> neural graph, batching, padding, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import graphs, mlp


def _params(seed: int, sizes, n: int | None = None):
    """Random MLP weights as jax arrays (numpy RNG: eager jax.random compiles per shape)."""
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    return [(jnp.asarray(rng.standard_normal(lead + w), jnp.float32),
             jnp.asarray(rng.standard_normal(lead + b), jnp.float32))
            for w, b in mlp.param_shapes(sizes)]


def _assert_params_equal(a, b):
    assert len(a) == len(b)
    for (wa, ba), (wb, bb) in zip(a, b):
        assert wa.shape == wb.shape and ba.shape == bb.shape
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
        np.testing.assert_array_equal(np.asarray(ba), np.asarray(bb))


def test_structure_small_exact():
    s = graphs.structure((3, 2, 2))
    assert (s.n_node, s.n_edge) == (7, 10)
    np.testing.assert_array_equal(s.senders, [0, 1, 2, 0, 1, 2, 3, 4, 3, 4])
    np.testing.assert_array_equal(s.receivers, [3, 3, 3, 4, 4, 4, 5, 5, 6, 6])
    # pos layout: inputs [0, 3), outputs [3, 5), hidden layer 1 -> 3 + 2 + 0 = 5.
    np.testing.assert_array_equal(s.node_pos, [0, 1, 2, 5, 5, 3, 4])
    np.testing.assert_array_equal(s.node_kind, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.node_layer, [0, 0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(s.node_index, [0, 1, 2, 0, 1, 0, 1])
    np.testing.assert_array_equal(s.edge_layer, [0] * 6 + [1] * 4)
    assert graphs.num_positions(3, 2, 1) == 6
    assert graphs.structure("3-2-2") is s  # cached
    with pytest.raises(ValueError):
        s.senders[0] = 1  # read-only cache


def test_structure_two_hidden_layers_share_one_position_each():
    s = graphs.structure((2, 3, 4, 1))
    np.testing.assert_array_equal(s.node_pos, [0, 1, 3, 3, 3, 4, 4, 4, 4, 2])


def test_single_roundtrip_and_edge_semantics():
    sizes = (4, 3, 5, 2)
    p = _params(0, sizes)
    g = graphs.mlp_to_graph(p)
    s = graphs.structure(sizes)
    assert g.n_node.tolist() == [s.n_node] and g.n_edge.tolist() == [s.n_edge]
    # Every edge carries W_l[receiver, sender] (local indices), every node its bias.
    x = np.asarray(g.edges["x"])
    for k in range(s.n_edge):
        l = s.edge_layer[k]
        i = g.senders[k] - s.node_offsets[l]
        o = g.receivers[k] - s.node_offsets[l + 1]
        assert x[k] == np.asarray(p[l][0])[o, i]
    nx = np.asarray(g.nodes["x"])
    assert np.all(nx[:4] == 0)
    np.testing.assert_array_equal(nx[4:7], p[0][1])
    _assert_params_equal(graphs.graph_to_mlp(g, sizes), p)
    graphs.check_graph(g, d_in=4, d_out=2, max_hidden_layers=2)


def test_batch_roundtrip_and_jit_vmap():
    sizes = (6, 4, 3)
    p = _params(1, sizes, n=3)
    g = graphs.mlp_to_graph(p)
    assert g.n_node.tolist() == [13] * 3
    _assert_params_equal(graphs.graph_to_mlp(g, sizes, n=3), p)
    # Single network i sits at graph i.
    p1 = jax.tree_util.tree_map(lambda a: a[1], p)
    g1 = graphs.mlp_to_graph(p1)
    np.testing.assert_array_equal(g.edges["x"][g1.senders.shape[0]:2 * g1.senders.shape[0]],
                                  g1.edges["x"])
    # Under jit: identical graph.
    gj = jax.jit(graphs.mlp_to_graph)(p)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gj)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Under vmap over single networks: features match the batched conversion.
    ex = jax.vmap(lambda q: graphs.mlp_to_graph(q).edges["x"])(p)
    np.testing.assert_array_equal(np.asarray(ex).reshape(-1), np.asarray(g.edges["x"]))
    back = jax.jit(lambda g: graphs.graph_to_mlp(g, sizes, n=3))(gj)
    _assert_params_equal(back, p)


def test_batch_of_one_keeps_axis():
    p = _params(2, (3, 2, 2), n=1)
    back = graphs.graph_to_mlp(graphs.mlp_to_graph(p), (3, 2, 2), n=1)
    assert back[0][0].shape == (1, 2, 3)
    _assert_params_equal(back, p)


def test_mixed_architectures_with_padding_roundtrip():
    a = _params(3, (5, 3, 2), n=2)
    b = _params(4, (5, 7, 2))          # single network
    c = _params(5, (5, 4, 4, 2), n=2)  # deeper
    sets = [a, b, c]
    budget = graphs.padding_budget(["5-3-2", "5-7-2", "5-4-4-2"], batch_size=5)
    s_big = graphs.structure((5, 7, 2))
    assert budget == graphs.PadSizes(5 * max(s_big.n_node, 15) + 1,
                                     5 * max(s_big.n_edge, 20 + 16 + 8), 6)
    g = graphs.mlps_to_graph(sets, pad_to=budget)
    assert graphs.graph_sizes(g) == budget
    n_real = 2 * 10 + 14 + 2 * 15
    e_real = 2 * 21 + 49 + 2 * 44
    assert int(np.sum(g.n_node)) == budget.n_node and int(np.sum(g.n_edge)) == budget.n_edge
    assert g.n_node.tolist()[:6] == [10, 10, 14, 15, 15, budget.n_node - n_real]
    assert int(np.sum(g.nodes["mask"])) == n_real and int(np.sum(g.edges["mask"])) == e_real
    assert np.all(g.nodes["kind"][n_real:] == graphs.KIND_PAD)
    assert np.all(g.senders[e_real:] == n_real) and np.all(g.receivers[e_real:] == n_real)
    assert g.globals["mask"].tolist() == [True] * 5 + [False]
    graphs.check_graph(g, d_in=5, d_out=2, max_hidden_layers=2)
    blocks = graphs.blocks_of(sets)
    assert blocks == [((5, 3, 2), 2), ((5, 7, 2), None), ((5, 4, 4, 2), 2)]
    for got, want in zip(graphs.graph_to_mlps(g, blocks), sets):
        _assert_params_equal(got, want)
    # Same under jit (static padding, one compiled function).
    gj = jax.jit(lambda a, b, c: graphs.mlps_to_graph([a, b, c], pad_to=budget))(a, b, c)
    for x, y in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gj)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_pad_extra_empty_graphs_and_exact_fit():
    g = graphs.mlp_to_graph(_params(6, (3, 2, 2), n=2))
    assert graphs.pad(g, 14, 20, 2) is g  # exact fit, nothing to add
    gp = graphs.pad(g, 20, 25, 5)
    assert gp.n_node.tolist() == [7, 7, 6, 0, 0] and gp.n_edge.tolist() == [10, 10, 5, 0, 0]
    assert graphs.node_graph_index(gp).tolist() == [0] * 7 + [1] * 7 + [2] * 6


def test_globals_roundtrip():
    sizes = (3, 2, 2)
    p = _params(7, sizes, n=3)
    ls = jnp.array([0.5, -1.0, 2.0])
    g = graphs.mlp_to_graph(p, globals_=ls)
    assert g.globals["x"].shape == (3, 1)
    np.testing.assert_array_equal(graphs.graph_to_globals(g, n=3)[:, 0], ls)
    gs = graphs.mlp_to_graph(jax.tree_util.tree_map(lambda a: a[0], p), globals_=jnp.float32(0.5))
    assert gs.globals["x"].shape == (1, 1)
    assert float(graphs.graph_to_globals(gs)[0]) == 0.5
    gp = graphs.pad(g, 30, 30, 5)
    assert gp.globals["x"].shape == (5, 1) and float(gp.globals["x"][4, 0]) == 0.0


def test_grad_through_conversion():
    sizes = (4, 3, 2)
    p = _params(8, sizes)

    def f(p):
        q = graphs.graph_to_mlp(graphs.pad(graphs.mlp_to_graph(p), 12, 20, 2), sizes)
        return sum(jnp.sum(w ** 2) + jnp.sum(b ** 2) for w, b in q)

    grads = jax.jit(jax.grad(f))(p)
    for (gw, gb), (w, b) in zip(grads, p):
        np.testing.assert_allclose(gw, 2 * w, rtol=1e-6)
        np.testing.assert_allclose(gb, 2 * b, rtol=1e-6)


def test_model_outputs_map_back_with_trailing_dims():
    sizes = (3, 4, 2)
    s = graphs.structure(sizes)
    node_v = jnp.arange(2 * s.n_node * 2, dtype=jnp.float32).reshape(2 * s.n_node, 2)
    edge_v = jnp.arange(2 * s.n_edge * 2, dtype=jnp.float32).reshape(2 * s.n_edge, 2)
    out = graphs.graph_to_mlp((node_v, edge_v), sizes, n=2)
    assert out[0][0].shape == (2, 4, 3, 2) and out[1][1].shape == (2, 2, 2)
    # Graph 1, layer 1 bias of neuron 0 is node s.n_node + 3 + 4.
    np.testing.assert_array_equal(out[1][1][1, 0], node_v[s.n_node + 7])


def test_real_mnist_sizes():
    s = graphs.structure("784-10-10")
    assert (s.n_node, s.n_edge) == (804, 7940)
    p = _params(9, (784, 32, 10))
    g = graphs.mlp_to_graph(p)
    assert graphs.graph_sizes(g) == (826, 784 * 32 + 320, 1)
    _assert_params_equal(graphs.graph_to_mlp(g, (784, 32, 10)), p)
    assert graphs.padding_budget(["784-10-10", "784-32-10"], 8) == (8 * 826 + 1, 8 * 25408, 9)


def test_numpy_inputs_give_numpy_graph():
    p = [(np.ones((2, 3), np.float32), np.zeros(2, np.float32))]
    g = graphs.mlp_to_graph(p)
    assert isinstance(g.edges["x"], np.ndarray)
    _assert_params_equal(graphs.graph_to_mlp(g, (3, 2)), p)


def test_errors():
    g = graphs.mlp_to_graph(_params(10, (3, 2, 2), n=2))  # 14 nodes, 20 edges, 2 graphs
    with pytest.raises(ValueError, match=r"padding too small.*14 nodes, 20 edges, 2 graphs"):
        graphs.pad(g, 14, 25, 3)  # no room for a padding node
    with pytest.raises(ValueError, match="padding too small"):
        graphs.pad(g, 20, 19, 3)
    with pytest.raises(ValueError, match="padding too small"):
        graphs.pad(g, 20, 25, 2)  # no padding graph
    with pytest.raises(ValueError, match=r"need 21 nodes"):
        graphs.graph_to_mlp(g, (3, 2, 2), n=3)
    with pytest.raises(ValueError, match=r"globals_ has shape \(3,\)"):
        graphs.mlp_to_graph(_params(10, (3, 2, 2), n=2), globals_=jnp.zeros(3))
    with pytest.raises(ValueError, match="single network"):
        graphs.mlp_to_graph(_params(10, (3, 2, 2)), globals_=jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="same feature keys"):
        graphs.concat_graphs([g, graphs.mlp_to_graph(_params(1, (3, 2, 2)), globals_=1.0)])
    with pytest.raises(ValueError, match="chain"):
        graphs.mlp_to_graph([(jnp.ones((2, 3)), jnp.ones(2)), (jnp.ones((2, 4)), jnp.ones(2))])
    with pytest.raises(ValueError, match=r"graph 0 has 3 input neurons.*d_in=4"):
        graphs.check_graph(g, d_in=4)
    with pytest.raises(ValueError, match=r"2 output neurons.*d_out=3"):
        graphs.check_graph(g, d_out=3)
    with pytest.raises(ValueError, match="max_hidden_layers=0"):
        graphs.check_graph(g, max_hidden_layers=0)
    bad = g._replace(nodes=dict(g.nodes, x=jnp.zeros((14, 2))))
    with pytest.raises(ValueError, match=r"one scalar per node"):
        graphs.check_graph(bad)
    bad = g._replace(nodes=dict(g.nodes, pos=g.nodes["pos"][:-1]))
    with pytest.raises(ValueError, match=r"'pos' has 13 rows"):
        graphs.check_graph(bad)
    with pytest.raises(ValueError, match="at least one"):
        graphs.padding_budget([], 4)
