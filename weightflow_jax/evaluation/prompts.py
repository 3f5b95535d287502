"""Prompt alignment of a conditioned flow, as G.pt (Peebles et al. 2022) measures it.

A flow conditioned on the training loss is prompted with several losses; each prompt's
samples achieve some training loss. Prompt alignment is the coefficient of determination of
achieved against prompted values *around the identity line* (not a fitted line):

    R^2 = 1 - sum_i (achieved_i - prompt_i)^2 / sum_i (prompt_i - mean(prompt))^2

so ``R^2 = 1`` means every prompt is hit exactly, ``0`` is no better than answering every
prompt with their mean, and it is negative when the achieved values are further off than
that. :func:`prompt_grid` spaces prompts evenly in log-loss between two percentiles of the
zoo's recorded losses; :func:`prompt_alignment` computes ``R^2`` over prompt means and over
single networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["prompt_grid", "r_squared", "prompt_alignment"]


def prompt_grid(low: float, high: float, num: int, *, log: bool = True) -> list[float]:
    """``num >= 2`` prompts from ``low`` to ``high`` inclusive, evenly spaced (in log space
    for losses).

    Raises:
      ValueError: ``num < 2``, ``low >= high``, or non-positive bounds with ``log``.
    """
    if num < 2:
        raise ValueError(f"a prompt grid needs at least 2 prompts, got {num}")
    if not low < high:
        raise ValueError(f"prompt range [{low}, {high}] is empty")
    if log:
        if low <= 0:
            raise ValueError(f"log-spaced prompts need positive bounds, got {low}")
        return [float(v) for v in np.exp(np.linspace(np.log(low), np.log(high), num))]
    return [float(v) for v in np.linspace(low, high, num)]


def r_squared(prompted: Sequence[float], achieved: Sequence[float]) -> float:
    """``1 - SS(achieved - prompted) / SS(prompted - mean)`` (around the identity line).

    Raises:
      ValueError: different lengths, fewer than 2 values, all prompts equal, or a
        non-finite value.
    """
    p = np.asarray(prompted, np.float64).reshape(-1)
    a = np.asarray(achieved, np.float64).reshape(-1)
    if p.shape != a.shape or p.size < 2:
        raise ValueError(f"need >= 2 (prompt, achieved) pairs of equal length, got {p.size} "
                         f"and {a.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(a))):
        raise ValueError("prompt alignment of non-finite values")
    ss_tot = float(np.sum((p - p.mean()) ** 2))
    if ss_tot <= 0:
        raise ValueError("all prompts are equal: R^2 is undefined")
    return 1.0 - float(np.sum((a - p) ** 2)) / ss_tot


def prompt_alignment(prompts: Sequence[float], achieved: Sequence[Sequence[float]]) -> dict:
    """R^2 of per-prompt mean achieved values and of every network, plus the slope.

    Args:
      prompts: ``(k,)`` prompted values.
      achieved: ``k`` sequences, the achieved value of each sampled network per prompt.
    Returns:
      ``{"r2_means", "r2_networks", "slope", "intercept", "spearman"}``; ``slope`` and
      ``intercept`` of the least-squares line of mean achieved on prompted (1 and 0 for a
      perfectly aligned flow); ``spearman`` the rank correlation of the means.
    """
    p = np.asarray(prompts, np.float64)
    means = np.asarray([np.mean(a) for a in achieved], np.float64)
    flat_p = np.concatenate([np.full(len(a), v) for v, a in zip(p, achieved)])
    flat_a = np.concatenate([np.asarray(a, np.float64) for a in achieved])
    slope, intercept = np.polyfit(p, means, 1)
    rank = lambda v: np.argsort(np.argsort(v)).astype(np.float64)
    rp, rm = rank(p), rank(means)
    spearman = float(np.corrcoef(rp, rm)[0, 1]) if np.std(rm) > 0 else 0.0
    return {"r2_means": r_squared(p, means), "r2_networks": r_squared(flat_p, flat_a),
            "slope": float(slope), "intercept": float(intercept), "spearman": spearman}
