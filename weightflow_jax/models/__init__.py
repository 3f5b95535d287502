"""Relational-transformer vector fields over neural graphs.

* :class:`VectorField` — the time-conditioned model; ``model.apply(variables, graph, t)``.
* :func:`apply_to_mlp` — MLP weights in, MLP-layout output out.
* :class:`RTLayer` — one relational-transformer layer (sparse and dense evaluation).
"""

from weightflow_jax.models.relational_transformer import RTLayer, segment_softmax
from weightflow_jax.models.vector_field import (
    ATTENTION_MODES,
    VectorField,
    apply_to_mlp,
    sinusoidal_embedding,
)

__all__ = [
    "ATTENTION_MODES",
    "RTLayer",
    "VectorField",
    "apply_to_mlp",
    "segment_softmax",
    "sinusoidal_embedding",
]
