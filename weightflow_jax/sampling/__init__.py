"""Sampling networks from a trained flow: diffrax integration, guidance, likelihoods.

* :func:`sample` — ``num`` networks as plain MLP weights (Euler on the flow's geometry or
  an adaptive solver for flat flows), batched in chunks; :func:`sample_coords` keeps the
  flow's coordinates.
* :func:`integrate` / :class:`ManifoldEuler` / :class:`ManifoldMidpoint` — the diffrax
  integration itself (Euler or 2nd-order midpoint exp-map steps; adaptive solvers on flat flows).
* :class:`Guidance`, :func:`make_guidance`, :func:`task_loss_fn` — task-loss guidance
  ``v <- v - lambda(t) * proj_x(G)``, ``G`` a gradient step on the balanced network carried
  to the flow's coordinates (``mode="balanced"``) or ``grad_x L`` (``mode="coords"``).
* :func:`save_samples_npz` / :func:`load_samples_npz` — ``samples.npz`` (``W0, b0, ...``).
* :func:`log_likelihood`, :func:`prior_log_density` — change of variables along the ODE
  (exact or Hutchinson divergence; Riemannian on the geometric flow).

A model is plugged in as ``predict_fn(x_batch: Canonical, t: scalar) -> Canonical`` (the
network's raw output for a batch of coordinates, see
:func:`weightflow_jax.flows.predicted_velocity`).
"""

from weightflow_jax.sampling.guidance import (
    GUIDANCE_MODES, SCHEDULES, Guidance, check_task, guidance_direction, guidance_loss_at,
    make_guidance, schedule_weight, task_loss_fn)
from weightflow_jax.sampling.likelihood import (
    DIVERGENCES, divergence, log_likelihood, log_sphere_area, prior_log_density)
from weightflow_jax.sampling.sample import (
    decode_samples, load_samples_npz, sample, sample_coords, samples_representative,
    save_samples_npz)
from weightflow_jax.sampling.solvers import (
    ADAPTIVE_SOLVERS, MANIFOLD_SOLVERS, OUTPUT_SCALES, SOLVERS, ManifoldEuler, ManifoldMidpoint,
    check_output_scale, check_solver, integrate, vector_field)

__all__ = [
    "GUIDANCE_MODES", "SCHEDULES", "Guidance", "check_task", "guidance_direction",
    "guidance_loss_at", "make_guidance", "schedule_weight", "task_loss_fn",
    "DIVERGENCES", "divergence", "log_likelihood", "log_sphere_area", "prior_log_density",
    "decode_samples", "load_samples_npz", "sample", "sample_coords", "samples_representative",
    "save_samples_npz",
    "ADAPTIVE_SOLVERS", "MANIFOLD_SOLVERS", "OUTPUT_SCALES", "SOLVERS", "ManifoldEuler",
    "ManifoldMidpoint", "check_output_scale",
    "check_solver", "integrate",
    "vector_field",
]
