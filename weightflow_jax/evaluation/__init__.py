"""Evaluation of sampled networks: accuracy, ensembles, diversity, novelty, fine-tuning.

* :mod:`.metrics` — per-network accuracy / cross-entropy, posterior-predictive ensemble
  curves, Jensen-Shannon diversity (nats).
* :mod:`.novelty` — distance to the nearest training checkpoint after alignment (plain L2
  and geodesic in canonical coordinates) against the spacing between checkpoints.
* :mod:`.baselines` — checkpoints, checkpoints + calibrated Gaussian noise, trained ensembles.
* :mod:`.finetune` — fine-tuning curves from given weights vs random init (vmapped optax).
* :mod:`.plots` — PNG figures (Agg canvas); :mod:`.markdown` — markdown ``mean±std`` tables.
* :mod:`.network_evaluators` — small objects with ``run(params) -> dict``.
* :mod:`.prompts` — prompt alignment (R^2 of achieved vs prompted loss) of a conditioned flow.

Networks are a batch of plain MLP weights: list of ``(W (N, out, in), b (N, out))``.
"""

from weightflow_jax.evaluation.baselines import (
    baseline_sets, final_checkpoints, noisy_checkpoints, random_checkpoint_per_run,
    random_checkpoints)
from weightflow_jax.evaluation.network_evaluators import (
    AccuracyEvaluator, DiversityEvaluator, EnsembleEvaluator, FinetuneEvaluator,
    NoveltyEvaluator)
from weightflow_jax.evaluation.finetune import (
    OPTIMIZERS, compare_inits, finetune_curves, make_optimizer, random_init, seconds_to_reach)
from weightflow_jax.evaluation.metrics import (
    accuracy_and_loss, check_task, ci95_half_width, diversity, ensemble_curve, ensemble_curve_from_probs, jsd,
    logits, mean_pairwise_jsd, mean_std, num_networks, probabilities)
from weightflow_jax.evaluation.novelty import (
    WHOLE_RUN, checkpoint_spacing, nearest_checkpoint, nearest_neighbors,
    nearest_per_run_pairwise, novelty_summary, run_coverage, run_positions)
from weightflow_jax.evaluation.plots import (
    ensemble_zoom, plot_accuracy_histograms, plot_ensemble_curve, plot_finetune_curves,
    plot_prompt_alignment, plot_steps_vs_accuracy, save_figure)
from weightflow_jax.evaluation.prompts import prompt_alignment, prompt_grid, r_squared
from weightflow_jax.evaluation.markdown import (
    format_mean_std, format_value, markdown_table, results_table)

__all__ = [
    "baseline_sets", "final_checkpoints", "noisy_checkpoints", "random_checkpoint_per_run",
    "random_checkpoints",
    "AccuracyEvaluator", "DiversityEvaluator", "EnsembleEvaluator", "FinetuneEvaluator",
    "NoveltyEvaluator", "OPTIMIZERS", "compare_inits", "finetune_curves", "make_optimizer",
    "seconds_to_reach",
    "random_init", "accuracy_and_loss", "check_task", "ci95_half_width", "diversity", "ensemble_curve",
    "ensemble_curve_from_probs", "jsd", "logits", "mean_pairwise_jsd", "mean_std",
    "num_networks", "probabilities", "WHOLE_RUN", "checkpoint_spacing", "nearest_checkpoint",
    "nearest_neighbors", "nearest_per_run_pairwise", "novelty_summary", "run_coverage",
    "run_positions", "plot_accuracy_histograms",
    "plot_ensemble_curve", "ensemble_zoom", "plot_finetune_curves", "plot_steps_vs_accuracy",
    "save_figure",
    "format_mean_std", "format_value", "markdown_table", "results_table",
    "plot_prompt_alignment", "prompt_alignment", "prompt_grid", "r_squared",
]
