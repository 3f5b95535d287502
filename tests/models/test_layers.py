"""Tests for the layers the fields share (weightflow_jax/models/layers.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from weightflow_jax.models import segment_softmax, sinusoidal_embedding


def test_segment_softmax_masks_and_normalizes():
    logits = jnp.array([[1.0], [2.0], [3.0], [50.0], [0.0]])
    seg = jnp.array([0, 0, 1, 1, 2])
    mask = jnp.array([True, True, True, False, False])
    a = segment_softmax(logits, seg, 4, mask)
    np.testing.assert_allclose(a[:, 0], [1 / (1 + np.e), np.e / (1 + np.e), 1.0, 0.0, 0.0],
                               rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(a)))


def test_sinusoidal_embedding_features_and_odd_dim_error():
    e = sinusoidal_embedding(jnp.array([0.0, 0.5]), 8)
    assert e.shape == (2, 8)
    np.testing.assert_allclose(np.asarray(e[0]), [0.0] * 4 + [1.0] * 4, atol=1e-7)
    with pytest.raises(ValueError, match="must be even"):
        sinusoidal_embedding(jnp.array([0.0]), 7)
