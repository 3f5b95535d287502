"""The learned field read as a map on a flow's coordinates.

The vector fields live in :mod:`weightflow_jax.models` and are chosen by name
(``config.model.name``: ``rt``, ``compact_rt``, ``mlp``). This module connects them to a
:class:`FlowSpace`: :func:`coord_spec` says which coordinates the field serves,
:func:`fit_stats` computes its standardization statistics from the training coordinates and
:func:`make_field` builds it. ``field.apply(variables, x, t)`` returns the raw prediction
(``x1`` or a velocity, by the flow's parameterization) in the coordinates' layout.
"""

from __future__ import annotations

import ml_collections

from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.models import (Conditioner, CoordSpec, Field, Standardizer, build_field,
                                   stats_mode)
from weightflow_jax.symmetry import Canonical

__all__ = ["coord_spec", "fit_stats", "make_field"]


def coord_spec(space: FlowSpace, parameterization: str = "target",
               condition: Conditioner | None = None) -> CoordSpec:
    """The coordinates of ``space`` as a field sees them (``condition``: a conditioned field)."""
    return CoordSpec(space.sizes, space.has_scale, output_offset=parameterization == "target",
                     condition=condition)


def fit_stats(model_cfg: ml_collections.ConfigDict, coords: Canonical) -> Standardizer:
    """The standardization statistics the chosen field needs, from training ``coords``."""
    return Standardizer.fit(stats_mode(model_cfg), coords)


def make_field(model_cfg: ml_collections.ConfigDict, space: FlowSpace, parameterization: str,
               stats: Standardizer, condition: Conditioner | None = None) -> Field:
    """The field named ``model_cfg.name`` for ``space`` (see :mod:`weightflow_jax.models`);
    with ``condition`` the field takes a condition value per network."""
    return build_field(model_cfg, coord_spec(space, parameterization, condition), stats)
