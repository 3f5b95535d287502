"""Small evaluator objects with one ``run(params)`` (big_vision style).

Each holds its task data and settings; ``run`` takes a batch of networks (list of
``(W (N, out, in), b (N, out))``) and returns a dict of JSON-friendly values (floats, lists)
plus, under keys ending in ``_per_network``, numpy arrays for plots.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from weightflow_jax import mlp
from weightflow_jax.evaluation import finetune, metrics, novelty

__all__ = [
    "AccuracyEvaluator",
    "EnsembleEvaluator",
    "DiversityEvaluator",
    "NoveltyEvaluator",
    "FinetuneEvaluator",
]


class AccuracyEvaluator:
    """Per-network test accuracy and cross-entropy, mean and std over networks."""

    def __init__(self, x: Any, y: Any, *, chunk_size: int = 64):
        self.x, self.y, self.chunk_size = np.asarray(x, np.float32), np.asarray(y), chunk_size

    def run(self, params: mlp.Params) -> dict[str, Any]:
        """Returns ``accuracy_mean/std``, ``loss_mean/std``, ``num_networks``,
        ``num_finite`` and ``accuracy_per_network``, ``loss_per_network`` arrays."""
        acc, loss = metrics.accuracy_and_loss(params, self.x, self.y,
                                              chunk_size=self.chunk_size)
        finite = np.isfinite(loss)
        am, as_ = metrics.mean_std(acc)
        lm, ls = metrics.mean_std(loss[finite]) if finite.any() else (float("nan"),) * 2
        return {"accuracy_mean": am, "accuracy_std": as_, "loss_mean": lm, "loss_std": ls,
                "num_networks": int(acc.size), "num_finite": int(finite.sum()),
                "accuracy_per_network": acc, "loss_per_network": loss}


class EnsembleEvaluator:
    """Posterior-predictive accuracy for ensembles of size ``1 .. max_size``."""

    def __init__(self, x: Any, y: Any, *, max_size: int = 64, num_subsets: int = 0,
                 seed: int = 0, chunk_size: int = 64):
        self.x, self.y = np.asarray(x, np.float32), np.asarray(y)
        self.max_size, self.num_subsets, self.seed = max_size, num_subsets, seed
        self.chunk_size = chunk_size

    def run(self, params: mlp.Params) -> dict[str, Any]:
        """Returns ``sizes``, ``accuracy``, ``nll`` lists (and subset averages) and
        ``final_accuracy`` (the largest ensemble)."""
        c = metrics.ensemble_curve(params, self.x, self.y, max_size=self.max_size,
                                   num_subsets=self.num_subsets, seed=self.seed,
                                   chunk_size=self.chunk_size)
        out = {k: np.asarray(v).tolist() for k, v in c.items()}
        out["final_accuracy"] = float(c["accuracy"][-1])
        out["final_size"] = int(c["sizes"][-1])
        return out


class DiversityEvaluator:
    """Mean pairwise Jensen-Shannon divergence (nats) of predictive distributions."""

    def __init__(self, x: Any, *, max_networks: int | None = 100, max_points: int | None = None,
                 chunk_size: int = 64):
        x = np.asarray(x, np.float32)
        self.x = x if max_points is None else x[:int(max_points)]
        self.max_networks, self.chunk_size = max_networks, chunk_size

    def run(self, params: mlp.Params) -> dict[str, Any]:
        """Returns ``jsd_mean``, ``jsd_std`` (over pairs), ``num_pairs``, ``num_networks``."""
        d = metrics.diversity(params, self.x, max_networks=self.max_networks,
                              chunk_size=self.chunk_size)
        return {"jsd_mean": d["mean"], "jsd_std": d["std"], "num_pairs": d["num_pairs"],
                "num_networks": d["num_networks"], "log_base": "e"}


class NoveltyEvaluator:
    """Distance of samples to their nearest training checkpoint vs checkpoint spacing.

    The spacing (computed once, lazily) uses ``num_spacing_queries`` random checkpoints and
    excludes same-run neighbours within ``window`` snapshots (``None``: the whole run).
    With ``window=None`` and ``align``, L2 distances are up to permutation, each run
    aligned on its own (:func:`novelty.nearest_per_run_pairwise`), for samples and spacing.
    """

    def __init__(self, checkpoints: mlp.Params, reference: mlp.Params, run_id: Any, *,
                 order: Any | None = None, window: int | None = None,
                 num_spacing_queries: int | None = 256, canonical_mode: str = "exact",
                 seed: int = 0, align: bool = True):
        self.checkpoints = [(np.asarray(w, np.float32), np.asarray(b, np.float32))
                            for w, b in mlp.as_params(checkpoints)]
        self.reference = reference
        self.run_id, self.order, self.window = np.asarray(run_id), order, window
        self.num_spacing_queries, self.canonical_mode = num_spacing_queries, canonical_mode
        self.seed, self.align = seed, align
        # Up to permutation, each run aligned on its own (novelty module docstring): only
        # where spacing compares whole runs and samples are aligned.
        self.pairwise = window is None and align
        self._spacing: dict | None = None

    def spacing(self) -> dict[str, np.ndarray]:
        """:func:`novelty.checkpoint_spacing` of the checkpoints (cached)."""
        if self._spacing is None:
            self._spacing = novelty.checkpoint_spacing(
                self.checkpoints, self.run_id, order=self.order, window=self.window,
                num_queries=self.num_spacing_queries, seed=self.seed,
                canonical_mode=self.canonical_mode, pairwise=self.pairwise)
        return self._spacing

    def run(self, params: mlp.Params) -> dict[str, Any]:
        """Returns :func:`novelty.novelty_summary` and :func:`novelty.run_coverage` (of the
        L2-nearest checkpoints) plus ``l2_per_network`` and ``geodesic_per_network`` arrays
        and the nearest checkpoints' indices."""
        near = novelty.nearest_checkpoint(params, self.checkpoints, self.reference,
                                          canonical_mode=self.canonical_mode,
                                          align=self.align,
                                          run_id=self.run_id if self.pairwise else None)
        out: dict[str, Any] = novelty.novelty_summary(near, self.spacing())
        out.update(novelty.run_coverage(near["l2_index"], self.run_id))
        out["window"] = "whole run" if self.window is None else int(self.window)
        out["l2_per_network"] = near["l2"]
        out["geodesic_per_network"] = near["geodesic"]
        out["l2_index_per_network"] = near["l2_index"]
        out["geodesic_index_per_network"] = near["geodesic_index"]
        return out


class FinetuneEvaluator:
    """Fine-tuning curves of given networks against random initialization."""

    def __init__(self, x_train: Any, y_train: Any, x_test: Any, y_test: Any, *,
                 epochs: int = 5, batch_size: int = 128, optimizer: str = "adam",
                 learning_rate: float = 1e-3, seed: int = 0, random_w_std: float | None = 0.1):
        self.data = (np.asarray(x_train, np.float32), np.asarray(y_train),
                     np.asarray(x_test, np.float32), np.asarray(y_test))
        self.kwargs = dict(epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                           learning_rate=learning_rate)
        self.seed, self.random_w_std = seed, random_w_std

    def run(self, params: mlp.Params) -> dict[str, Any]:
        """Returns label (``"given"``, ``"random"``) -> curves dict of
        :func:`finetune.finetune_curves` (numpy arrays), same minibatch order for both."""
        sizes = mlp.validate(params, batched=True)
        n = metrics.num_networks(params)
        key = jax.random.key(self.seed)
        rand = finetune.random_init(jax.random.fold_in(key, 1), sizes, n,
                                    w_std=self.random_w_std)
        return finetune.compare_inits({"given": params, "random": rand}, *self.data,
                                      key=jax.random.fold_in(key, 2), **self.kwargs)
