"""Vector fields over MLP weights, chosen by name (``config.model.name``).

* :class:`Field` — the common interface (``init``, ``apply(variables, coords, t, cond=None)``,
  ``check_sizes``); :func:`build_field` builds one from ``config.model``
  (:mod:`.registry`).
* :mod:`.conditioning` — :class:`Conditioner`: every field optionally conditioned on a
  snapshot's training loss/accuracy (classifier-free guidance at sampling).
* One module per field, named after it: ``rt`` (:mod:`.rt`, field and model) — the thesis's
  relational transformer over the full neural graph (:class:`VectorField`); ``compact_rt``
  (:mod:`.compact_rt`) — the same layers on the compact graph without input-neuron nodes;
  ``neuron_transformer`` (:mod:`.neuron_transformer`) — a wide transformer over
  hidden-neuron tokens (equivariant, runs on other hidden widths); ``mlp``
  (:mod:`.flat_mlp`, so named beside :mod:`weightflow_jax.mlp`, the MLP weights module) — a
  residual MLP over the flattened, standardized coordinates.
* :mod:`.layers` — what the fields share: :class:`RTLayer` (one relational-transformer
  layer, sparse and dense evaluation) and its scanned blocks, :func:`sinusoidal_embedding`.
* :mod:`.base` — :class:`Field`, :class:`CoordSpec`, :class:`Standardizer` (per-layer /
  per-coordinate feature standardization).
"""

from weightflow_jax.models.base import (STANDARDIZE_MODES, CoordSpec, Field, Standardizer,
                                        fourier_features)
from weightflow_jax.models.conditioning import CONDITIONS, Conditioner
from weightflow_jax.models.layers import RTLayer, segment_softmax, sinusoidal_embedding
from weightflow_jax.models.rt import ATTENTION_MODES, VectorField, apply_to_mlp
from weightflow_jax.models.registry import (MODELS, build_field, default_model_config,
                                            get_module, stats_mode)

__all__ = [
    "CONDITIONS",
    "Conditioner",
    "ATTENTION_MODES",
    "CoordSpec",
    "Field",
    "MODELS",
    "RTLayer",
    "STANDARDIZE_MODES",
    "Standardizer",
    "VectorField",
    "apply_to_mlp",
    "build_field",
    "default_model_config",
    "fourier_features",
    "get_module",
    "segment_softmax",
    "sinusoidal_embedding",
    "stats_mode",
]
