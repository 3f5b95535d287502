"""Sampling networks from a trained flow: diffrax integration, guidance, likelihoods.

* :func:`sample` — ``num`` networks as plain MLP weights (Euler on the flow's geometry or
  an adaptive solver for flat flows), batched in chunks; :func:`sample_coords` keeps the
  flow's coordinates.
* :func:`integrate` / :class:`ManifoldEuler` — the diffrax integration itself.
* :class:`Guidance`, :func:`make_guidance`, :func:`task_loss_fn` — task-loss guidance
  ``v <- v - lambda * proj_x(grad_x L)``.
* :func:`save_samples_npz` / :func:`load_samples_npz` — ``samples.npz`` (``W0, b0, ...``).
* :func:`log_likelihood`, :func:`prior_log_density` — change of variables along the ODE
  (exact or Hutchinson divergence; Riemannian on the geometric flow).

A model is plugged in as ``predict_fn(x_batch: Canonical, t: scalar) -> Canonical`` (the
network's raw output for a batch of coordinates, see
:func:`weightflow_jax.flows.predicted_velocity`).
"""

from weightflow_jax.sampling.guidance import (
    Guidance, check_task, guidance_loss_at, make_guidance, task_loss_fn)
from weightflow_jax.sampling.likelihood import (
    DIVERGENCES, divergence, log_likelihood, log_sphere_area, prior_log_density)
from weightflow_jax.sampling.sample import (
    load_samples_npz, sample, sample_coords, save_samples_npz)
from weightflow_jax.sampling.solvers import (
    ADAPTIVE_SOLVERS, SOLVERS, ManifoldEuler, check_solver, integrate, vector_field)

__all__ = [
    "Guidance", "check_task", "guidance_loss_at", "make_guidance", "task_loss_fn",
    "DIVERGENCES", "divergence", "log_likelihood", "log_sphere_area", "prior_log_density",
    "load_samples_npz", "sample", "sample_coords", "save_samples_npz",
    "ADAPTIVE_SOLVERS", "SOLVERS", "ManifoldEuler", "check_solver", "integrate",
    "vector_field",
]
