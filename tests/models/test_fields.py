"""Tests of the vector fields by name (rt, compact_rt, mlp) and their standardization."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from weightflow_jax import flows, models, symmetry
from weightflow_jax.flows import field as field_lib
from weightflow_jax.models import Standardizer, compact_rt

SIZES = (5, 4, 3, 2)
SMALL = {
    "rt": dict(num_layers=1, width=8, num_heads=2, time_features=8),
    "compact_rt": dict(num_layers=2, width=8, num_heads=2, time_features=8),
    "mlp": dict(width=16, num_blocks=1, time_features=8),
    "neuron_transformer": dict(num_layers=2, width=16, num_heads=2, time_features=8),
}


def _model_cfg(name, **extra):
    cfg = models.default_model_config(name)
    cfg[name].update(SMALL[name])
    cfg[name].update(extra)
    return cfg


def _data(space, n=40, seed=0):
    """Random points of the flow's data manifold (a stand-in training set)."""
    x = jax.vmap(lambda k: flows.sample_prior(k, space, 0.5))(
        jax.random.split(jax.random.key(seed), n))
    if space.kind != "euclidean":
        x = jax.vmap(space.retract)(x)
    return jax.tree.map(np.asarray, x)


def _field(name, kind="geometric", sizes=SIZES, param="target", **extra):
    space = flows.FlowSpace(kind, sizes)
    cfg = _model_cfg(name, **extra)
    coords = _data(space)
    stats = field_lib.fit_stats(cfg, coords)
    fld = field_lib.make_field(cfg, space, param, stats)
    return space, fld, fld.init(jax.random.key(0)), coords


@pytest.mark.parametrize("name", ["rt", "compact_rt", "mlp", "neuron_transformer"])
@pytest.mark.parametrize("kind", ["geometric", "euclidean"])
def test_field_structure_finite_values_and_gradients(name, kind):
    space, fld, variables, coords = _field(name, kind)
    x = jax.tree.map(lambda a: jnp.asarray(a[:3]), coords)
    t = jnp.array([0.0, 0.5, 0.999])
    out = jax.jit(fld.apply)(variables, x, t)
    assert jax.tree.structure(out) == jax.tree.structure(x)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x)):
        assert a.shape == b.shape and bool(jnp.all(jnp.isfinite(a)))
    # A scalar t broadcasts.
    out_s = fld.apply(variables, x, 0.5)
    np.testing.assert_allclose(out_s.layers[0][0][1], out.layers[0][0][1], atol=1e-5)

    def loss(params):
        o = fld.apply({"params": params}, x, t)
        return sum(jnp.sum(a ** 2) for a in jax.tree.leaves(o))

    grads = jax.grad(loss)(variables["params"])
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in leaves) > 0


@pytest.mark.parametrize("name", ["compact_rt", "mlp", "neuron_transformer"])
def test_zero_initialised_head_predicts_the_data_mean(name):
    """New fields start from the de-standardized zero: the per-layer / per-coordinate mean
    (z_t + 0 = the input itself with an input skip)."""
    space, fld, variables, coords = _field(name)
    x = jax.tree.map(lambda a: jnp.asarray(a[:2]), coords)
    out = fld.apply(variables, x, jnp.array([0.3, 0.7]))
    if fld.input_skip:
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x)):
            np.testing.assert_allclose(a, b, atol=1e-5)
    else:  # the de-standardized zero: the training mean
        mean = fld.stats.inverse(jax.tree.map(jnp.zeros_like, x))
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(mean)):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _permute_coords(x, perms):
    """Permutes hidden neurons of a batch of coordinates (perm per hidden layer)."""
    layers = []
    prev = None
    for i, (w, b) in enumerate(x.layers):
        if prev is not None:
            w = w[:, :, prev]
        if i < len(perms):
            w, b = w[:, perms[i]], b[:, perms[i]]
            prev = perms[i]
        layers.append((w, b))
    return symmetry.Canonical(layers, x.log_scale)


@pytest.mark.parametrize("name", ["rt", "compact_rt", "neuron_transformer"])
def test_graph_fields_are_exactly_equivariant_and_transfer_to_wider_layers(name):
    space, fld, variables, coords = _field(name, fourier_features=4)
    x = jax.tree.map(lambda a: jnp.asarray(a[:2]), coords)
    t = jnp.array([0.2, 0.8])
    perms = [np.array([2, 0, 3, 1]), np.array([1, 2, 0])]
    out = fld.apply(variables, x, t)
    out_p = fld.apply(variables, _permute_coords(x, perms), t)
    for a, b in zip(jax.tree.leaves(_permute_coords(out, perms)), jax.tree.leaves(out_p)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # The same parameters run on a wider first hidden layer (and a narrower second).
    wide = space.with_sizes((5, 9, 2, 2))
    fld.check_sizes(wide.sizes)
    xw = _data(wide, n=2, seed=3)
    out_w = fld.apply(variables, jax.tree.map(jnp.asarray, xw), t)
    assert out_w.layers[0][0].shape == (2, 9, 5) and out_w.layers[1][0].shape == (2, 2, 9)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(out_w))
    with pytest.raises(ValueError, match="input"):
        fld.check_sizes((6, 4, 3, 2))
    with pytest.raises(ValueError, match="hidden layers"):
        fld.check_sizes((5, 4, 3, 3, 3, 2))


def test_mlp_field_refuses_other_widths():
    _, fld, variables, _ = _field("mlp")
    with pytest.raises(ValueError, match="not permutation-equivariant.*5-4-3-2.*5-8-3-2"):
        fld.check_sizes((5, 8, 3, 2))


def test_compact_graph_sizes():
    st = compact_rt.compact_structure((784, 10, 10), 1)
    assert len(st["pos"]) == 20 and len(st["senders"]) == 100
    st = compact_rt.compact_structure((30, 16, 16, 2), 2)
    assert len(st["pos"]) == 34 and len(st["senders"]) == 16 * 16 + 2 * 16
    # hidden layers share one position each, output neurons have their own
    assert set(st["pos"][:16]) == {0} and set(st["pos"][16:32]) == {1}
    assert list(st["pos"][32:]) == [2, 3]


def test_unknown_model_and_bad_standardize_are_clear_errors():
    cfg = models.default_model_config("rt")
    cfg.name = "transformer"
    with pytest.raises(ValueError, match="unknown model 'transformer'.*compact_rt.*mlp.*rt"):
        models.stats_mode(cfg)
    cfg = _model_cfg("rt", standardize="per_neuron")
    with pytest.raises(ValueError, match="standardize='per_neuron'; choose one of"):
        models.stats_mode(cfg)


@pytest.mark.parametrize("mode", ["per_layer", "per_coordinate"])
def test_standardizer_round_trip_and_storage(mode):
    space = flows.FlowSpace("geometric", SIZES)
    coords = _data(space, n=64)
    st = Standardizer.fit(mode, coords)
    x = jax.tree.map(jnp.asarray, coords)
    z = st.forward(x)
    flat = np.concatenate([np.asarray(a).reshape(64, -1) for a in jax.tree.leaves(z)], 1)
    if mode == "per_coordinate":
        np.testing.assert_allclose(flat.mean(0), 0, atol=1e-4)
        np.testing.assert_allclose(flat.std(0), 1, atol=1e-3)
    else:
        for w, b in z.layers:
            assert abs(float(jnp.mean(w))) < 1e-4 and abs(float(jnp.std(w)) - 1) < 1e-3
    back = st.inverse(z)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(x)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    again = Standardizer.from_npz_dict(st.to_npz_dict())
    assert again.equals(st)
    # under jit and grad
    g = jax.grad(lambda v: jnp.sum(st.forward(v).layers[0][0]))(x)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))


def test_per_layer_weight_std_rescales_with_fan_in():
    space = flows.FlowSpace("geometric", (5, 16, 2))
    st = Standardizer.fit("per_layer", _data(space, n=64))
    wide = _data(space.with_sizes((5, 64, 2)), n=64)
    z = st.forward(jax.tree.map(jnp.asarray, wide))
    # Last layer rows on spheres of 4x the dimension: entries half as large, rescaled back.
    assert 0.8 < float(jnp.std(z.layers[1][0])) < 1.25
    with pytest.raises(ValueError, match="only hidden widths may change"):
        st.forward(jax.tree.map(jnp.asarray, _data(flows.FlowSpace("geometric", (6, 16, 2)),
                                                   n=2)))


def test_constant_coordinates_do_not_divide_by_zero():
    space = flows.FlowSpace("euclidean", (3, 2, 2))
    coords = _data(space, n=8)
    coords = symmetry.Canonical([(np.ones_like(w), b) for w, b in coords.layers], None)
    for mode in ("per_layer", "per_coordinate"):
        st = Standardizer.fit(mode, coords)
        z = st.forward(jax.tree.map(jnp.asarray, coords))
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(z))


@pytest.mark.parametrize("name", ["rt", "compact_rt", "mlp", "neuron_transformer"])
def test_short_training_lowers_the_flow_matching_loss(name):
    # Every field's default has no input skip (with one, neuron_transformer's initial
    # prediction is x_t, already close to the targets here, and 60 steps lowered the loss by
    # only ~5%; without it 1.21 -> 0.61, measured).
    space, fld, variables, coords = _field(name)
    x1_all = jax.tree.map(jnp.asarray, coords)
    opt = optax.adam(3e-3)
    params = variables["params"]
    state = opt.init(params)

    def loss_fn(p, key):
        k0, kt = jax.random.split(key)
        n = 16
        x1 = jax.tree.map(lambda a: a[:n], x1_all)
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space))(jax.random.split(k0, n))
        t = flows.sample_time(kt, (n,))
        xt = jax.vmap(lambda a, b, s: flows.interpolate(space, a, b, s))(x0, x1, t)
        pred = fld.apply({"params": p}, xt, t)
        return jnp.mean(jax.vmap(lambda q, a, b, c, s: flows.cfm_loss(space, q, a, b, c, s))(
            pred, x0, x1, xt, t))

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, key)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    eval_key = jax.random.key(99)
    before = float(jnp.mean(jnp.stack([loss_fn(params, jax.random.fold_in(eval_key, i))
                                       for i in range(4)])))
    for i in range(60):
        params, state, _ = step(params, state, jax.random.key(i))
    after = float(jnp.mean(jnp.stack([loss_fn(params, jax.random.fold_in(eval_key, i))
                                      for i in range(4)])))
    assert after < 0.9 * before, (before, after)
