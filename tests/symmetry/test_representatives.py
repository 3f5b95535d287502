"""Tests for the named representatives of the rescaling orbit (balanced vs exact)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import mlp, symmetry


def _nets(sizes, n=4, seed=0):
    return jax.vmap(lambda k: mlp.init(k, sizes, w_std=0.3, b_std=0.1))(
        jax.random.split(jax.random.key(seed), n))


def _logits(params, x):
    return jax.vmap(mlp.forward, in_axes=(0, None))(params, x)


def _random_scales(params, seed):
    return [jnp.exp(1.5 * jax.random.normal(jax.random.key(seed + l), b.shape))
            for l, (_, b) in enumerate(params[:-1])]


@pytest.mark.parametrize("sizes", [(7, 5, 3), (6, 8, 8, 2), (5, 4, 6, 3, 2)])
def test_balanced_same_logits_and_balanced_norms(sizes):
    params = _nets(sizes)
    x = jax.random.normal(jax.random.key(9), (32, sizes[0]))
    bal = symmetry.balance(params)
    ref = _logits(params, x)
    rel = float(jnp.max(jnp.abs(_logits(bal, x) - ref)) / jnp.max(jnp.abs(ref)))
    assert rel <= 1e-5
    assert float(symmetry.imbalance(bal)) < 1e-4
    assert float(symmetry.imbalance(params)) > 0.1   # it did something
    # the minimum-norm member: no other member of the orbit is smaller
    sq = lambda p: float(sum(jnp.sum(w * w) + jnp.sum(b * b) for w, b in p))
    for seed in range(3):
        other = symmetry.rescale_neurons(bal, [jnp.exp(0.1 * jax.random.normal(
            jax.random.key(seed), b.shape)) for _, b in bal[:-1]])
        assert sq(other) >= sq(bal) - 1e-4


@pytest.mark.parametrize("sizes", [(7, 5, 3), (6, 8, 8, 2)])
def test_balanced_is_invariant_to_rescaling_the_input_network(sizes):
    params = _nets(sizes, seed=3)
    rescaled = symmetry.rescale_neurons(params, _random_scales(params, 11))
    x = jax.random.normal(jax.random.key(1), (16, sizes[0]))
    np.testing.assert_allclose(_logits(rescaled, x), _logits(params, x), rtol=1e-4, atol=1e-5)
    a, b = symmetry.balance(params), symmetry.balance(rescaled)
    for (wa, ba), (wb, bb) in zip(a, b):
        np.testing.assert_allclose(wa, wb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(ba, bb, rtol=1e-4, atol=1e-5)


def test_balance_scales_rebuild_the_balanced_network_and_represent_names():
    params = _nets((6, 8, 8, 2), seed=5)
    scales = symmetry.balance_scales(params)
    direct = symmetry.balance(params, canonical_first=False)
    for (wa, ba), (wb, bb) in zip(symmetry.rescale_neurons(params, scales), direct):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert symmetry.represent(params, "exact")[0][0].shape == params[0][0].shape
    np.testing.assert_allclose(symmetry.represent(params, "balanced")[0][0],
                               symmetry.balance(params)[0][0])
    with pytest.raises(ValueError, match="unknown representative 'thesis'.*balanced"):
        symmetry.represent(params, "thesis")
    with pytest.raises(ValueError, match="one scale array per hidden layer"):
        symmetry.rescale_neurons(params, scales[:1])


def test_balance_dead_neurons_jit_vmap_grad_no_nan():
    params = [(np.asarray(w).copy(), np.asarray(b).copy()) for w, b in _nets((5, 4, 3), n=2)]
    params[0][0][:, 1, :] = 0.0   # a dead neuron (zero incoming weights)...
    params[0][1][:, 1] = 0.0
    params[1][0][:, :, 2] = 0.0   # ...and one with zero outgoing weights
    bal = jax.jit(symmetry.balance)(params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(bal))
    x = jax.random.normal(jax.random.key(0), (8, 5))
    np.testing.assert_allclose(_logits(bal, x), _logits(params, x), rtol=1e-5, atol=1e-5)
    one = jax.vmap(symmetry.balance)(params)
    np.testing.assert_allclose(one[0][0], bal[0][0], rtol=1e-6, atol=1e-7)
    g = jax.grad(lambda p: jnp.sum(_logits(symmetry.balance(p), x) ** 2))(params)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(g))
