"""Small matplotlib figures for the results files, written as PNG.

Figures are drawn on a :class:`matplotlib.figure.Figure` with the Agg canvas directly (no
``pyplot``, no global backend switch, no display needed) and saved through a temporary file
and ``os.replace``. Every function returns the path written.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weightflow_jax.evaluation.metrics import ci95_half_width

__all__ = [
    "save_figure",
    "plot_ensemble_curve",
    "ensemble_zoom",
    "plot_accuracy_histograms",
    "plot_finetune_curves",
    "plot_steps_vs_accuracy",
    "plot_accuracy_vs_time",
    "plot_prompt_alignment",
]


def _figure(figsize=(5.0, 3.5), ncols: int = 1):
    """A figure and its first of ``ncols`` side-by-side axes (add the others with
    ``fig.add_subplot(1, ncols, i)``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=120)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot(1, ncols, 1)


def _many_series(ax: Any, n: int) -> None:
    """More than 10 series: 20 distinct colours (the default cycle repeats after 10)."""
    if n > 10:
        from matplotlib import colormaps
        ax.set_prop_cycle(color=[colormaps["tab20"](i) for i in range(20)])


def _legend(ax: Any, n: int) -> None:
    """Legend inside for a few series, to the right of the axes for many."""
    if n > 6:
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)


def save_figure(fig: Any, path: str) -> str:
    """Saves ``fig`` as PNG at ``path`` atomically (tmp file + ``os.replace``)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
    try:
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def ensemble_zoom(curves: Mapping[str, tuple[Sequence, Sequence]], *, working: float = 0.9
                  ) -> tuple[float, float] | None:
    """The accuracy range worth a zoomed panel: that of the curves whose last point is at
    least ``working`` x the best last point (padded by 10% of the range), or ``None`` when
    it is more than half of all curves' range (a zoom would show nothing new)."""
    accs = [np.asarray(a, np.float64) for _, a in curves.values()]
    accs = [a[np.isfinite(a)] for a in accs]
    accs = [a for a in accs if a.size]
    if not accs:
        return None
    best = max(float(a[-1]) for a in accs)
    keep = np.concatenate([a for a in accs if a[-1] >= working * best])
    full = np.concatenate(accs)
    lo, hi = float(keep.min()), float(keep.max())
    if hi - lo >= 0.5 * (float(full.max()) - float(full.min())):
        return None
    pad = max(0.1 * (hi - lo), 1e-3)
    return lo - pad, hi + pad


def plot_ensemble_curve(path: str, curves: Mapping[str, tuple[Sequence, Sequence]], *,
                        title: str = "Posterior predictive accuracy",
                        hlines: Mapping[str, float] | None = None) -> str:
    """Ensemble accuracy against ensemble size.

    When the curves that work (:func:`ensemble_zoom`) span a small part of all curves'
    range (e.g. a comparison row that does not work), a second panel zooms in on them.

    Args:
      path: output PNG.
      curves: label -> ``(sizes (K,), accuracy (K,))``.
      hlines: optional label -> constant accuracy drawn as a dashed line.
    """
    zoom = ensemble_zoom(curves)
    wide = len(curves) > 6
    if zoom is None:
        fig, ax = _figure((7.5, 3.8) if wide else (5.0, 3.5))
        axes = [ax]
    else:
        fig, ax = _figure((11.0, 3.8) if wide else (9.0, 3.5), ncols=2)
        axes = [ax, fig.add_subplot(1, 2, 2)]
    for i, ax in enumerate(axes):
        _many_series(ax, len(curves))
        for label, (sizes, acc) in curves.items():
            ax.plot(np.asarray(sizes), np.asarray(acc), marker=".", label=label)
        for label, v in (hlines or {}).items():
            if i and not zoom[0] <= float(v) <= zoom[1]:
                continue
            ax.axhline(float(v), linestyle="--", linewidth=1, color="gray")
            ax.annotate(label, (0.99, float(v)), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize=7, color="gray")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ensemble size")
        ax.set_ylabel("test accuracy")
        ax.set_title(title if not i else "zoomed on the rows that work")
        ax.grid(True, alpha=0.3)
        if i:
            ax.set_ylim(*zoom)
    _legend(axes[-1], len(curves))
    return save_figure(fig, path)


def plot_accuracy_histograms(path: str, accuracies: Mapping[str, Sequence], *,
                             bins: int = 30, title: str = "Test accuracy of networks") -> str:
    """Overlaid histograms of per-network accuracy; ``accuracies``: label -> ``(N,)``."""
    fig, ax = _figure((7.5, 3.8) if len(accuracies) > 6 else (5.0, 3.5))
    _many_series(ax, len(accuracies))
    vals = [np.asarray(v, np.float64).reshape(-1) for v in accuracies.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in vals]) if vals else np.zeros(1)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.01, hi + 0.01
    edges = np.linspace(lo, hi, int(bins) + 1)
    for label, v in zip(accuracies, vals):
        ax.hist(v[np.isfinite(v)], bins=edges, alpha=0.5, label=f"{label} (n={v.size})")
    ax.set_xlabel("test accuracy")
    ax.set_ylabel("networks")
    ax.set_title(title)
    _legend(ax, len(accuracies))
    return save_figure(fig, path)


def plot_finetune_curves(path: str, curves: Mapping[str, Mapping[str, Any]], *,
                         metric: str = "test_accuracy",
                         title: str = "Fine-tuning from sampled weights") -> str:
    """Fine-tuning curves; ``curves``: label -> a :func:`finetune_curves`-like dict.

    With ``step_accuracy`` (networks x steps, and ``step``) the x axis is optimizer steps
    (symlog) and the band the 95% t-interval of the mean; else mean +- std of ``metric``
    per epoch.
    """
    fig, ax = _figure()
    stepwise = all("step_accuracy" in c for c in curves.values())
    for label, c in curves.items():
        if stepwise:
            v = np.asarray(c["step_accuracy"], np.float64)
            x = np.asarray(c["step"])
            mean = v.mean(axis=0)
            half = np.nan_to_num(ci95_half_width(v, axis=0))
        else:
            v = np.asarray(c[metric], np.float64)
            x = np.asarray(c.get("epoch", np.arange(v.shape[1])))
            mean, half = v.mean(axis=0), v.std(axis=0)
        ax.plot(x, mean, marker=".", markersize=3, label=label)
        ax.fill_between(x, mean - half, mean + half, alpha=0.2)
    if stepwise:
        ax.set_xscale("symlog", linthresh=16)
        ax.set_xlabel("optimizer steps (epoch ends marked)")
        spe = next(iter(curves.values())).get("steps_per_epoch")
        if spe:
            last = max(int(np.max(c["step"])) for c in curves.values())
            for e in range(1, last // int(spe) + 1):
                ax.axvline(e * int(spe), color="0.8", lw=0.8, zorder=0)
        ax.set_ylabel("test accuracy (mean, 95% interval)")
    else:
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(ax, len(curves))
    return save_figure(fig, path)


def plot_steps_vs_accuracy(path: str, results: Mapping[str, tuple[Sequence, Sequence,
                                                                   Sequence | None]], *,
                           title: str = "Euler steps vs accuracy") -> str:
    """Mean accuracy (with std band when given) against the number of Euler steps.

    Args:
      results: label -> ``(steps (S,), mean accuracy (S,), std (S,) or None)``.
    """
    fig, ax = _figure()
    for label, (steps, mean, std) in results.items():
        steps, mean = np.asarray(steps), np.asarray(mean, np.float64)
        ax.plot(steps, mean, marker="o", label=label)
        if std is not None:
            std = np.asarray(std, np.float64)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("Euler steps")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_accuracy_vs_time(path: str, curves: Mapping[str, tuple[Sequence, Sequence,
                                                                 Sequence | None]], *,
                          hlines: Mapping[str, float] | None = None,
                          title: str = "time to quality") -> str:
    """Mean sample accuracy (std band when given) against training seconds, one line per
    model; ``hlines`` draws labelled reference accuracies (e.g. the thesis's, the zoo's)."""
    fig, ax = _figure((6.0, 3.8))
    _many_series(ax, len(curves))
    for label, (secs, mean, std) in curves.items():
        secs, mean = np.asarray(secs, np.float64), np.asarray(mean, np.float64)
        ax.plot(secs, mean, marker="o", markersize=3, label=label)
        if std is not None:
            std = np.asarray(std, np.float64)
            ax.fill_between(secs, mean - std, mean + std, alpha=0.15)
    for i, (label, value) in enumerate((hlines or {}).items()):
        ax.axhline(value, linestyle="--", linewidth=0.8, color=f"C{7 + i % 3}", label=label)
    ax.set_xlabel("training seconds (2 CPU cores)")
    ax.set_ylabel("samples' mean test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(ax, len(curves) + len(hlines or {}))
    return save_figure(fig, path)


def plot_prompt_alignment(path: str, series: Mapping[str, tuple[Sequence, Sequence, Sequence]],
                          *, title: str = "", xlabel: str = "prompted train loss",
                          ylabel: str = "achieved train loss",
                          markers: Mapping[str, float] | None = None, log: bool = True) -> str:
    """Desired vs achieved: per series ``(prompts, achieved means, achieved stds)``, the
    identity line, and vertical markers (e.g. the zoo's best loss)."""
    fig, ax = _figure((5.2, 4.0))
    lo = min(min(p) for p, _, _ in series.values())
    hi = max(max(p) for p, _, _ in series.values())
    for label, (p, m, s) in series.items():
        ax.errorbar(p, m, yerr=s, marker="o", ms=4, capsize=2, label=label)
        lo = min(lo, min(m))
        hi = max(hi, max(m))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="achieved = prompted")
    for name, v in (markers or {}).items():
        ax.axvline(v, color="grey", lw=0.8, ls=":")
        ax.annotate(name, (v, hi), fontsize=7, rotation=90, va="top", ha="right")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
