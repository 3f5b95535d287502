"""Tests for diffrax sampling, guidance and the samples.npz format."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import flows, mlp, sampling, symmetry
from weightflow_jax.flows import FlowSpace

# Two layers cover every factor type (hidden spheres, last-layer sphere, biases, log_scale)
# and keep the geometric flow's compile times small on shared CPUs.
SIZES = (4, 3, 2)
SPACES = {k: FlowSpace(k, SIZES) for k in flows.FLOWS}


def _data(key, n, sizes=SIZES):
    keys = jax.random.split(key, n)
    return jax.vmap(lambda k: mlp.init(k, sizes, w_std=0.5, b_std=0.3))(keys)


def _prior(key, space, n):
    return jax.vmap(lambda k: flows.sample_prior(k, space))(jax.random.split(key, n))


def _max_diff(a, b):
    return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a),
                                                               jax.tree.leaves(b)))


def _field(space):
    """A non-trivial x1-predictor depending on x and t, for any batch size."""
    x1 = jax.tree.map(lambda a: a[0], space.encode(_data(jax.random.key(10), 1)))

    def pred(x, t):
        return jax.tree.map(lambda a, b: a + 0.2 * jnp.sin(3.0 * b) * (1.0 - t), x1, x)
    return pred


def _task(n=64, key=3):
    kx, kw = jax.random.split(jax.random.key(key))
    x = jax.random.normal(kx, (n, SIZES[0]))
    y = jnp.argmax(x @ jax.random.normal(kw, (SIZES[0], SIZES[-1])), axis=-1)
    return np.asarray(x), np.asarray(y, np.int32)


@pytest.mark.parametrize("kind", ["euclidean", "normalized"])
def test_diffrax_euler_matches_reference_euler(kind):
    space = SPACES[kind]
    pred = _field(space)
    x0 = _prior(jax.random.key(1), space, 4)
    ref = jax.jit(lambda x: flows.euler_sample(space, pred, x, 8))(x0)
    got = jax.jit(lambda x: sampling.integrate(space, pred, x, steps=8))(x0)
    assert _max_diff(ref, got) < 1e-5


def test_geometric_guided_diffrax_euler_matches_reference_and_stays_on_spheres():
    space = SPACES["geometric"]
    pred = _field(space)
    x, y = _task()
    x0 = _prior(jax.random.key(2), space, 4)
    g = sampling.make_guidance(space, x, y, 0.5, mode="coords")
    loss = sampling.task_loss_fn(space, x, y)
    ref = jax.jit(lambda a: flows.euler_sample(space, pred, a, 8, guidance_fn=loss,
                                               guidance_scale=0.5))(x0)
    got = jax.jit(lambda a, g: sampling.integrate(space, pred, a, steps=8, guidance=g,
                                                  retract=False))(x0, g)
    # exp-map steps keep the points on the spheres without any retraction
    assert symmetry.is_canonical(got, atol=1e-5)
    assert _max_diff(jax.vmap(space.retract)(got), ref) < 1e-5
    assert _max_diff(got, x0) > 0.1  # it moved


def test_adaptive_solvers_refused_for_geometric_flow():
    space = SPACES["geometric"]
    x0 = _prior(jax.random.key(5), space, 2)
    pred = lambda x, t: x
    with pytest.raises(ValueError, match="only the exp-map steps solver='euler'"):
        sampling.integrate(space, pred, x0, solver="tsit5")
    with pytest.raises(ValueError, match="adaptive"):
        sampling.sample(space, pred, jax.random.key(0), 2, solver="dopri5")
    with pytest.raises(ValueError, match="unknown solver"):
        sampling.integrate(SPACES["euclidean"], pred, x0, solver="rk4")


def test_manifold_midpoint_is_second_order_on_the_spheres():
    """Halving the step divides the midpoint rule's error by ~4 (Euler's by ~2), on the
    geometric flow, and the points stay on the spheres."""
    space = SPACES["geometric"]
    pred = _field(space)
    x0 = _prior(jax.random.key(2), space, 4)
    run = lambda solver, n: jax.jit(lambda a: sampling.integrate(
        space, pred, a, steps=n, solver=solver, retract=False, t_end=0.9))(x0)
    ref = run("midpoint", 512)
    err = {(s, n): _max_diff(run(s, n), ref) for s in ("euler", "midpoint") for n in (8, 16)}
    assert 3.0 < err[("midpoint", 8)] / err[("midpoint", 16)] < 5.5, err
    assert 1.5 < err[("euler", 8)] / err[("euler", 16)] < 2.6, err
    assert err[("midpoint", 8)] < 0.35 * err[("euler", 16)], err  # same field evaluations
    assert symmetry.is_canonical(run("midpoint", 8), atol=1e-5)


@pytest.mark.parametrize("solver", ["tsit5"])
def test_adaptive_solver_solves_linear_field_exactly(solver):
    space = SPACES["euclidean"]
    x0 = _prior(jax.random.key(6), space, 2)
    # v = -x (velocity parameterization): x(1) = exp(-1) x0
    pred = lambda x, t: jax.tree.map(lambda a: -a, x)
    out, stats = sampling.integrate(space, pred, x0, solver=solver, steps=4,
                                    parameterization="velocity", rtol=1e-6, atol=1e-7,
                                    return_stats=True)
    want = jax.tree.map(lambda a: a * np.exp(-1.0), x0)
    assert _max_diff(out, want) < 1e-5
    assert int(stats["num_steps"]) > 1
    euler = sampling.integrate(space, pred, x0, steps=4, parameterization="velocity")
    assert _max_diff(euler, jax.tree.map(lambda a: a * 0.75 ** 4, x0)) < 1e-6  # (1 - dt)^N


def test_guidance_lowers_task_loss():
    # A zero learned velocity isolates the guidance term: the sampler then runs projected
    # gradient descent on the task loss (fresh minibatch of 16 per step), which must fall.
    space = SPACES["geometric"]
    pred = lambda x, t: jax.tree.map(jnp.zeros_like, x)
    x, y = _task()
    loss = sampling.task_loss_fn(space, x, y)
    key = jax.random.key(7)
    g = sampling.make_guidance(space, x, y, 2.0, batch_size=16, seed=1)
    _, guided = sampling.sample(space, pred, key, 4, steps=8, return_coords=True,
                                parameterization="velocity", guidance=g)
    # without guidance the samples would stay at their prior draws
    plain = jax.vmap(lambda k: flows.sample_prior(k, space))(jax.random.split(key, 4))
    l_plain, l_guided = float(loss(plain)), float(loss(jax.tree.map(jnp.asarray, guided)))
    assert l_guided < 0.9 * l_plain
    assert symmetry.is_canonical(guided, atol=1e-5)


def test_fresh_minibatch_changes_with_time():
    space = SPACES["euclidean"]
    x, y = _task(n=50)
    g = sampling.make_guidance(space, x, y, 1.0, batch_size=8, seed=3)
    c = space.encode(_data(jax.random.key(8), 2))
    l0 = sampling.guidance_loss_at(space, g, jnp.float32(0.0))(c)
    l1 = sampling.guidance_loss_at(space, g, jnp.float32(0.5))(c)
    l0b = sampling.guidance_loss_at(space, g, jnp.float32(0.0))(c)
    assert float(l0) != float(l1)
    assert float(l0) == float(l0b)


def test_guidance_rejects_mismatched_task():
    space = SPACES["geometric"]
    with pytest.raises(ValueError, match=r"7 features but the networks take 4 inputs"):
        sampling.make_guidance(space, np.zeros((4, 7), np.float32), np.zeros(4, np.int32))
    with pytest.raises(ValueError, match=r"labels range over \[0, 9\] but the networks have 2"):
        sampling.make_guidance(space, np.zeros((2, 4), np.float32), np.array([0, 9]))
    with pytest.raises(ValueError, match="labels must be shaped"):
        sampling.task_loss_fn(space, np.zeros((4, 4), np.float32), np.zeros(3, np.int32))


def test_sample_shapes_decoding_and_chunk_independence():
    space = SPACES["normalized"]
    pred = _field(space)
    key = jax.random.key(9)
    params, coords = sampling.sample(space, pred, key, 5, steps=4, batch_size=2,
                                     return_coords=True)
    assert [(w.shape, b.shape) for w, b in params] == [((5, 3, 4), (5, 3)), ((5, 2, 3), (5, 2))]
    assert all(w.dtype == np.float32 for w, _ in params)
    again = sampling.sample(space, pred, key, 5, steps=4, batch_size=5)
    assert _max_diff(params, again) < 1e-5
    # decoded networks compute the functions of the decoded coordinates
    xs = jax.random.normal(jax.random.key(0), (7, SIZES[0]))
    fwd = jax.vmap(mlp.forward, in_axes=(0, None))
    dec = space.decode(jax.tree.map(jnp.asarray, coords))
    np.testing.assert_allclose(fwd(params, xs), fwd(dec, xs), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="num must be >= 1"):
        sampling.sample(space, pred, key, 0)


def test_samples_npz_round_trip(tmp_path):
    params = [(np.asarray(w), np.asarray(b)) for w, b in _data(jax.random.key(11), 3)]
    path = str(tmp_path / "samples.npz")
    assert sampling.save_samples_npz(path, params) == path
    with np.load(path) as z:  # numpy alone
        assert sorted(z.files) == ["W0", "W1", "b0", "b1"]
        assert z["W1"].shape == (3, 2, 3) and z["b1"].shape == (3, 2)
        assert z["W0"].dtype == np.float32
    back = sampling.load_samples_npz(path)
    for (w, b), (w2, b2) in zip(params, back):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    assert os.listdir(tmp_path) == ["samples.npz"]


def test_samples_npz_atomic_on_failure(tmp_path, monkeypatch):
    params = [(np.asarray(w), np.asarray(b)) for w, b in _data(jax.random.key(12), 2)]
    path = str(tmp_path / "samples.npz")
    # invalid networks: nothing written
    bad = [params[0], (params[1][0][:, :, :2], params[1][1])]
    with pytest.raises(ValueError, match="layer 1"):
        sampling.save_samples_npz(path, bad)
    assert os.listdir(tmp_path) == []
    # a failure while writing leaves no file and no temporary
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        sampling.save_samples_npz(path, params)
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    # an existing file survives a failed overwrite untouched
    sampling.save_samples_npz(path, params)
    before = open(path, "rb").read()
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        sampling.save_samples_npz(path, [(w * 2, b) for w, b in params])
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["samples.npz"]


def test_load_samples_npz_rejects_incomplete_files(tmp_path):
    path = str(tmp_path / "bad.npz")
    np.savez(path, W0=np.zeros((2, 3, 4), np.float32), W1=np.zeros((2, 2, 3), np.float32),
             b1=np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="layer 0 lacks W0 or b0"):
        sampling.load_samples_npz(path)
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match="no W0/b0"):
        sampling.load_samples_npz(path)
