"""Tests of pair alignment (each coupled target permuted to match its prior draw)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax import flows, mlp, symmetry


def _batch(space, key, n=8, std=0.5):
    x = jax.vmap(lambda k: flows.sample_prior(k, space, std))(jax.random.split(key, n))
    return jax.vmap(space.retract)(x) if space.kind != "euclidean" else x


def _permute(x, perms):
    return symmetry.Canonical(jax.vmap(symmetry.permute)(x.layers, perms), x.log_scale)


@pytest.mark.parametrize("sizes", [(4, 5, 2), (4, 5, 3, 2), (3, 4, 3, 4, 2)])
@pytest.mark.parametrize("kind", ["geometric", "euclidean"])
def test_aligned_targets_compute_the_same_function_and_cost_no_more(sizes, kind):
    space = flows.FlowSpace(kind, sizes)
    x0 = _batch(space, jax.random.key(0))
    x1 = _batch(space, jax.random.key(1))
    out, info = flows.align_pairs(space, x0, x1)
    # same networks (function), still on the manifold
    inputs = jax.random.normal(jax.random.key(2), (7, sizes[0]))
    for i in range(8):
        a = mlp.forward(space.decode(jax.tree.map(lambda v: v[i], x1)), inputs)
        b = mlp.forward(space.decode(jax.tree.map(lambda v: v[i], out)), inputs)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    before = np.asarray(flows.pair_costs(space, x0, x1))
    after = np.asarray(flows.pair_costs(space, x0, out))
    assert np.all(after <= before + 1e-6)
    assert info["cost_after"] <= info["cost_before"] + 1e-6
    # random pairs of networks with hidden neurons: alignment finds shorter pairs
    assert info["changed"] > 0 and info["cost_after"] < info["cost_before"]


def test_pair_alignment_is_equivariant_with_one_hidden_layer():
    space = flows.FlowSpace("geometric", (6, 7, 3))
    x0 = _batch(space, jax.random.key(3))
    x1 = _batch(space, jax.random.key(4))
    out, _ = flows.align_pairs(space, x0, x1)
    perms = [jnp.stack([jax.random.permutation(k, 7)
                        for k in jax.random.split(jax.random.key(5), 8)])]
    out_p, _ = flows.align_pairs(space, _permute(x0, perms), x1)
    for a, b in zip(jax.tree.leaves(_permute(out, perms)), jax.tree.leaves(out_p)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_no_hidden_layer_and_unknown_mode():
    space = flows.FlowSpace("geometric", (4, 3))
    x0, x1 = _batch(space, jax.random.key(0)), _batch(space, jax.random.key(1))
    out, info = flows.align_pairs(space, x0, x1)
    assert info["changed"] == 0.0
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(x1)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="unknown pair_alignment 'hungarian'.*weight_matching"):
        flows.check_pair_alignment("hungarian")
