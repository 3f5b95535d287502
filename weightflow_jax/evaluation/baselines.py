"""Baselines reported next to flow samples in the results tables.

* ``checkpoints``: a random subset of the training checkpoints themselves (what a
  generator that memorizes perfectly would return);
* ``checkpoints+noise``: random checkpoints plus isotropic Gaussian noise in (aligned)
  plain weight space, the noise level calibrated so that the mean L2 distance of the noisy
  networks to their nearest checkpoint equals that of the flow's samples
  (:func:`noisy_checkpoints`): "as novel as the samples, but trivially made";
* ``trained_ensemble``: the final checkpoint of every training run (an ensemble of
  independently trained networks, for the posterior-predictive comparison).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from weightflow_jax import mlp, symmetry
from weightflow_jax.evaluation.novelty import nearest_neighbors

__all__ = ["random_checkpoints", "final_checkpoints", "random_checkpoint_per_run",
           "noisy_checkpoints", "baseline_sets"]


def _np(params: mlp.Params) -> mlp.Params:
    return [(np.asarray(w, np.float32), np.asarray(b, np.float32))
            for w, b in mlp.as_params(params)]


def random_checkpoints(key: jax.Array, checkpoints: mlp.Params, num: int
                       ) -> tuple[mlp.Params, np.ndarray]:
    """``num`` distinct random checkpoints (all of them, shuffled, if ``num >= N``).

    Returns:
      ``(params (num', ...), index (num',))`` with ``num' = min(num, N)``.
    """
    checkpoints = _np(checkpoints)
    big_n = checkpoints[0][0].shape[0]
    idx = np.asarray(jax.random.permutation(key, big_n))[:min(int(num), big_n)]
    return [(w[idx], b[idx]) for w, b in checkpoints], idx


def final_checkpoints(run_id: Any, step: Any) -> np.ndarray:
    """``(R,)`` index of the last checkpoint (largest ``step``) of every run, by run id."""
    run_id, step = np.asarray(run_id), np.asarray(step)
    runs = np.unique(run_id)
    out = np.empty(runs.size, np.int64)
    for i, r in enumerate(runs):
        idx = np.flatnonzero(run_id == r)
        out[i] = idx[np.argmax(step[idx])]
    return out


def random_checkpoint_per_run(run_id: Any, seed: int) -> np.ndarray:
    """``(R,)`` index of one uniformly random checkpoint of every run, by run id (``numpy``
    generator seeded with ``(seed, 13)``)."""
    run_id = np.asarray(run_id)
    if run_id.ndim != 1 or run_id.size == 0:
        raise ValueError(f"run_id must be a non-empty 1-d array, got shape {run_id.shape}")
    rng = np.random.default_rng((int(seed), 13))
    return np.array([rng.choice(np.flatnonzero(run_id == r)) for r in np.unique(run_id)])


def noisy_checkpoints(key: jax.Array, checkpoints: mlp.Params, num: int,
                      target_distance: float, *, max_iter: int = 20, rtol: float = 0.005,
                      ref_chunk: int = 2048) -> tuple[mlp.Params, dict[str, Any]]:
    """Random checkpoints plus Gaussian noise at a given mean nearest-checkpoint distance.

    The noise is ``sigma * z`` with ``z ~ N(0, I)`` over all flattened weights and biases
    (fixed draws); ``sigma`` starts at ``target / sqrt(P)`` and is rescaled by
    ``target / achieved`` until the mean L2 distance of the noisy networks to their nearest
    checkpoint (any checkpoint, not only their source) is within ``rtol`` of the target.

    Args:
      key: PRNG key (sources and noise).
      checkpoints: ``N`` aligned checkpoints.
      num: number of noisy networks (sources drawn without replacement when ``num <= N``).
      target_distance: the mean nearest-checkpoint L2 distance to match (> 0), e.g.
        ``nearest_checkpoint(samples, ...)["l2"].mean()``.
      max_iter, rtol: calibration settings.

    Returns:
      ``(params (num, ...), info)`` with ``info``: ``sigma``, ``mean_distance`` (achieved),
      ``distances (num,)``, ``source_index (num,)``, ``iterations``.
    """
    if not target_distance > 0:
        raise ValueError(f"target_distance must be > 0, got {target_distance}")
    checkpoints = _np(checkpoints)
    sizes = mlp.validate(checkpoints, batched=True, check_finite=False)
    big_n = checkpoints[0][0].shape[0]
    k_src, k_noise = jax.random.split(key)
    num = int(num)
    if num <= big_n:
        src = np.asarray(jax.random.permutation(k_src, big_n))[:num]
    else:
        src = np.asarray(jax.random.randint(k_src, (num,), 0, big_n))
    flat = np.asarray(mlp.flatten([(w[src], b[src]) for w, b in checkpoints]), np.float32)
    z = np.asarray(jax.random.normal(k_noise, flat.shape), np.float32)
    spec = symmetry.euclidean_spec(len(sizes) - 1)
    sigma = float(target_distance) / np.sqrt(flat.shape[1])
    achieved, dists, it = np.nan, None, 0
    for it in range(1, int(max_iter) + 1):
        noisy = [(np.asarray(w), np.asarray(b)) for w, b in mlp.unflatten(flat + sigma * z,
                                                                          sizes)]
        dists, _ = nearest_neighbors(noisy, checkpoints, spec, ref_chunk=ref_chunk)
        achieved = float(np.mean(dists))
        if abs(achieved - target_distance) <= rtol * target_distance:
            break
        sigma *= float(target_distance) / max(achieved, 1e-30)
    info = {"sigma": float(sigma), "mean_distance": achieved, "distances": dists,
            "source_index": src, "iterations": it}
    return noisy, info


def baseline_sets(key: jax.Array, checkpoints: mlp.Params, num: int, *,
                  target_distance: float | None = None, run_id: Any | None = None,
                  step: Any | None = None) -> dict[str, mlp.Params]:
    """The baseline networks of the tables (see the module docstring).

    Args:
      key: PRNG key.
      checkpoints: ``N`` aligned checkpoints.
      num: networks per baseline.
      target_distance: mean nearest-checkpoint L2 distance of the samples; enables
        ``"checkpoints+noise"``.
      run_id, step: ``(N,)`` arrays; enable ``"trained_ensemble"`` (final checkpoint of
        each run, up to ``num`` of them).

    Returns:
      dict name -> batch of networks.
    """
    k1, k2 = jax.random.split(key)
    out = {"checkpoints": random_checkpoints(k1, checkpoints, num)[0]}
    if target_distance is not None:
        out["checkpoints+noise"] = noisy_checkpoints(k2, checkpoints, num, target_distance)[0]
    if run_id is not None and step is not None:
        idx = final_checkpoints(run_id, step)[:int(num)]
        out["trained_ensemble"] = [(np.asarray(w)[idx], np.asarray(b)[idx])
                                   for w, b in _np(checkpoints)]
    return out
