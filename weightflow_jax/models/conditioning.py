"""Conditioning a field on a scalar property of the networks (a snapshot's training loss).

A conditioned flow learns ``p(weights | c)`` for a scalar ``c`` recorded with every zoo
snapshot: its **training-split** loss or accuracy (``zoo.metrics["train_loss"]`` /
``["train_acc"]``; test metrics are never used). As in G.pt (Peebles et al. 2022) and
classifier-free guidance (Ho & Salimans 2022):

* training drops the condition of a fraction ``flow.condition_dropout`` of the batch (the
  *null* condition), so one field learns both ``v(x, t | c)`` and ``v(x, t)``;
* sampling prompts a value ``c*`` and combines both predictions with a weight ``w``::

      pred = pred(x, t | null) + w * (pred(x, t | c*) - pred(x, t | null))

  ``w = 1`` is the plain conditional field (one evaluation), ``w = 0`` the unconditional one,
  ``w > 1`` pushes further towards the prompt.

Values are carried as raw metric values with ``NaN`` for the null condition (one array, static
shape under ``jit``). :class:`Conditioner` maps them to the field's input: a monotone transform
(``log`` of a loss, identity of an accuracy), standardized with the training snapshots'
statistics, then :func:`condition_features` (the value, sinusoidal features of it and a null
flag), which every field concatenates to its time features
(:func:`time_condition_features`). The conditioner also keeps the reference prompts of the
zoo it was fitted on: ``final`` (mean over the runs' final snapshots), ``best`` (the best
snapshot), and percentiles, so ``--condition=final|best|<value>`` resolves after training.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax.models.layers import sinusoidal_embedding

__all__ = ["CONDITIONS", "Conditioner", "condition_features", "time_condition_features",
           "NUM_CONDITION_FEATURES", "check_condition", "null_condition",
           "balanced_sampling_probs", "BALANCE_BINS"]

# Metric -> (transform, better direction). Only training-split metrics.
CONDITIONS = ("none", "train_loss", "train_acc")
_TRANSFORM = {"train_loss": "log", "train_acc": "identity"}
_BETTER = {"train_loss": "min", "train_acc": "max"}
_LOSS_FLOOR = 1e-6
# Sinusoidal features of the (squashed) standardized value.
NUM_CONDITION_FEATURES = 16
# Bins of :func:`balanced_sampling_probs` over the zoo's p05-p95 of the transformed value.
BALANCE_BINS = 16


def check_condition(kind: str) -> str:
    """``kind`` if it is one of :data:`CONDITIONS`; else a ``ValueError`` naming them."""
    kind = str(kind)
    if kind not in CONDITIONS:
        raise ValueError(f"unknown flow.condition {kind!r}; choose one of {CONDITIONS} "
                         "(values come from the zoo's training-split metrics)")
    return kind


def null_condition(n: int) -> jax.Array:
    """``(n,)`` null conditions (``NaN``)."""
    return jnp.full((n,), jnp.nan, jnp.float32)


def condition_features(u: jax.Array) -> jax.Array:
    """Features of standardized condition values ``u`` ``(G,)``; ``NaN`` = null.

    Returns ``(G, 2 + NUM_CONDITION_FEATURES)``: ``[u, sinusoidal(sigmoid(u)), is_null]`` with
    the first two parts zero for null entries. Finite for any input (``u`` is clipped to
    ``[-8, 8]``; ``inf`` counts as null).
    """
    u = jnp.asarray(u, jnp.float32)
    present = jnp.isfinite(u)
    v = jnp.clip(jnp.where(present, u, 0.0), -8.0, 8.0)
    emb = sinusoidal_embedding(jax.nn.sigmoid(v), NUM_CONDITION_FEATURES)
    keep = present[:, None].astype(jnp.float32)
    return jnp.concatenate([v[:, None] * keep, emb * keep, 1.0 - keep], axis=-1)


def time_condition_features(t: jax.Array, dim: int, c: jax.Array | None) -> jax.Array:
    """The fields' time features, with condition features ``c`` ``(G, F)`` appended."""
    emb = sinusoidal_embedding(t, dim)
    if c is None:
        return emb
    return jnp.concatenate([emb, jnp.asarray(c, emb.dtype)], axis=-1)


@dataclasses.dataclass(frozen=True)
class Conditioner:
    """How raw metric values become a field's condition input, and the zoo's prompts.

    Attributes:
      kind: ``train_loss`` or ``train_acc``.
      mean, std: statistics of the transformed training values.
      prompts: named reference values in raw units: ``final`` (mean over the runs' final
        snapshots), ``best`` (the best snapshot), ``p05``, ``p50``, ``p95``, ``min``,
        ``max``.
    """

    kind: str
    mean: float
    std: float
    prompts: dict

    @property
    def transform(self) -> str:
        return _TRANSFORM[self.kind]

    @classmethod
    def fit(cls, kind: str, values: np.ndarray, final_index: np.ndarray | None = None
            ) -> "Conditioner":
        """Statistics and prompts of one value per training snapshot.

        Args:
          kind: ``train_loss`` or ``train_acc``.
          values: ``(N,)`` the snapshots' recorded metric (same order as the coordinates).
          final_index: indices of the runs' final snapshots (for the ``final`` prompt);
            ``None`` uses all.
        Raises:
          ValueError: ``kind`` is ``none``/unknown, or a value is not finite.
        """
        kind = check_condition(kind)
        if kind == "none":
            raise ValueError("Conditioner.fit needs a metric; flow.condition='none' trains an "
                             "unconditioned flow")
        v = np.asarray(values, np.float64).reshape(-1)
        if v.size == 0 or not np.all(np.isfinite(v)):
            raise ValueError(f"zoo metric {kind!r} has {int(np.sum(~np.isfinite(v)))} non-finite"
                             f" of {v.size} values; rebuild the zoo")
        z = _transform_np(kind, v)
        final = v if final_index is None else v[np.asarray(final_index)]
        best = float(v.min() if _BETTER[kind] == "min" else v.max())
        prompts = {"final": float(np.mean(final)), "best": best,
                   "min": float(v.min()), "max": float(v.max())}
        for q in (5, 50, 95):
            prompts[f"p{q:02d}"] = float(np.percentile(v, q))
        return cls(kind, float(z.mean()), float(max(z.std(), 1e-6)), prompts)

    def standardize(self, values: jax.Array) -> jax.Array:
        """Transformed, standardized ``values`` (``NaN`` stays ``NaN``: null)."""
        v = jnp.asarray(values, jnp.float32)
        if self.transform == "log":
            v = jnp.log(jnp.maximum(v, _LOSS_FLOOR))
        return (v - self.mean) / self.std

    def features(self, values: jax.Array) -> jax.Array:
        """``(n, F)`` field input of raw values ``(n,)`` (``NaN`` = null)."""
        return condition_features(self.standardize(values))

    def resolve(self, prompt: Any) -> float:
        """A prompt as a raw value: a name in :attr:`prompts` or a number.

        Raises:
          ValueError: an unknown name, a non-finite number, or a loss that is not positive /
            an accuracy outside ``[0, 1]``.
        """
        if isinstance(prompt, str) and prompt in self.prompts:
            return float(self.prompts[prompt])
        try:
            value = float(prompt)
        except (TypeError, ValueError):
            raise ValueError(f"condition prompt {prompt!r} is neither a number nor one of "
                             f"{sorted(self.prompts)}") from None
        if not math.isfinite(value):
            raise ValueError(f"condition prompt {prompt!r} is not finite")
        if self.kind == "train_loss" and value <= 0:
            raise ValueError(f"a train_loss prompt must be > 0, got {value}")
        if self.kind == "train_acc" and not 0.0 <= value <= 1.0:
            raise ValueError(f"a train_acc prompt must be in [0, 1], got {value}")
        return value

    def sampling_probs(self, values: np.ndarray, balance: float,
                       num_bins: int = BALANCE_BINS) -> np.ndarray:
        """:func:`balanced_sampling_probs` of raw ``values`` (``(N,)``, one per training
        network) over this zoo's p05-p95 of the transformed metric (the prompt range)."""
        z = _transform_np(self.kind, np.asarray(values, np.float64).reshape(-1))
        lo, hi = (float(_transform_np(self.kind, np.float64(self.prompts[q])))
                  for q in ("p05", "p95"))
        if not lo < hi:      # a zoo whose metric barely varies: one bin, uniform draws
            hi, num_bins = lo + 1.0, 1
        return balanced_sampling_probs(z, balance, lo, hi, num_bins)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "mean": self.mean, "std": self.std,
                "prompts": dict(self.prompts)}

    @classmethod
    def from_dict(cls, d: dict) -> "Conditioner":
        kind = check_condition(d["kind"])
        return cls(kind, float(d["mean"]), float(d["std"]),
                   {k: float(v) for k, v in d["prompts"].items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)


def balanced_sampling_probs(z: np.ndarray, balance: float, lo: float, hi: float,
                            num_bins: int = BALANCE_BINS) -> np.ndarray:
    """Probabilities of drawing each training network so that rare condition values are
    drawn more often, without changing what the conditional field learns.

    Reweighting the training set by any function of the condition ``c`` alone leaves every
    conditional ``p(weights | c)`` as it is and only changes the marginal ``p(c)``, so the
    field of a rare prompt gets more training signal. The values ``z`` (transformed, e.g.
    log-loss) are binned into ``num_bins`` equal-width bins over ``[lo, hi]`` (values outside
    fall into the edge bins, so the tails are never a bin of a handful of networks), and a
    network in a bin holding ``n`` of them is drawn with probability ``∝ n ** -balance``:
    ``0`` = uniform over networks (the plain training set), ``1`` = every bin equally often.
    Only the null condition's field (``w = 0``) then learns the reweighted marginal.

    Args:
      z: ``(N,)`` finite transformed condition values of the training networks.
      balance: exponent in ``[0, 1]``.
      lo, hi: the binned range (``lo < hi``).
      num_bins: number of bins (≥ 1).
    Returns:
      ``(N,)`` float64 probabilities summing to 1.
    Raises:
      ValueError: ``balance`` outside ``[0, 1]``, ``lo >= hi``, ``num_bins < 1`` or
        non-finite ``z``.
    """
    z = np.asarray(z, np.float64).reshape(-1)
    balance = float(balance)
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"flow.condition_balance={balance} must be in [0, 1] (0 = draw "
                         "networks uniformly, 1 = every condition bin equally often)")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"balanced sampling needs a range lo < hi, got [{lo}, {hi}]")
    if int(num_bins) < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if z.size == 0 or not np.all(np.isfinite(z)):
        raise ValueError("balanced sampling needs finite condition values")
    width = (hi - lo) / int(num_bins)
    bins = np.clip(np.floor((z - lo) / width), 0, int(num_bins) - 1).astype(np.int64)
    counts = np.bincount(bins, minlength=int(num_bins)).astype(np.float64)
    w = counts[bins] ** (-balance)
    return w / w.sum()


def _transform_np(kind: str, v: np.ndarray) -> np.ndarray:
    if _TRANSFORM[kind] == "log":
        return np.log(np.maximum(v, _LOSS_FLOOR))
    return v
