"""Per-network accuracy and loss, posterior-predictive ensembles, and prediction diversity.

All functions take a batch of networks (list of ``(W (N, out, in), b (N, out))``) and a
task ``x (m, d_in)``, ``y (m,)``; networks are evaluated vmapped, ``chunk_size`` at a time
(the last chunk padded so one shape compiles). Results are host numpy arrays.

Definitions:

* loss: mean softmax cross-entropy (nats) over the test points, per network.
* std: population standard deviation (``ddof=0``) over networks.
* ensemble of size ``k``: the average of the softmax probabilities of the networks
  ``0 .. k-1`` (their order as given: sampled networks are i.i.d., so this is one random
  ensemble); optionally also averaged over ``num_subsets`` random orders.
* diversity: the Jensen-Shannon divergence of two networks' predictive distributions,
  ``JSD(p, q) = (KL(p || m) + KL(q || m)) / 2``, ``m = (p + q) / 2``, in nats (natural
  log, so ``0 <= JSD <= log 2``), averaged over the test points, then over all pairs of
  networks ``i < j``. Computed as ``sum_c s_c ((1 + d_c) log(1 + d_c) + (1 - d_c)
  log(1 - d_c)) / 2`` with ``s = (p + q) / 2``, ``d = (p - q) / (p + q)``, accurate in
  float32 when ``p ~ q`` (the thesis's target networks are at ~2e-5).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.sampling.guidance import check_task as _check_task_sizes

__all__ = [
    "check_task",
    "num_networks",
    "logits",
    "probabilities",
    "accuracy_and_loss",
    "mean_std",
    "ci95_half_width",
    "ensemble_curve",
    "ensemble_curve_from_probs",
    "jsd",
    "mean_pairwise_jsd",
    "diversity",
]


def check_task(params: mlp.Params, x: Any, y: Any | None = None, what: str = "task"
               ) -> tuple[int, ...]:
    """Checks that ``(x, y)`` fits a batch of networks; returns their layer sizes.

    The checks are :func:`weightflow_jax.sampling.check_task`'s, on the batch's sizes.

    Raises:
      ValueError naming the sizes when the input width differs from the networks', ``y``
      is not ``(m,)``, or a label is outside ``[0, d_out)``.
    """
    sizes = mlp.validate(params, batched=True, check_finite=False)
    _check_task_sizes(sizes, x, y, what)
    return sizes


def num_networks(params: mlp.Params) -> int:
    """``N``, the leading axis of a batch of networks."""
    return int(np.shape(mlp.as_params(params)[0][0])[0])


_logits_batch = jax.jit(jax.vmap(mlp.forward, in_axes=(0, None)))


@jax.jit
def _acc_loss_batch(params, x, y):
    z = jax.vmap(mlp.forward, in_axes=(0, None))(params, x)
    logp = jax.nn.log_softmax(z, axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.broadcast_to(y[None, :, None], z.shape[:2] + (1,)),
                               axis=-1)[..., 0]
    acc = jnp.mean((jnp.argmax(z, axis=-1) == y[None, :]).astype(jnp.float32), axis=-1)
    return acc, jnp.mean(nll, axis=-1)


def _chunks(params: mlp.Params, chunk_size: int):
    """Yields ``(chunk params (c, ...), m)``: padded chunks and their real length."""
    params = mlp.as_params(params)
    n = num_networks(params)
    c = max(1, min(int(chunk_size), n))
    host = [(np.asarray(w), np.asarray(b)) for w, b in params]
    for start in range(0, n, c):
        idx = np.minimum(np.arange(start, start + c), n - 1)
        yield [(jnp.asarray(w[idx]), jnp.asarray(b[idx])) for w, b in host], min(c, n - start)


def logits(params: mlp.Params, x: Any, *, chunk_size: int = 64) -> np.ndarray:
    """``(N, m, d_out)`` float32 logits of ``N`` networks on ``x (m, d_in)``."""
    check_task(params, x)
    xj = jnp.asarray(x, jnp.float32)
    out = [np.asarray(_logits_batch(p, xj))[:m] for p, m in _chunks(params, chunk_size)]
    return np.concatenate(out)


def probabilities(params: mlp.Params, x: Any, *, chunk_size: int = 64) -> np.ndarray:
    """``(N, m, d_out)`` float32 softmax probabilities of ``N`` networks on ``x``."""
    z = logits(params, x, chunk_size=chunk_size)
    return np.asarray(jax.nn.softmax(jnp.asarray(z), axis=-1))


def accuracy_and_loss(params: mlp.Params, x: Any, y: Any, *, chunk_size: int = 64
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Test accuracy and mean cross-entropy of every network.

    Args:
      params: ``N`` networks (leading axis).
      x: ``(m, d_in)`` inputs; y: ``(m,)`` integer labels.
      chunk_size: networks per vmapped call.

    Returns:
      ``(acc (N,), loss (N,))`` float32 numpy arrays. A network with non-finite weights
      gets a non-finite loss (reported, not hidden).
    """
    check_task(params, x, y)
    xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    accs, losses = [], []
    for p, m in _chunks(params, chunk_size):
        a, l = _acc_loss_batch(p, xj, yj)
        accs.append(np.asarray(a)[:m])
        losses.append(np.asarray(l)[:m])
    return np.concatenate(accs), np.concatenate(losses)


def mean_std(values: Any) -> tuple[float, float]:
    """``(mean, std)`` (population std, ``ddof=0``) of a 1-D array, as Python floats."""
    v = np.asarray(values, np.float64).reshape(-1)
    if v.size == 0:
        raise ValueError("mean_std of an empty array")
    return float(v.mean()), float(v.std())


def ci95_half_width(values: Any, axis: int = 0) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean along ``axis``
    (``t_{0.975, n-1} * std(ddof=1) / sqrt(n)``); NaN when fewer than 2 values."""
    from scipy import stats  # noqa: PLC0415  (scipy is a dependency; import kept local)
    v = np.asarray(values, np.float64)
    n = v.shape[axis]
    if n < 2:
        return np.full(np.delete(v.shape, axis), np.nan)
    return stats.t.ppf(0.975, n - 1) * v.std(axis=axis, ddof=1) / np.sqrt(n)


def _ensemble_stats(mean_probs: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    acc = float(np.mean(np.argmax(mean_probs, axis=-1) == y))
    p_true = np.take_along_axis(mean_probs, y[:, None], axis=-1)[:, 0]
    nll = float(-np.mean(np.log(np.maximum(p_true, 1e-30))))
    return acc, nll


def ensemble_curve_from_probs(probs: Any, y: Any, *, max_size: int = 64,
                              num_subsets: int = 0, seed: int = 0) -> dict[str, np.ndarray]:
    """Posterior-predictive accuracy and NLL against ensemble size.

    Args:
      probs: ``(N, m, C)`` predictive probabilities of ``N`` networks.
      y: ``(m,)`` labels.
      max_size: largest ensemble (capped at ``N``); sizes are ``1 .. min(max_size, N)``.
      num_subsets: if > 0, also average over this many random orders of the networks (each
        prefix of a uniformly random order is a uniformly random subset).
      seed: seed of the random orders.

    Returns:
      dict with ``sizes (K,)``, ``accuracy (K,)`` and ``nll (K,)`` of the first-``k``
      ensembles, and when ``num_subsets``: ``subset_accuracy_mean/std (K,)``,
      ``subset_nll_mean (K,)``.
    """
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y)
    if probs.ndim != 3 or probs.shape[1] != y.shape[0]:
        raise ValueError(f"probs must be (N, m, C) with m = len(y) = {y.shape[0]}, got "
                         f"{probs.shape}")
    n = probs.shape[0]
    k_max = max(1, min(int(max_size), n))
    sizes = np.arange(1, k_max + 1)

    def curve(order):
        run = np.cumsum(probs[order[:k_max]], axis=0)
        stats = [_ensemble_stats(run[k - 1] / k, y) for k in sizes]
        return np.array([s[0] for s in stats]), np.array([s[1] for s in stats])

    acc, nll = curve(np.arange(n))
    out = {"sizes": sizes, "accuracy": acc, "nll": nll}
    if num_subsets > 0:
        rng = np.random.default_rng(seed)
        accs, nlls = zip(*[curve(rng.permutation(n)) for _ in range(int(num_subsets))])
        out["subset_accuracy_mean"] = np.mean(accs, axis=0)
        out["subset_accuracy_std"] = np.std(accs, axis=0)
        out["subset_nll_mean"] = np.mean(nlls, axis=0)
    return out


def ensemble_curve(params: mlp.Params, x: Any, y: Any, *, max_size: int = 64,
                   num_subsets: int = 0, seed: int = 0, chunk_size: int = 64
                   ) -> dict[str, np.ndarray]:
    """:func:`ensemble_curve_from_probs` of networks ``params`` on ``(x, y)``."""
    check_task(params, x, y)
    n = min(num_networks(params), int(max_size)) if num_subsets == 0 else None
    if n is not None:  # only the first max_size networks matter
        params = [(np.asarray(w)[:n], np.asarray(b)[:n]) for w, b in mlp.as_params(params)]
    probs = probabilities(params, x, chunk_size=chunk_size)
    return ensemble_curve_from_probs(probs, y, max_size=max_size, num_subsets=num_subsets,
                                     seed=seed)


def _xlog1p(a: jax.Array, d: jax.Array) -> jax.Array:
    """``a * log1p(d)`` with the value 0 where ``a == 0`` (and no NaN gradient)."""
    safe = jnp.where(a == 0, 0.0, d)
    return jnp.where(a == 0, 0.0, a * jnp.log1p(safe))


def jsd(p: Any, q: Any, axis: int = -1) -> jax.Array:
    """Jensen-Shannon divergence (nats) between distributions along ``axis``.

    Args:
      p, q: probability arrays of equal shape (each sums to 1 along ``axis``).

    Returns:
      The divergences, ``axis`` reduced; ``0 <= JSD <= log 2``, ``JSD(p, p) = 0``,
      symmetric.
    """
    p, q = jnp.asarray(p), jnp.asarray(q)
    s = 0.5 * (p + q)
    tot = p + q
    d = jnp.where(tot > 0, (p - q) / jnp.where(tot > 0, tot, 1.0), 0.0)
    d = jnp.clip(d, -1.0, 1.0)
    terms = s * (_xlog1p(1.0 + d, d) + _xlog1p(1.0 - d, -d))
    return jnp.maximum(0.5 * jnp.sum(terms, axis=axis), 0.0)


@jax.jit
def _jsd_row(p_i: jax.Array, probs: jax.Array) -> jax.Array:
    """``(N,)``: mean over points of ``JSD(p_i, probs[j])``."""
    return jnp.mean(jax.vmap(lambda q: jsd(p_i, q))(probs), axis=-1)


def mean_pairwise_jsd(probs: Any, *, max_networks: int | None = None
                      ) -> dict[str, float]:
    """Diversity of ``N`` networks' predictions: mean JSD over all pairs ``i < j``.

    Args:
      probs: ``(N, m, C)`` predictive probabilities.
      max_networks: use only the first this many networks (pairs grow as ``N^2``).

    Returns:
      dict ``mean`` (nats), ``std`` over pairs, ``num_pairs``, ``num_networks``.
    """
    probs = jnp.asarray(probs, jnp.float32)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (N, m, C), got shape {probs.shape}")
    if max_networks is not None:
        probs = probs[:int(max_networks)]
    n = probs.shape[0]
    if n < 2:
        raise ValueError(f"diversity needs at least two networks, got {n}")
    vals = []
    for i in range(n - 1):
        row = np.asarray(_jsd_row(probs[i], probs))
        vals.append(row[i + 1:])
    v = np.concatenate(vals).astype(np.float64)
    return {"mean": float(v.mean()), "std": float(v.std()), "num_pairs": int(v.size),
            "num_networks": int(n)}


def diversity(params: mlp.Params, x: Any, *, max_networks: int | None = None,
              chunk_size: int = 64) -> dict[str, float]:
    """:func:`mean_pairwise_jsd` of networks ``params`` on inputs ``x (m, d_in)``."""
    check_task(params, x)
    if max_networks is not None:
        params = [(np.asarray(w)[:max_networks], np.asarray(b)[:max_networks])
                  for w, b in mlp.as_params(params)]
    return mean_pairwise_jsd(probabilities(params, x, chunk_size=chunk_size))
