"""``mlp``: a residual MLP over the flattened coordinates (as DeepWeightFlow does).

Every coordinate (``W0, b0, W1, ...`` row-major, then ``log_scale``) is standardized with its
own mean and standard deviation from the training set; sinusoidal time features (with a conditioned
flow's condition features appended, :mod:`.conditioning`) go in beside them and condition
every block::

    h = Dense(concat(z_t, sin/cos(t) [, c]))
    h = h + Dense(gelu(Dense(LN(h)) + Dense(temb)))        (num_blocks times)
    out = Dense_zero(LN(h));  z1_hat = z_t + out  (input_skip)  or  out

and the prediction is de-standardized. Not equivariant: it relies on the data's alignment to
a reference network and only runs on the architecture it was trained on (other widths are
refused with a clear error).

Config fields (``config.model.mlp``): ``width``, ``num_blocks``, ``mlp_ratio``,
``time_features``, ``input_skip`` (off by default: see :class:`~weightflow_jax.models.base.ModuleField`
on why a skip into an x1-prediction carries the prior's noise into the samples).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from weightflow_jax.models.base import (CoordSpec, Field, Standardizer, _flat, _unflat,
                                        num_coords)
from weightflow_jax.models.conditioning import time_condition_features
from weightflow_jax.symmetry import Canonical

__all__ = ["FlatMLP", "FlatMLPField", "default_config", "build", "stats_mode"]


def default_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(dict(
        width=512, num_blocks=3, mlp_ratio=1, time_features=64, input_skip=False))


class FlatMLP(nn.Module):
    """Time-conditioned residual MLP ``(n, P), (n,) -> (n, P)``."""

    out_dim: int
    width: int = 512
    num_blocks: int = 3
    mlp_ratio: int = 1
    time_features: int = 64

    @nn.compact
    def __call__(self, z: jax.Array, t: jax.Array, c: jax.Array | None = None) -> jax.Array:
        tsin = time_condition_features(t, self.time_features, c)
        temb = nn.gelu(nn.Dense(self.width, name="time_in")(tsin))
        h = nn.Dense(self.width, name="input")(jnp.concatenate([z, tsin], axis=-1))
        for i in range(self.num_blocks):
            u = nn.Dense(self.mlp_ratio * self.width, name=f"block{i}_in")(
                nn.LayerNorm(name=f"block{i}_ln")(h))
            u = u + nn.Dense(self.mlp_ratio * self.width, name=f"block{i}_time")(temb)
            h = h + nn.Dense(self.width, name=f"block{i}_out")(nn.gelu(u))
        h = nn.LayerNorm(name="out_ln")(h)
        return nn.Dense(self.out_dim, kernel_init=nn.initializers.zeros, name="output")(h)


class FlatMLPField(Field):
    """:class:`FlatMLP` on per-coordinate standardized coordinates."""

    name = "mlp"
    equivariant = False

    def __init__(self, spec: CoordSpec, stats: Standardizer, module: FlatMLP,
                 input_skip: bool):
        super().__init__(spec, stats)
        self.module = module
        self.input_skip = input_skip

    def init(self, key: jax.Array) -> Any:
        z = jnp.zeros((1, self.module.out_dim), jnp.float32)
        c = self._init_condition()
        return jax.jit(lambda k: self.module.init(k, z, jnp.zeros((1,), jnp.float32), c))(key)

    def apply(self, variables: Any, x: Canonical, t: jax.Array,
              cond: jax.Array | None = None) -> Canonical:
        self.check_sizes((int(x.layers[0][0].shape[-1]),)
                         + tuple(int(w.shape[-2]) for w, _ in x.layers))
        t = self._times(x, t)
        c = self._condition(t.shape[0], cond)
        z = _flat(self.stats.forward(x))
        out = self.module.apply(variables, z, t, c)
        if self.input_skip:
            out = z + out
        return self.stats.inverse(_unflat(out, self.spec.sizes, self.spec.has_scale),
                                  offset=self.spec.output_offset)


def stats_mode(cfg: ml_collections.ConfigDict) -> str:
    """The flat field always standardizes per coordinate."""
    del cfg
    return "per_coordinate"


def build(cfg: ml_collections.ConfigDict, spec: CoordSpec, stats: Standardizer) -> FlatMLPField:
    """A :class:`FlatMLPField` for ``spec`` from ``config.model.mlp``."""
    module = FlatMLP(out_dim=num_coords(spec.sizes, spec.has_scale), width=int(cfg.width),
                     num_blocks=int(cfg.num_blocks), mlp_ratio=int(cfg.mlp_ratio),
                     time_features=int(cfg.time_features))
    return FlatMLPField(spec, stats, module, bool(cfg.input_skip))

