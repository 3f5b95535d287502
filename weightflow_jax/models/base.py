"""What every vector field shares: the coordinate layout it serves, its interface, standardization.

A *field* turns a batch of flow coordinates (:class:`~weightflow_jax.symmetry.Canonical`,
leading batch axis ``n``) and times ``t`` ``(n,)`` into a raw prediction of the same structure
(``x1`` or a velocity, as the flow's parameterization says). Every field is a :class:`Field`:

* ``field.init(key) -> variables`` (``{"params": ...}``, traced on one zero network);
* ``field.apply(variables, x, t, cond=None) -> Canonical`` (pure; works under
  ``jit``/``vmap``/``grad``); ``cond`` is a conditioned field's raw condition value per
  network (scalar or ``(n,)``, ``NaN`` = the null condition; ``None`` = all null), see
  :mod:`weightflow_jax.models.conditioning`;
* ``field.check_sizes(sizes)``: raises ``ValueError`` when the field cannot run on networks of
  ``sizes`` (a hidden width the flat ``mlp`` field was not built for, another input width).

Standardization statistics (:class:`Standardizer`) are computed once from the training
coordinates, are part of the field (constants, not parameters) and are stored with the run
(``field_stats.npz``) so that sampling and ``load_flow`` reuse exactly the training values.

* ``per_layer``: one mean and standard deviation per weight matrix and per bias vector (and
  for ``log_scale``). Scalars per layer keep a graph field equivariant and let it run on other
  hidden widths; weight standard deviations are stored at the training fan-in and rescaled by
  ``sqrt(fan_in_train / fan_in)`` on another width (entries of a unit row of length ``k`` have
  size ``1 / sqrt(k)``; raw weights of trained nets scale alike).
* ``per_coordinate``: a mean and standard deviation for every coordinate (the flat field).

Outputs are de-standardized according to the parameterization (``output_offset``): an ``x1``
prediction as ``mean + std * out`` (a zero-initialised head then starts at the data mean), a
displacement or velocity as ``std * out``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.models.conditioning import Conditioner
from weightflow_jax.symmetry import Canonical

__all__ = ["CoordSpec", "Field", "ModuleField", "Standardizer", "STANDARDIZE_MODES", "fourier_features",
           "graph_stats_mode", "zero_coords"]

STANDARDIZE_MODES = ("none", "per_layer", "per_coordinate")
_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True)
class CoordSpec:
    """The coordinates a field serves.

    Attributes:
      sizes: layer sizes ``(d_in, ..., d_out)`` of the training architecture.
      has_scale: coordinates carry ``log_scale`` (canonical flows in exact mode).
      output_offset: the raw output is an ``x1`` prediction (parameterization ``target``):
        de-standardized with the mean; otherwise (``residual``, ``velocity``) without it.
      condition: the field is conditioned on a scalar per network (see
        :mod:`weightflow_jax.models.conditioning`); ``None``: unconditioned.
    """

    sizes: tuple[int, ...]
    has_scale: bool
    output_offset: bool = True
    condition: Conditioner | None = None

    def __post_init__(self):
        object.__setattr__(self, "sizes", mlp.parse_arch(self.sizes))


def zero_coords(sizes, has_scale: bool, n: int = 1) -> Canonical:
    """A batch of ``n`` all-zero coordinates of architecture ``sizes`` (for init tracing)."""
    layers = [(jnp.zeros((n,) + w), jnp.zeros((n,) + b)) for w, b in mlp.param_shapes(sizes)]
    return Canonical(layers, jnp.zeros((n,)) if has_scale else None)


def fourier_features(x: jax.Array, num: int, scale: float, seed: int = 0) -> jax.Array:
    """``[x, sin(2 pi B x), cos(2 pi B x)]`` of scalars ``x``, ``B ~ N(0, scale^2)`` fixed.

    Args:
      x: any shape ``S``; one scalar feature per entry.
      num: number of random frequencies (``0``: returns ``x[..., None]``).
      scale: standard deviation of the frequencies (``x`` is standardized, so ~1).
      seed: the frequencies are a deterministic function of ``seed`` (no state to save).

    Returns:
      ``S + (1 + 2 num,)``.
    """
    x = x[..., None]
    if num <= 0:
        return x
    freqs = scale * jax.random.normal(jax.random.key(seed), (num,), jnp.float32)
    arg = 2.0 * jnp.pi * x * freqs.astype(x.dtype)
    return jnp.concatenate([x, jnp.sin(arg), jnp.cos(arg)], axis=-1)


GRAPH_STANDARDIZE = ("none", "per_layer")


def graph_stats_mode(cfg) -> str:
    """``cfg.standardize`` of a graph field (``none`` or ``per_layer``), checked."""
    mode = str(cfg.standardize)
    if mode not in GRAPH_STANDARDIZE:
        raise ValueError(f"standardize={mode!r}; choose one of {GRAPH_STANDARDIZE}")
    return mode


def _moments(a: np.ndarray, axis) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, np.float64)
    mean = a.mean(axis=axis)
    std = a.std(axis=axis)
    return mean.astype(np.float32), std.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Standardizer:
    """Affine maps between coordinates and standardized model features (see module doc).

    Attributes:
      mode: ``"none"``, ``"per_layer"`` or ``"per_coordinate"``.
      arrays: name -> float32 numpy array (``w_mean``, ``w_std``, ``b_mean``, ``b_std``,
        ``fan_in`` per layer, ``s_mean``/``s_std``; or ``mean``/``std`` flat vectors).
      sizes: the architecture the statistics were computed on.
    """

    mode: str
    arrays: dict
    sizes: tuple[int, ...]

    # ---- construction and storage ----
    @classmethod
    def identity(cls, sizes) -> "Standardizer":
        return cls("none", {}, mlp.parse_arch(sizes))

    @classmethod
    def neutral(cls, mode: str, sizes, has_scale: bool) -> "Standardizer":
        """Statistics of mode ``mode`` that change nothing (mean 0, std 1): for benchmarks
        and tests that have no training set."""
        sizes = mlp.parse_arch(sizes)
        if mode == "none":
            return cls.identity(sizes)
        if mode == "per_coordinate":
            p = num_coords(sizes, has_scale)
            return cls(mode, {"mean": np.zeros(p, np.float32), "std": np.ones(p, np.float32)},
                       sizes)
        k = len(sizes) - 1
        arrays = {"w_mean": np.zeros(k, np.float32), "w_std": np.ones(k, np.float32),
                  "b_mean": np.zeros(k, np.float32), "b_std": np.ones(k, np.float32),
                  "fan_in": np.asarray(sizes[:-1], np.float32)}
        if has_scale:
            arrays["s_mean"] = np.asarray(0.0, np.float32)
            arrays["s_std"] = np.asarray(1.0, np.float32)
        return cls(mode, arrays, sizes)

    @classmethod
    def fit(cls, mode: str, coords: Canonical) -> "Standardizer":
        """Statistics of training ``coords`` (host batch with a leading snapshot axis)."""
        if mode not in STANDARDIZE_MODES:
            raise ValueError(f"unknown standardization {mode!r}; choose one of "
                             f"{STANDARDIZE_MODES}")
        sizes = mlp.layer_sizes([(np.asarray(w), np.asarray(b)) for w, b in coords.layers],
                                batched=True)
        if mode == "none":
            return cls.identity(sizes)
        if mode == "per_coordinate":
            flat = np.concatenate(_flat_host(coords), axis=1)
            mean, std = _moments(flat, 0)
            floor = max(float(np.median(std)) * 1e-2, _MIN_STD)
            return cls(mode, {"mean": mean, "std": np.maximum(std, floor)}, sizes)
        arrays: dict[str, list] = {k: [] for k in ("w_mean", "w_std", "b_mean", "b_std", "fan_in")}
        for w, b in coords.layers:
            wm, ws = _moments(w, None)
            bm, bs = _moments(b, None)
            arrays["w_mean"].append(wm)
            arrays["w_std"].append(max(float(ws), _MIN_STD))
            arrays["b_mean"].append(bm)
            arrays["b_std"].append(max(float(bs), _MIN_STD))
            arrays["fan_in"].append(np.shape(w)[-1])
        out = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
        if coords.log_scale is not None:
            sm, ss = _moments(coords.log_scale, None)
            out["s_mean"] = np.asarray(sm, np.float32)
            out["s_std"] = np.asarray(max(float(ss), _MIN_STD), np.float32)
        return cls(mode, out, sizes)

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        d = {f"a_{k}": np.asarray(v) for k, v in self.arrays.items()}
        d["mode"] = np.asarray(self.mode)
        d["sizes"] = np.asarray(self.sizes, np.int64)
        return d

    @classmethod
    def from_npz_dict(cls, d) -> "Standardizer":
        mode = str(d["mode"])
        if mode not in STANDARDIZE_MODES:
            raise ValueError(f"stored standardization mode {mode!r} is unknown "
                             f"(known: {STANDARDIZE_MODES})")
        arrays = {k[2:]: np.asarray(d[k], np.float32) for k in d if k.startswith("a_")}
        return cls(mode, arrays, tuple(int(s) for s in np.asarray(d["sizes"])))

    def equals(self, other: "Standardizer") -> bool:
        return (self.mode == other.mode and self.sizes == other.sizes
                and self.arrays.keys() == other.arrays.keys()
                and all(np.array_equal(self.arrays[k], other.arrays[k]) for k in self.arrays))

    # ---- the maps ----
    def _check(self, x: Canonical) -> tuple[int, ...]:
        sizes = (int(x.layers[0][0].shape[-1]),) + tuple(int(w.shape[-2]) for w, _ in x.layers)
        if len(sizes) != len(self.sizes) or sizes[0] != self.sizes[0] or (
                sizes[-1] != self.sizes[-1]):
            raise ValueError(
                f"standardization statistics are for {mlp.format_arch(self.sizes)} networks; "
                f"got {mlp.format_arch(sizes)} (only hidden widths may change)")
        if self.mode == "per_coordinate" and sizes != self.sizes:
            raise ValueError(
                f"per-coordinate statistics are for {mlp.format_arch(self.sizes)} only; got "
                f"{mlp.format_arch(sizes)}")
        return sizes

    def _layer_stats(self, sizes):
        a = self.arrays
        out = []
        for i in range(len(sizes) - 1):
            w_std = a["w_std"][i] * np.sqrt(a["fan_in"][i] / sizes[i])
            out.append((a["w_mean"][i], w_std, a["b_mean"][i], a["b_std"][i]))
        return out

    def forward(self, x: Canonical) -> Canonical:
        """Standardized features of a batch ``x`` (same structure)."""
        if self.mode == "none":
            return x
        sizes = self._check(x)
        if self.mode == "per_coordinate":
            return _unflat(( _flat(x) - self.arrays["mean"]) / self.arrays["std"], sizes,
                           x.log_scale is not None)
        layers = [((w - wm) / ws, (b - bm) / bs)
                  for (w, b), (wm, ws, bm, bs) in zip(x.layers, self._layer_stats(sizes))]
        scale = x.log_scale
        if scale is not None:
            scale = (scale - self.arrays["s_mean"]) / self.arrays["s_std"]
        return Canonical(layers, scale)

    def inverse(self, z: Canonical, offset: bool = True) -> Canonical:
        """Coordinates from standardized outputs: ``mean + std z`` (``std z`` without offset)."""
        if self.mode == "none":
            return z
        sizes = self._check(z)
        if self.mode == "per_coordinate":
            mean = self.arrays["mean"] if offset else 0.0
            return _unflat(_flat(z) * self.arrays["std"] + mean, sizes, z.log_scale is not None)
        layers = []
        for (w, b), (wm, ws, bm, bs) in zip(z.layers, self._layer_stats(sizes)):
            layers.append((w * ws + (wm if offset else 0.0), b * bs + (bm if offset else 0.0)))
        scale = z.log_scale
        if scale is not None:
            scale = scale * self.arrays["s_std"] + (self.arrays["s_mean"] if offset else 0.0)
        return Canonical(layers, scale)


def _flat_host(coords: Canonical) -> list[np.ndarray]:
    n = np.shape(coords.layers[0][0])[0]
    parts = []
    for w, b in coords.layers:
        parts += [np.asarray(w).reshape(n, -1), np.asarray(b).reshape(n, -1)]
    if coords.log_scale is not None:
        parts.append(np.asarray(coords.log_scale).reshape(n, 1))
    return parts


def _flat(x: Canonical) -> jax.Array:
    """``(n, P)``: ``W0, b0, W1, ...`` row-major, then ``log_scale``."""
    n = x.layers[0][0].shape[0]
    parts = []
    for w, b in x.layers:
        parts += [w.reshape(n, -1), b.reshape(n, -1)]
    if x.log_scale is not None:
        parts.append(x.log_scale.reshape(n, 1))
    return jnp.concatenate(parts, axis=1)


def _unflat(v: jax.Array, sizes, has_scale: bool) -> Canonical:
    n = v.shape[0]
    layers, i = [], 0
    for (wo, wi), (bo,) in mlp.param_shapes(sizes):
        w = v[:, i:i + wo * wi].reshape(n, wo, wi)
        i += wo * wi
        b = v[:, i:i + bo]
        i += bo
        layers.append((w, b))
    return Canonical(layers, v[:, i] if has_scale else None)


def num_coords(sizes, has_scale: bool) -> int:
    """Number of scalar coordinates of one network."""
    return mlp.num_params(sizes) + int(has_scale)


class Field:
    """Base class of the vector fields (see the module docstring for the contract).

    Subclasses set ``name`` and ``equivariant`` and implement :meth:`init` and :meth:`apply`;
    they are built by their module's ``build(cfg, spec, stats)``.
    """

    name: str = ""
    equivariant: bool = False
    # Depth limit of an equivariant field's hidden-layer embeddings (None: no such limit).
    max_hidden_layers: int | None = None

    def __init__(self, spec: CoordSpec, stats: Standardizer):
        self.spec = spec
        self.stats = stats

    def check_sizes(self, sizes) -> None:
        """Raises ``ValueError`` when the field cannot run on networks of ``sizes``."""
        sizes = mlp.parse_arch(sizes)
        base = self.spec.sizes
        if sizes[0] != base[0] or sizes[-1] != base[-1]:
            raise ValueError(
                f"field {self.name!r} was built for {mlp.format_arch(base)} networks (input "
                f"{base[0]}, output {base[-1]}); {mlp.format_arch(sizes)} changes those widths")
        if not self.equivariant and sizes != base:
            raise ValueError(
                f"field {self.name!r} is not permutation-equivariant: it only runs on the "
                f"architecture it was trained on, {mlp.format_arch(base)}, not "
                f"{mlp.format_arch(sizes)}; train an equivariant field (model.name="
                "neuron_transformer, compact_rt or rt) to sample other hidden widths")
        depth = len(sizes) - 2
        if self.max_hidden_layers is not None and depth > self.max_hidden_layers:
            raise ValueError(
                f"{mlp.format_arch(sizes)} has {depth} hidden layers but the field {self.name!r}"
                f" covers at most {self.max_hidden_layers} (its hidden-layer embeddings)")

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def apply(self, variables: Any, x: Canonical, t: jax.Array,
              cond: jax.Array | None = None) -> Canonical:
        raise NotImplementedError

    @property
    def conditioned(self) -> bool:
        """Whether the field takes a condition (``spec.condition`` is set)."""
        return self.spec.condition is not None

    def _times(self, x: Canonical, t: jax.Array) -> jax.Array:
        n = x.layers[0][0].shape[0]
        return jnp.broadcast_to(jnp.asarray(t, jnp.float32), (n,))

    def _condition(self, n: int, cond: jax.Array | None) -> jax.Array | None:
        """The module's condition features ``(n, F)`` (``None`` for an unconditioned field).

        Raises:
          ValueError: a condition given to an unconditioned field.
        """
        if self.spec.condition is None:
            if cond is not None:
                raise ValueError(f"field {self.name!r} was trained without a condition "
                                 "(flow.condition='none'); drop the condition or train a "
                                 "conditioned flow (--config.flow.condition=train_loss)")
            return None
        if cond is None:
            values = jnp.full((n,), jnp.nan, jnp.float32)
        else:
            values = jnp.broadcast_to(jnp.asarray(cond, jnp.float32), (n,))
        return self.spec.condition.features(values)

    def _init_condition(self) -> jax.Array | None:
        """Condition features of one null condition for tracing ``init`` (or ``None``)."""
        return self._condition(1, None) if self.conditioned else None


class ModuleField(Field):
    """A field that is one flax module on standardized coordinates (the graph fields).

    ``module.apply(variables, z, t, c)`` maps a standardized batch ``z`` (a ``Canonical``),
    times and condition features ``c`` (``None`` when unconditioned) to a standardized prediction of the same structure; with ``input_skip`` the
    prediction is ``z + out``. Outputs are de-standardized (see :class:`Standardizer`).

    ``input_skip`` is off in every field's defaults. With it an x1-prediction is ``x_t`` plus
    the head's output, and ``x_t = (1 - t) x0 + t x1`` is mostly prior noise at small ``t``;
    a head narrower than the coordinates (the ``mlp`` field's 512 features for MNIST's 7,960
    coordinates, ``neuron_transformer``'s 128-wide tokens for 785-wide rows) cannot cancel
    that noise outside its span, so ``x1_hat`` keeps it, the sampler's velocity
    ``(x1_hat - x_t) / (1 - t)`` has no component along it, and the noise is never removed:
    normalized-flow MNIST samples kept first-layer rows of norm 2.9 with cosine 0.96 to
    their own prior draws (0.19 test accuracy). On the geometric flow the renormalization of
    ``x1_hat`` hides part of it (a head can outscale the noise).
    """

    def __init__(self, spec: CoordSpec, stats: Standardizer, module: Any, input_skip: bool):
        super().__init__(spec, stats)
        self.module = module
        self.input_skip = input_skip

    def init(self, key: jax.Array) -> Any:
        x = zero_coords(self.spec.sizes, self.spec.has_scale)
        c = self._init_condition()
        return jax.jit(lambda k: self.module.init(k, x, jnp.zeros((1,), jnp.float32), c))(key)

    def apply(self, variables: Any, x: Canonical, t: jax.Array,
              cond: jax.Array | None = None) -> Canonical:
        t = self._times(x, t)
        c = self._condition(t.shape[0], cond)
        z = self.stats.forward(x)
        out = self.module.apply(variables, z, t, c)
        if self.input_skip:
            out = jax.tree.map(jnp.add, z, out)
        return self.stats.inverse(out, offset=self.spec.output_offset)
