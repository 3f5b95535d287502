"""Tests for the ``rt`` field's model, the relational-transformer vector field (models/rt.py).

Small sizes (d_in = 5, d_out = 3, width 16, 2 layers) keep compile times short; one test runs
the real 784-10-10 -> 784-32-10 transfer. Sparse and dense attention are different models;
we check that both are permutation equivariant, padding invariant and graph-local, and that
the dense mode restricted to real edges (``dense_attend="edges"``) reproduces the sparse
mode with the same parameters (an independent check of the segment-op implementation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import graphs, mlp
from weightflow_jax.models import VectorField, apply_to_mlp

D_IN, D_OUT = 5, 3
ARCH = (D_IN, 4, 6, D_OUT)          # main test architecture: 18 nodes
M_SLOTS = graphs.structure(ARCH).n_node
KW = dict(d_in=D_IN, d_out=D_OUT, max_hidden_layers=2, num_layers=2, width=16, num_heads=2,
          time_features=16, global_dim=1, max_nodes_per_graph=M_SLOTS)
TOL = dict(rtol=2e-5, atol=2e-5)
MODELS = {
    "sparse": VectorField(**KW, attention="sparse"),
    "dense": VectorField(**KW, attention="dense"),
    "dense_edges": VectorField(**KW, attention="dense", dense_attend="edges"),
}


def _params(seed, sizes, n=None):
    """Random MLP weights from numpy (eager jax.random costs ~1 s per new shape here)."""
    rng = np.random.default_rng(seed)
    lead = () if n is None else (n,)
    return [(jnp.asarray(0.5 * rng.standard_normal(lead + w), jnp.float32),
             jnp.asarray(0.5 * rng.standard_normal(lead + b), jnp.float32))
            for w, b in mlp.param_shapes(sizes)]


def _permute_hidden(params, perms):
    """Permutes hidden layer l (1-based) by perms[l - 1]; single network."""
    out = [list(layer) for layer in params]
    for l, p in enumerate(perms, start=1):
        out[l - 1][0] = out[l - 1][0][p]       # rows of W_(l-1)
        out[l - 1][1] = out[l - 1][1][p]
        out[l][0] = out[l][0][:, p]            # columns of W_l
    return [tuple(layer) for layer in out]


def _mixed():
    """A batch mixing architectures: two ARCH nets (5-4-6-3, the init architecture) and one
    5-7-3 net (other depth and width), with globals."""
    sets = [_params(3, ARCH, n=2), _params(4, (D_IN, 7, D_OUT))]
    g = graphs.mlps_to_graph(sets, globals_=[jnp.array([0.1, 0.2]), jnp.float32(-0.3)])
    return sets, g, jnp.array([0.1, 0.5, 0.9])


def _random_variables(model, graph, seed):
    """Random variables with the shapes of ``model.init`` (``eval_shape``: no RNG compile,
    which takes tens of seconds on a busy 2-core CPU). LayerNorm scales stay near 1."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), graph, 0.5)
    rng = np.random.default_rng(seed)

    def fill(path, s):
        name = jax.tree_util.keystr(path)
        base = 1.0 if name.endswith("['scale']") else 0.0
        return jnp.asarray(base + 0.3 * rng.standard_normal(s.shape), s.dtype)
    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def variables():
    """One set of parameters for every mode: the dense model's parameters are the sparse
    model's plus the 'no edge' embedding."""
    g = graphs.mlp_to_graph(_params(0, ARCH), globals_=jnp.float32(0.3))
    v_dense = _random_variables(MODELS["dense"], g, 1)
    v_sparse = {"params": {k: a for k, a in v_dense["params"].items() if k != "no_edge_embed"}}
    sparse_shapes = jax.eval_shape(MODELS["sparse"].init, jax.random.PRNGKey(0), g, 0.5)
    assert (jax.tree_util.tree_structure(sparse_shapes)
            == jax.tree_util.tree_structure(v_sparse))
    return {"sparse": v_sparse, "dense": v_dense, "dense_edges": v_dense}


@pytest.mark.slow
def test_init_matches_eval_shape():
    """``model.init`` itself works eagerly on a tiny model (the fixture avoids its compile)."""
    m = VectorField(d_in=2, d_out=1, max_hidden_layers=1, num_layers=1, width=4, num_heads=1,
                    time_features=4)
    g = graphs.mlp_to_graph(_params(0, (2, 2, 1)))
    v = m.init(jax.random.PRNGKey(0), g, 0.5)
    shapes = jax.eval_shape(m.init, jax.random.PRNGKey(0), g, 0.5)
    assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(lambda s: s.shape,
                                                                          shapes)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree_util.tree_leaves(v))


@pytest.fixture(scope="module")
def run():
    """Jitted ``f(variables, params, t, globals_)`` in MLP layout, per mode (shared caches)."""
    return {name: jax.jit(lambda v, p, t, gl, m=m: apply_to_mlp(m, v, p, t, globals_=gl))
            for name, m in MODELS.items()}


@pytest.fixture(scope="module")
def apply():
    """Jitted ``model.apply`` per mode (shared compile caches)."""
    return {name: jax.jit(m.apply) for name, m in MODELS.items()}


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_permutation_equivariance(variables, run, name):
    p = _params(2, ARCH)
    perms = [np.array([2, 0, 3, 1]), np.array([5, 3, 0, 1, 4, 2])]
    v, f = variables[name], run[name]
    out, gout = f(v, p, 0.4, jnp.float32(0.7))
    out_p, gout_p = f(v, _permute_hidden(p, perms), 0.4, jnp.float32(0.7))
    want = _permute_hidden(out, perms)
    for (w1, b1), (w2, b2) in zip(out_p, want):
        np.testing.assert_allclose(w1, w2, **TOL)
        np.testing.assert_allclose(b1, b2, **TOL)
    np.testing.assert_allclose(gout_p, gout, **TOL)  # globals are invariant
    # The test can fail: outputs differ between neurons, and permuting the *inputs* (which
    # have their own positional embeddings) is not a symmetry.
    assert np.std(np.asarray(out[0][1])) > 1e-3
    p_in = [(p[0][0][:, ::-1], p[0][1])] + p[1:]
    out_in, _ = f(v, p_in, 0.4, jnp.float32(0.7))
    assert np.max(np.abs(np.asarray(out_in[0][0][:, ::-1]) - np.asarray(out[0][0]))) > 1e-3


def test_dense_on_edges_equals_sparse(variables, apply):
    _, g, t = _mixed()
    a = apply["sparse"](variables["sparse"], g, t)
    b = apply["dense_edges"](variables["dense_edges"], g, t)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, **TOL)
    # Attending over all pairs is a different model.
    c = apply["dense"](variables["dense"], g, t)
    assert np.max(np.abs(np.asarray(c.edges) - np.asarray(a.edges))) > 1e-3


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_padding_and_batching_leave_real_outputs_unchanged(variables, apply, run, name):
    v = variables[name]
    sets, g, t = _mixed()
    budget = graphs.padding_budget([ARCH, (D_IN, 7, D_OUT)], 4)
    gp = graphs.pad(g, *budget)
    a, b = apply[name](v, g, t), apply[name](v, gp, t)
    n, e, ng_ = graphs.graph_sizes(g)
    np.testing.assert_allclose(b.nodes[:n], a.nodes, **TOL)
    np.testing.assert_allclose(b.edges[:e], a.edges, **TOL)
    np.testing.assert_allclose(b.globals[:ng_], a.globals, **TOL)
    assert np.all(np.asarray(b.nodes[n:]) == 0) and np.all(np.asarray(b.edges[e:]) == 0)
    assert np.all(np.asarray(b.globals[ng_:]) == 0)
    assert np.all(np.asarray(a.nodes)[np.asarray(g.nodes["kind"]) == graphs.KIND_INPUT] == 0)
    # Each network alone gives the same output as inside the batch (no cross-graph leakage).
    alone = jax.tree_util.tree_map(lambda x: x[1], sets[0])
    single, single_g = run[name](v, alone, float(t[1]), jnp.float32(0.2))  # cache hit
    out = graphs.graph_to_mlps(a, graphs.blocks_of(sets))
    for (w1, b1), (w2, b2) in zip(out[0], single):
        np.testing.assert_allclose(w1[1], w2, **TOL)
        np.testing.assert_allclose(b1[1], b2, **TOL)
    np.testing.assert_allclose(a.globals[1], single_g, **TOL)
    # The same parameters run on an architecture they were not initialized with (5-7-3:
    # other depth and width than ARCH), here inside a mixed batch.
    (w0, b0), (w1, b1) = out[1]
    assert w0.shape == (7, D_IN) and w1.shape == (D_OUT, 7) and b0.shape == (7,)
    assert np.all(np.isfinite(np.asarray(w0))) and np.std(np.asarray(w0)) > 1e-3


def test_transfer_784_10_10_to_784_32_10():
    m = VectorField(d_in=784, d_out=10, max_hidden_layers=1, num_layers=1, width=8,
                    num_heads=2, time_features=8)
    v = _random_variables(m, graphs.mlp_to_graph(_params(0, (784, 10, 10))), 0)
    f = jax.jit(lambda v, p: apply_to_mlp(m, v, p, 0.5)[0])
    out = f(v, _params(1, (784, 32, 10)))
    assert out[0][0].shape == (32, 784) and out[1][0].shape == (10, 32)
    assert np.all(np.isfinite(np.asarray(out[0][0])))
    with pytest.raises(ValueError, match=r"d_in=30.*d_in=784"):
        apply_to_mlp(m, v, _params(1, (30, 16, 10)), 0.5)


@pytest.mark.parametrize("name", ["sparse", "dense"])
def test_finite_gradients_params_and_inputs(variables, name):
    m, v = MODELS[name], variables[name]
    budget = graphs.padding_budget([ARCH], 2)

    def loss(v, p, gl, t):
        g = graphs.pad(graphs.mlp_to_graph(p, globals_=gl), *budget)
        out = m.apply(v, g, t)
        return jnp.sum(out.edges ** 2) + jnp.sum(out.nodes ** 2) + jnp.sum(out.globals ** 2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    for scale, t in [(1.0, jnp.array([0.0, 1.0])), (0.0, jnp.array([0.5, 0.5])),
                     (1e3, jnp.array([0.3, 0.7]))]:
        p = jax.tree_util.tree_map(lambda a: scale * a, _params(8, ARCH, n=2))
        gv, gp, gg = grad(v, p, jnp.array([0.0, 2.0]), t)
        leaves = jax.tree_util.tree_leaves((gv, gp, gg))
        assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
        if scale == 1.0:
            assert max(float(jnp.max(jnp.abs(x))) for x in jax.tree_util.tree_leaves(gp)) > 0


def test_time_conditioning_matters(variables, run):
    p = _params(2, ARCH)
    a, _ = run["sparse"](variables["sparse"], p, 0.1, jnp.float32(0.7))
    b, _ = run["sparse"](variables["sparse"], p, 0.9, jnp.float32(0.7))
    assert np.max(np.abs(np.asarray(a[0][0]) - np.asarray(b[0][0]))) > 1e-3


def test_bad_input_errors(variables):
    m, v = MODELS["sparse"], variables["sparse"]
    gl = jnp.float32(0.0)
    with pytest.raises(ValueError, match=r"4 input neurons.*d_in=5"):
        m.apply(v, graphs.mlp_to_graph(_params(0, (4, 3, D_OUT)), globals_=gl), 0.5)
    with pytest.raises(ValueError, match=r"2 output neurons.*d_out=3"):
        m.apply(v, graphs.mlp_to_graph(_params(0, (D_IN, 3, 2)), globals_=gl), 0.5)
    with pytest.raises(ValueError, match="max_hidden_layers=2"):
        m.apply(v, graphs.mlp_to_graph(_params(0, (D_IN, 2, 2, 2, D_OUT)), globals_=gl), 0.5)
    with pytest.raises(ValueError, match=r"d_in=4, d_out=3.*d_in=5"):
        apply_to_mlp(m, v, _params(0, (4, 3, D_OUT)), 0.5, globals_=gl)
    g = graphs.mlp_to_graph(_params(0, (D_IN, 3, D_OUT)), globals_=gl)
    g_noglob = g._replace(globals={"mask": g.globals["mask"]})
    with pytest.raises(ValueError, match="global_dim=0"):
        m.clone(global_dim=0).apply(v, g, 0.5)
    with pytest.raises(ValueError, match="global_dim=1 but the graph has no"):
        m.apply(v, g_noglob, 0.5)
    with pytest.raises(ValueError, match=r"\(G, 1\)"):
        m.apply(v, graphs.mlp_to_graph(_params(0, (D_IN, 3, D_OUT)), globals_=jnp.zeros(2)), 0.5)
    with pytest.raises(ValueError, match="one scalar per node"):
        m.apply(v, g._replace(nodes=dict(g.nodes, x=jnp.zeros((11, 2)))), 0.5)
    with pytest.raises(ValueError, match="'mask' has 10 rows"):
        m.apply(v, g._replace(edges=dict(g.edges, mask=g.edges["mask"][:10])), 0.5)
    with pytest.raises(ValueError, match=r"t has shape \(2,\)"):
        m.apply(v, g, jnp.zeros(2))
    with pytest.raises(ValueError, match="attention="):
        m.clone(attention="full").apply(v, g, 0.5)
    with pytest.raises(ValueError, match="not divisible"):
        m.clone(num_heads=3).apply(v, g, 0.5)
    md, vd = MODELS["dense"], variables["dense"]
    g_big = graphs.mlp_to_graph(_params(0, (D_IN, 20, D_OUT)), globals_=gl)
    with pytest.raises(ValueError, match=r"28 nodes but max_nodes_per_graph=18"):
        md.apply(vd, g_big, 0.5)
    with pytest.raises(ValueError, match="static max_nodes_per_graph"):
        jax.jit(md.clone(max_nodes_per_graph=None).apply)(vd, g, 0.5)
