"""Tests for the canonical form under positive rescaling."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import mlp, symmetry
from weightflow_jax.geometry import Euclidean, Sphere

ARCHS = [(30, 16, 16, 2), (784, 10, 10), (12, 9, 7, 8, 3)]


def _rand(key, sizes):
    return mlp.init(key, sizes, w_std=0.5, b_std=0.5)


_fwd = jax.jit(mlp.forward)


def _logits_close(a, b, x, tol=1e-5):
    la, lb = _fwd(a, x), _fwd(b, x)
    scale = float(jnp.max(jnp.abs(la)))
    np.testing.assert_allclose(lb, la, atol=tol * scale, rtol=0)


def _rescale(key, params, low=0.1, high=10.0):
    """Random positive rescaling of every hidden neuron (function-preserving)."""
    out = [list(layer) for layer in params]
    for l in range(len(params) - 1):
        key, sub = jax.random.split(key)
        a = jax.random.uniform(sub, (params[l][0].shape[0],), minval=low, maxval=high)
        out[l][0] = out[l][0] * a[:, None]
        out[l][1] = out[l][1] * a
        out[l + 1][0] = out[l + 1][0] / a[None, :]
    return [tuple(layer) for layer in out]


@pytest.mark.parametrize("sizes", ARCHS)
def test_exact_mode_preserves_function(sizes):
    params = _rand(jax.random.key(0), sizes)
    canon = symmetry.canonicalize(params, "exact")
    assert symmetry.is_canonical(canon)
    x = jax.random.normal(jax.random.key(1), (32, sizes[0]))
    _logits_close(params, symmetry.decanonicalize(canon), x)


@pytest.mark.parametrize("sizes", ARCHS)
def test_thesis_mode_keeps_predictions_not_scale(sizes):
    params = _rand(jax.random.key(2), sizes)
    canon = symmetry.canonicalize(params, "thesis")
    assert canon.log_scale is None
    x = jax.random.normal(jax.random.key(3), (64, sizes[0]))
    la = mlp.forward(params, x)
    lb = mlp.forward(symmetry.decanonicalize(canon), x)
    np.testing.assert_array_equal(jnp.argmax(la, -1), jnp.argmax(lb, -1))
    norm = float(jnp.linalg.norm(mlp.forward(canon.layers, x) - la))
    assert norm > 1e-2  # the logit scale really is dropped


@pytest.mark.parametrize("sizes", ARCHS)
def test_rescaling_invariance(sizes):
    params = _rand(jax.random.key(4), sizes)
    scaled = _rescale(jax.random.key(5), params)
    c1 = symmetry.canonicalize(params, "exact")
    c2 = symmetry.canonicalize(scaled, "exact")
    for (w1, b1), (w2, b2) in zip(c1.layers, c2.layers):
        np.testing.assert_allclose(w1, w2, atol=2e-5)
        np.testing.assert_allclose(b1, b2, atol=2e-5)
    np.testing.assert_allclose(c1.log_scale, c2.log_scale, atol=1e-5)


@pytest.mark.parametrize("sizes", ARCHS)
def test_recovers_planted_permutation_and_rescaling(sizes):
    ref = _rand(jax.random.key(6), sizes)
    perms = symmetry.random_permutations(jax.random.key(7), sizes)
    disguised = _rescale(jax.random.key(8), symmetry.permute(ref, perms))
    c_ref = symmetry.canonicalize(ref, "exact")
    c_dis = symmetry.canonicalize(disguised, "exact")
    aligned = symmetry.align(c_dis.layers, c_ref.layers)
    for (w1, b1), (w2, b2) in zip(aligned, c_ref.layers):
        np.testing.assert_allclose(w1, w2, atol=2e-5)
        np.testing.assert_allclose(b1, b2, atol=2e-5)


def test_idempotent():
    params = _rand(jax.random.key(9), (12, 9, 7, 3))
    c1 = symmetry.canonicalize(params, "exact")
    c2 = symmetry.canonicalize(symmetry.decanonicalize(c1), "exact")
    for a, b in zip(jax.tree.leaves(c1), jax.tree.leaves(c2)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_batched_equals_per_network():
    sizes = (12, 9, 7, 3)
    keys = jax.random.split(jax.random.key(10), 3)
    batch = jax.vmap(lambda k: _rand(k, sizes))(keys)
    canon = symmetry.canonicalize(batch, "exact")
    assert canon.log_scale.shape == (3,)
    single = symmetry.canonicalize(jax.tree.map(lambda a: a[2], batch), "exact")
    for a, b in zip(jax.tree.leaves(canon), jax.tree.leaves(single)):
        np.testing.assert_allclose(a[2], b, rtol=1e-6, atol=1e-7)
    back = symmetry.decanonicalize(canon)
    x = jax.random.normal(jax.random.key(11), (8, sizes[0]))
    _logits_close(jax.tree.map(lambda a: a[1], batch), jax.tree.map(lambda a: a[1], back), x)


def test_dead_neurons_no_nan_and_function_preserved():
    sizes = (6, 5, 4, 3)
    params = [list(layer) for layer in _rand(jax.random.key(12), sizes)]
    params[0][0] = params[0][0].at[1].set(0.0)          # dead, positive bias -> constant
    params[0][1] = params[0][1].at[1].set(0.7)
    params[1][0] = params[1][0].at[2].set(0.0)          # dead, negative bias -> zero
    params[1][1] = params[1][1].at[2].set(-0.4)
    params = [tuple(layer) for layer in params]
    canon = symmetry.canonicalize(params, "exact")
    leaves = jax.tree.leaves(canon)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
    assert symmetry.is_canonical(canon)
    np.testing.assert_array_equal(canon.layers[0][0][1], jnp.eye(6)[0])
    np.testing.assert_array_equal(canon.layers[1][0][:, 1], 0.0)
    x = jax.random.normal(jax.random.key(13), (32, 6))
    _logits_close(params, symmetry.decanonicalize(canon), x)


def test_zero_last_layer_no_nan():
    params = _rand(jax.random.key(14), (5, 4, 3))
    params = [params[0], (jnp.zeros((3, 4)), params[1][1])]
    for mode in symmetry.MODES:
        canon = symmetry.canonicalize(params, mode)
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(canon))
    x = jax.random.normal(jax.random.key(15), (8, 5))
    out = mlp.forward(symmetry.decanonicalize(symmetry.canonicalize(params, "exact")), x)
    np.testing.assert_allclose(out, jnp.broadcast_to(params[1][1], out.shape), atol=1e-6)


def test_finite_gradients_including_dead_neurons():
    params = _rand(jax.random.key(16), (6, 5, 3))
    params = [(params[0][0].at[0].set(0.0), params[0][1]), params[1]]
    x = jax.random.normal(jax.random.key(17), (4, 6))

    def f(p):
        c = symmetry.canonicalize(p, "exact", validate=False)
        return jnp.sum(mlp.forward(symmetry.decanonicalize(c), x) ** 2) + jnp.sum(c.log_scale)

    grads = jax.jit(jax.grad(f))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_jit_and_vmap():
    sizes = (8, 6, 3)
    keys = jax.random.split(jax.random.key(18), 4)
    batch = jax.vmap(lambda k: _rand(k, sizes))(keys)
    f = jax.jit(jax.vmap(lambda p: symmetry.canonicalize(p, "exact", validate=False)))
    a = f(batch)
    b = symmetry.canonicalize(batch, "exact")
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6)


def test_manifold_spec_matches_canonical_structure():
    params = _rand(jax.random.key(19), (12, 9, 7, 3))
    for mode in symmetry.MODES:
        canon = symmetry.canonicalize(params, mode)
        spec = symmetry.manifold_spec((12, 9, 7, 3), mode)
        is_factor = lambda s: isinstance(s, (Sphere, Euclidean))
        assert (jax.tree.structure(spec, is_leaf=is_factor).num_leaves
                == jax.tree.structure(canon).num_leaves)
        assert spec.layers[0][0] == Sphere(1) and spec.layers[-1][0] == Sphere(2)
        assert isinstance(spec.layers[0][1], Euclidean)
    assert symmetry.manifold_spec(3, "thesis").log_scale is None


def test_bad_input_errors():
    with pytest.raises(ValueError, match="unknown canonical mode"):
        symmetry.canonicalize(_rand(jax.random.key(0), (3, 2)), "bogus")
    with pytest.raises(ValueError, match="layer 1: W shape"):
        symmetry.canonicalize([(jnp.ones((4, 3)), jnp.ones(4)), (jnp.ones((2, 5)), jnp.ones(2))])
    with pytest.raises(ValueError, match="expects a Canonical"):
        symmetry.decanonicalize([(jnp.ones((2, 3)), jnp.ones(2))])
