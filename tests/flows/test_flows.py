"""Tests for flow spaces, paths, losses, couplings and the Euler sampler."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import flows, mlp, symmetry
from weightflow_jax.flows import FlowSpace
from weightflow_jax.geometry import product

SIZES = (6, 5, 4, 3)
SPACES = {k: FlowSpace(k, SIZES) for k in flows.FLOWS}


def _data(key, n, sizes=SIZES):
    keys = jax.random.split(key, n)
    return jax.vmap(lambda k: mlp.init(k, sizes, w_std=0.5, b_std=0.3))(keys)


def _batch_prior(key, space, n):
    return jax.vmap(lambda k: flows.sample_prior(k, space))(jax.random.split(key, n))


def _tree_close(a, b, atol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, atol=atol)


def _on_manifold(space, x):
    return symmetry.is_canonical(x, atol=1e-4) if space.kind != "euclidean" else True


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_encode_decode_preserves_function(kind):
    space = SPACES[kind]
    params = _data(jax.random.key(0), 3)
    coords = space.encode(params)
    assert (coords.log_scale is not None) == space.has_scale
    back = space.decode(coords)
    x = jax.random.normal(jax.random.key(1), (10, SIZES[0]))
    fwd = jax.vmap(mlp.forward, in_axes=(0, None))
    np.testing.assert_allclose(fwd(back, x), fwd(params, x), rtol=1e-4, atol=1e-5)


def test_encode_rejects_other_architecture():
    with pytest.raises(ValueError, match=r"layer sizes \(6, 7, 3\) but this flow is for"):
        SPACES["geometric"].encode(mlp.init(jax.random.key(0), (6, 7, 3)))
    with pytest.raises(ValueError, match="unknown flow"):
        FlowSpace("spherical", SIZES)


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_prior(kind):
    space = SPACES[kind]
    x0 = _batch_prior(jax.random.key(2), space, 512)
    if kind == "geometric":
        assert symmetry.is_canonical(x0)
    else:
        w = np.asarray(x0.layers[0][0])
        assert abs(w.std() - 0.1) < 0.01 and abs(w.mean()) < 0.01
    np.testing.assert_allclose(np.asarray(x0.layers[0][1]).std(), 0.1, atol=0.01)


def test_normalized_loss_weighs_a_sphere_like_the_geometric_flow():
    """``weighting="point"``: an error on one first-layer row of the normalized flow costs
    what it costs the geometric flow (chord^2 ~ angle^2 for a small error), where the per-entry
    weighting divided it by the layer's fan-in."""
    geo, norm = SPACES["geometric"], SPACES["normalized"]
    x1 = _batch_prior(jax.random.key(4), geo, 1)
    x1 = jax.tree.map(lambda a: a[0], x1)
    w0 = np.asarray(x1.layers[0][0]).copy()
    tangent = np.zeros_like(w0[0])
    tangent[0], tangent[1] = w0[0][1], -w0[0][0]
    tangent /= np.linalg.norm(tangent)
    angle = 0.05
    w0[0] = np.cos(angle) * w0[0] + np.sin(angle) * tangent
    pred = x1._replace(layers=[(jnp.asarray(w0), x1.layers[0][1])] + list(x1.layers[1:]))
    t = jnp.float32(0.3)
    loss = {k: float(flows.cfm_loss(SPACES[k], pred, x1, x1, x1, t, weighting=w))
            for k, w in (("geometric", "point"), ("normalized", "point"))}
    entry = float(flows.cfm_loss(norm, pred, x1, x1, x1, t, weighting="entry"))
    np.testing.assert_allclose(loss["normalized"], loss["geometric"], rtol=2e-3)
    fan_in = SIZES[0]
    np.testing.assert_allclose(entry * fan_in, loss["normalized"], rtol=1e-5)
    assert float(flows.cfm_loss(geo, pred, x1, x1, x1, t, weighting="entry")) == loss["geometric"]
    with pytest.raises(ValueError, match="unknown loss weighting"):
        flows.cfm_loss(norm, pred, x1, x1, x1, t, weighting="sphere")


def test_normalized_flow_can_start_on_the_spheres():
    """``prior="spheres"`` draws the normalized flow's prior like the geometric flow's (unit
    rows) while its path stays the straight line of the flat space."""
    space = FlowSpace("normalized", SIZES, prior="spheres")
    x0 = _batch_prior(jax.random.key(2), space, 64)
    assert symmetry.is_canonical(x0)
    assert space.path_spec == SPACES["normalized"].path_spec
    x1 = _batch_prior(jax.random.key(3), space, 64)
    mid = jax.vmap(lambda a, b: flows.interpolate(space, a, b, jnp.float32(0.5)))(x0, x1)
    np.testing.assert_allclose(np.asarray(mid.layers[0][0]),
                               0.5 * (np.asarray(x0.layers[0][0]) + np.asarray(x1.layers[0][0])),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="euclidean flow has no spheres"):
        FlowSpace("euclidean", SIZES, prior="spheres")
    with pytest.raises(ValueError, match="unknown prior"):
        FlowSpace("normalized", SIZES, prior="uniform")


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_interpolant_endpoints_and_velocity(kind):
    space = SPACES[kind]
    x1 = jax.tree.map(lambda a: a[0], space.encode(_data(jax.random.key(3), 1)))
    x0 = flows.sample_prior(jax.random.key(4), space)
    _tree_close(flows.interpolate(space, x0, x1, 0.0), x0, 1e-6)
    _tree_close(flows.interpolate(space, x0, x1, 1.0), x1, 1e-5)
    # The conditional velocity is the time derivative of the path.
    t, h = 0.3, 1e-2
    fd = jax.tree.map(lambda a, b: (a - b) / (2 * h), flows.interpolate(space, x0, x1, t + h),
                      flows.interpolate(space, x0, x1, t - h))
    u = flows.target_velocity(space, flows.interpolate(space, x0, x1, t), x1, t)
    _tree_close(u, fd, 2e-3 * max(1.0, max(float(jnp.abs(a).max()) for a in jax.tree.leaves(u))))
    if kind == "euclidean":
        _tree_close(u, jax.tree.map(lambda a, b: a - b, x1, x0), 1e-4)
    if kind == "geometric":
        xt = flows.interpolate(space, x0, x1, t)
        # tangent: proj leaves it unchanged
        _tree_close(product.proj(space.path_spec, xt, u), u, 1e-5)


@pytest.mark.parametrize("kind,param", list(itertools.product(flows.FLOWS,
                                                              flows.PARAMETERIZATIONS)))
def test_cfm_loss_zero_at_truth_positive_elsewhere_finite_grad(kind, param):
    space = SPACES[kind]
    x1 = jax.tree.map(lambda a: a[0], space.encode(_data(jax.random.key(5), 1)))
    x0 = flows.sample_prior(jax.random.key(6), space)
    t = jnp.float32(0.4)
    xt = flows.interpolate(space, x0, x1, t)
    truth = {"target": x1, "residual": jax.tree.map(lambda a, b: a - b, x1, xt),
             "velocity": flows.target_velocity(space, xt, x1, t)}[param]
    loss = jax.jit(lambda p: flows.cfm_loss(space, p, x0, x1, xt, t, param))
    assert float(loss(truth)) < 1e-8
    wrong = jax.tree.map(lambda a: a + 0.3, truth)
    assert float(loss(wrong)) > 1e-3
    grads = jax.grad(lambda p: flows.cfm_loss(space, p, x0, x1, xt, t, param))(wrong)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    g_truth = jax.grad(lambda p: flows.cfm_loss(space, p, x0, x1, xt, t, param))(truth)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(g_truth))


def test_sample_time():
    t = flows.sample_time(jax.random.key(0), (20000,))
    assert float(t.min()) >= 0 and float(t.max()) < 1
    np.testing.assert_allclose(float(t.mean()), 1 / 3, atol=0.01)  # Beta(1, 2) mean
    u = flows.sample_time(jax.random.key(0), (20000,), "uniform")
    np.testing.assert_allclose(float(u.mean()), 0.5, atol=0.01)
    with pytest.raises(ValueError, match="unknown time distribution"):
        flows.sample_time(jax.random.key(0), (), "gamma")


def test_exact_assignment_is_optimal_permutation():
    rng = np.random.default_rng(0)
    cost = rng.random((6, 6))
    idx = flows.exact_assignment(cost)
    assert sorted(idx) == list(range(6))
    best = min(sum(cost[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    np.testing.assert_allclose(cost[np.arange(6), idx].sum(), best)
    with pytest.raises(ValueError, match="NaN or Inf"):
        flows.exact_assignment(np.full((2, 2), np.nan))


@pytest.mark.parametrize("kind", ["euclidean", "geometric"])
@pytest.mark.parametrize("coupling", ["exact", "sinkhorn"])
def test_ot_coupling_lowers_mean_pair_cost(kind, coupling):
    space = SPACES[kind]
    n = 32
    x1 = space.encode(_data(jax.random.key(7), n))
    x0 = _batch_prior(jax.random.key(8), space, n)
    paired = flows.couple(coupling, jax.random.key(9), space, x0, x1)
    indep = float(flows.mean_pair_cost(space, x0, x1))
    ot = float(flows.mean_pair_cost(space, x0, paired))
    assert ot < indep
    if coupling == "exact":
        # a permutation of the batch: every target used exactly once
        np.testing.assert_allclose(np.sort(np.asarray(paired.layers[0][1]), axis=0),
                                   np.sort(np.asarray(x1.layers[0][1]), axis=0))
    same = flows.couple("independent", jax.random.key(9), space, x0, x1)
    _tree_close(same, x1, 0)
    with pytest.raises(ValueError, match="unknown coupling"):
        flows.couple("greedy", jax.random.key(0), space, x0, x1)


@pytest.mark.parametrize("kind", flows.FLOWS)
def test_euler_with_oracle_x1_prediction_lands_on_target(kind):
    space = SPACES[kind]
    x1 = space.encode(_data(jax.random.key(10), 4))
    x0 = _batch_prior(jax.random.key(11), space, 4)
    out = jax.jit(lambda a: flows.euler_sample(space, lambda x, t: x1, a, 16))(x0)
    _tree_close(out, jax.vmap(space.retract)(x1), 2e-4)
    assert _on_manifold(space, out)


def test_geometric_euler_projects_velocity_before_exp():
    # A raw velocity output with a normal component must not push points off the spheres.
    space = SPACES["geometric"]
    x0 = _batch_prior(jax.random.key(12), space, 2)
    radial = lambda x, t: jax.tree.map(lambda a: 5.0 * a, x)  # purely normal to the spheres
    out = flows.euler_sample(space, radial, x0, 8, parameterization="velocity")
    # Sphere factors untouched (the radial part is dropped); flat biases do move.
    _tree_close([w for w, _ in out.layers], [w for w, _ in x0.layers], 1e-5)
    assert float(jnp.abs(out.layers[0][1] - x0.layers[0][1]).max()) > 0.01


def test_guidance_lowers_task_loss():
    space = SPACES["geometric"]
    x1 = space.encode(_data(jax.random.key(13), 8))
    x0 = _batch_prior(jax.random.key(14), space, 8)
    xs = jax.random.normal(jax.random.key(15), (64, SIZES[0]))
    ys = jax.random.randint(jax.random.key(16), (64,), 0, SIZES[-1])

    def task_loss(xb):
        params = symmetry.decanonicalize(jax.vmap(space.retract)(xb))
        logits = jax.vmap(mlp.forward, in_axes=(0, None))(params, xs)
        logp = jax.nn.log_softmax(logits)
        return -jnp.sum(jnp.mean(jnp.take_along_axis(logp, ys[None, :, None], -1), axis=1))

    pred = lambda x, t: x1
    plain = flows.euler_sample(space, pred, x0, 16)
    guided = flows.euler_sample(space, pred, x0, 16, guidance_fn=task_loss, guidance_scale=1.0)
    assert float(task_loss(guided)) < float(task_loss(plain))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(guided))
