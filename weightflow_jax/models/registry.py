"""Vector fields by name (``config.model.name``), big_vision style.

Each field lives in its own module with three functions: ``default_config()`` (its own config
block, ``config.model.<name>``), ``stats_mode(cfg)`` (the standardization it needs) and
``build(cfg, spec, stats) -> Field``. Adding a field is one module plus one line in
:data:`MODELS`; flows, training and sampling only see :class:`~weightflow_jax.models.Field`.
A field's module is ``models/<name>.py``, except ``mlp``: ``models/flat_mlp.py`` (the name
``mlp.py`` is :mod:`weightflow_jax.mlp`, the MLP weights); layers the fields share are in
:mod:`weightflow_jax.models.layers`.
"""

from __future__ import annotations

import types

import ml_collections

from weightflow_jax.models import compact_rt, flat_mlp, neuron_transformer, rt
from weightflow_jax.models.base import CoordSpec, Field, Standardizer

__all__ = ["MODELS", "get_module", "default_model_config", "build_field", "stats_mode"]

MODELS: dict[str, types.ModuleType] = {
    "rt": rt,
    "compact_rt": compact_rt,
    "mlp": flat_mlp,
    "neuron_transformer": neuron_transformer,
}


def get_module(name: str) -> types.ModuleType:
    """The module of field ``name``; an unknown name lists the known ones."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {sorted(MODELS)} "
                         "(set config.model.name)")
    return MODELS[name]


def default_model_config(name: str = "rt") -> ml_collections.ConfigDict:
    """``config.model``: ``name`` plus every field's own block (so any can be chosen by an
    override ``--config.model.name=...``)."""
    get_module(name)
    c = ml_collections.ConfigDict()
    c.name = name
    for key, module in MODELS.items():
        c[key] = module.default_config()
    return c


def _block(model_cfg: ml_collections.ConfigDict) -> tuple[str, ml_collections.ConfigDict]:
    name = str(model_cfg.name)
    get_module(name)
    if name not in model_cfg:
        raise ValueError(f"config.model has no block for model {name!r}; add config.model."
                         f"{name} (defaults: weightflow_jax.models.{MODELS[name].__name__})")
    return name, model_cfg[name]


def stats_mode(model_cfg: ml_collections.ConfigDict) -> str:
    """The standardization the chosen field needs (``none``/``per_layer``/``per_coordinate``)."""
    name, block = _block(model_cfg)
    return MODELS[name].stats_mode(block)


def build_field(model_cfg: ml_collections.ConfigDict, spec: CoordSpec,
                stats: Standardizer) -> Field:
    """Builds the field named ``model_cfg.name`` from its block ``model_cfg[name]``."""
    name, block = _block(model_cfg)
    want = MODELS[name].stats_mode(block)
    if stats.mode != want:
        raise ValueError(f"model {name!r} with this config needs {want!r} standardization "
                         f"statistics, got {stats.mode!r}")
    return MODELS[name].build(block, spec, stats)
