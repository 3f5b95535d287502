"""Tests for the MLP weight representation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import mlp

ARCHS = [(30, 16, 16, 2), (784, 10, 10), (12, 7, 5, 6, 3)]


@pytest.mark.parametrize("sizes", ARCHS)
def test_init_shapes_and_sizes(sizes):
    params = mlp.init(jax.random.key(0), sizes)
    assert mlp.layer_sizes(params) == sizes
    assert mlp.validate(params) == sizes
    assert sum(w.size + b.size for w, b in params) == mlp.num_params(sizes)
    assert all(float(jnp.abs(b).max()) == 0.0 for _, b in params)


def test_known_param_counts():
    assert mlp.num_params((30, 16, 16, 2)) == 802
    assert mlp.num_params((784, 10, 10)) == 7960


def test_forward_matches_manual():
    params = mlp.init(jax.random.key(1), (5, 4, 3), b_std=0.3)
    x = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    (w0, b0), (w1, b1) = [(np.asarray(w), np.asarray(b)) for w, b in params]
    expected = np.maximum(x @ w0.T + b0, 0) @ w1.T + b1
    np.testing.assert_allclose(mlp.forward(params, x), expected, rtol=1e-5, atol=1e-6)


def test_forward_vmaps_over_networks():
    keys = jax.random.split(jax.random.key(2), 4)
    batch = jax.vmap(lambda k: mlp.init(k, (6, 5, 3)))(keys)
    assert mlp.layer_sizes(batch) == (6, 5, 3)
    x = jnp.ones((2, 6))
    out = jax.vmap(mlp.forward, in_axes=(0, None))(batch, x)
    assert out.shape == (4, 2, 3)
    one = mlp.forward(jax.tree.map(lambda a: a[1], batch), x)
    np.testing.assert_allclose(out[1], one, rtol=1e-6)


@pytest.mark.parametrize("sizes", ARCHS)
def test_flatten_roundtrip(sizes):
    params = mlp.init(jax.random.key(3), sizes, b_std=1.0)
    flat = mlp.flatten(params)
    assert flat.shape == (mlp.num_params(sizes),)
    back = mlp.unflatten(flat, sizes)
    for (w, b), (w2, b2) in zip(params, back):
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(b, b2)
    # Batched round trip.
    batch = jax.tree.map(lambda a: jnp.stack([a, 2 * a]), params)
    flat_b = mlp.flatten(batch)
    assert flat_b.shape == (2, mlp.num_params(sizes))
    np.testing.assert_array_equal(flat_b[1], 2 * flat)
    back_b = mlp.unflatten(flat_b, sizes)
    np.testing.assert_array_equal(back_b[-1][0], batch[-1][0])


def test_flatten_order_is_w_then_b():
    params = [(jnp.array([[1.0, 2.0]]), jnp.array([3.0])), (jnp.array([[4.0]]), jnp.array([5.0]))]
    np.testing.assert_array_equal(mlp.flatten(params), [1, 2, 3, 4, 5])


def test_validate_rejects_non_chaining_layers():
    params = [(jnp.zeros((4, 3)), jnp.zeros(4)), (jnp.zeros((2, 5)), jnp.zeros(2))]
    with pytest.raises(ValueError, match=r"layer 1.*takes 5 inputs.*layer 0 has 4"):
        mlp.validate(params)


def test_validate_rejects_bias_mismatch_and_rank():
    with pytest.raises(ValueError, match=r"layer 0: W has 4 outputs"):
        mlp.validate([(jnp.zeros((4, 3)), jnp.zeros(5))])
    with pytest.raises(ValueError, match=r"layer 0: expected W of rank 2"):
        mlp.validate([(jnp.zeros((4,)), jnp.zeros(4))], batched=False)
    with pytest.raises(ValueError, match="empty"):
        mlp.validate([])


def test_validate_rejects_non_finite():
    params = mlp.init(jax.random.key(0), (3, 4, 2))
    bad = [params[0], (params[1][0].at[0, 0].set(jnp.nan), params[1][1])]
    with pytest.raises(ValueError, match=r"layer 1: W .*NaN or Inf"):
        mlp.validate(bad)


def test_unflatten_wrong_length():
    with pytest.raises(ValueError, match="has 26 parameters"):
        mlp.unflatten(jnp.zeros(10), (3, 4, 2))


def test_parse_arch():
    assert mlp.parse_arch("784-32-10") == (784, 32, 10)
    assert mlp.format_arch((784, 32, 10)) == "784-32-10"
    with pytest.raises(ValueError, match="cannot parse"):
        mlp.parse_arch("784-a-10")
    with pytest.raises(ValueError, match="invalid"):
        mlp.parse_arch("784")
