"""Tests for permutation alignment by weight matching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import mlp, symmetry

ARCHS = [(30, 16, 16, 2), (784, 10, 10), (12, 9, 7, 8, 3)]


def _rand(key, sizes, b_std=0.5):
    return mlp.init(key, sizes, w_std=0.5, b_std=b_std)


_fwd = jax.jit(mlp.forward)


def _logits_close(a, b, x):
    la, lb = _fwd(a, x), _fwd(b, x)
    scale = float(jnp.max(jnp.abs(la)))
    np.testing.assert_allclose(la, lb, atol=1e-5 * scale, rtol=0)


def _dist(a, b):
    return float(jnp.linalg.norm(mlp.flatten(a) - mlp.flatten(b)))


@pytest.mark.parametrize("sizes", ARCHS)
def test_permute_preserves_function(sizes):
    params = _rand(jax.random.key(0), sizes)
    perms = symmetry.random_permutations(jax.random.key(1), sizes)
    x = jax.random.normal(jax.random.key(2), (16, sizes[0]))
    _logits_close(params, symmetry.permute(params, perms), x)


@pytest.mark.parametrize("sizes", ARCHS)
def test_recovers_planted_permutation_exactly(sizes):
    ref = _rand(jax.random.key(3), sizes)
    perms = symmetry.random_permutations(jax.random.key(4), sizes)
    shuffled = symmetry.permute(ref, perms)
    assert _dist(shuffled, ref) > 1.0
    aligned = symmetry.align(shuffled, ref)
    for (w, b), (wr, br) in zip(aligned, ref):
        np.testing.assert_array_equal(w, wr)
        np.testing.assert_array_equal(b, br)


@pytest.mark.parametrize("sizes", ARCHS)
def test_batched_align_preserves_function_and_never_increases_distance(sizes):
    ref = _rand(jax.random.key(5), sizes)
    keys = jax.random.split(jax.random.key(6), 5)
    batch = jax.vmap(lambda k: _rand(k, sizes))(keys)
    aligned, perms = symmetry.align(batch, ref, return_perms=True)
    assert len(perms) == len(sizes) - 2 and perms[0].shape == (5, sizes[1])
    x = jax.random.normal(jax.random.key(7), (16, sizes[0]))
    for i in range(5):
        before = jax.tree.map(lambda a: a[i], batch)
        after = jax.tree.map(lambda a: a[i], aligned)
        _logits_close(before, after, x)
        assert _dist(after, ref) <= _dist(before, ref) + 1e-5
    # On independent random nets weight matching finds a strictly closer arrangement.
    mean_before = np.mean([_dist(jax.tree.map(lambda a: a[i], batch), ref) for i in range(5)])
    mean_after = np.mean([_dist(jax.tree.map(lambda a: a[i], aligned), ref) for i in range(5)])
    assert mean_after < mean_before


def test_align_is_idempotent_and_self_alignment_is_identity():
    sizes = (10, 8, 6, 3)
    ref = _rand(jax.random.key(8), sizes)
    perms = symmetry.weight_matching(ref, ref)
    for p, n in zip(perms, sizes[1:-1]):
        np.testing.assert_array_equal(p, np.arange(n))
    other = _rand(jax.random.key(9), sizes)
    once = symmetry.align(other, ref)
    twice = symmetry.align(once, ref)
    np.testing.assert_allclose(mlp.flatten(once), mlp.flatten(twice))


def test_single_layer_network_has_nothing_to_align():
    ref = _rand(jax.random.key(0), (4, 3))
    other = _rand(jax.random.key(1), (4, 3))
    out = symmetry.align(other, ref)
    np.testing.assert_array_equal(out[0][0], other[0][0])


def test_align_shape_mismatch_errors():
    ref = _rand(jax.random.key(0), (10, 8, 3))
    other = _rand(jax.random.key(1), (10, 9, 3))
    with pytest.raises(ValueError, match=r"layer sizes \(10, 9, 3\).*reference has \(10, 8, 3\)"):
        symmetry.align(other, ref)
    batch = jax.tree.map(lambda a: a[None], other)
    with pytest.raises(ValueError, match="reference has"):
        symmetry.align(batch, ref)
    with pytest.raises(ValueError, match="single network"):
        symmetry.align(jax.tree.map(lambda a: a[None], ref), batch)
    with pytest.raises(ValueError, match="one permutation per hidden layer"):
        symmetry.permute(ref, [])


def test_align_rejects_non_finite():
    ref = _rand(jax.random.key(0), (10, 8, 3))
    bad = [(ref[0][0].at[1, 1].set(jnp.inf), ref[0][1]), ref[1]]
    with pytest.raises(ValueError, match=r"layer 0: W .*NaN or Inf"):
        symmetry.align(bad, ref)
