"""Flow matching over MLP weights: spaces, priors, paths, losses, couplings, Euler sampling.

* :class:`FlowSpace` — the euclidean, normalized and geometric flows' coordinates and
  geometry (see :mod:`.spaces`).
* :mod:`.paths` — prior, time distribution, interpolants, conditional targets, CFM loss.
* :mod:`.couplings` — independent, exact minibatch OT and Sinkhorn (OTT-JAX) couplings.
* :mod:`.pair_alignment` — each coupled target permuted to match its own prior draw.
* :mod:`.sampling` — the reference Euler integrator on the flow's geometry, with guidance.
"""

from weightflow_jax.flows.couplings import (
    COUPLINGS, couple, exact_assignment, mean_pair_cost, pairwise_cost, sinkhorn_assignment)
from weightflow_jax.flows.pair_alignment import (
    PAIR_ALIGNMENTS, align_pairs, check_pair_alignment, pair_costs)
from weightflow_jax.flows.paths import (
    LOSS_WEIGHTINGS, PARAMETERIZATIONS, TIME_DISTRIBUTIONS, cfm_loss, interpolate, predicted_velocity,
    predicted_x1, sample_prior, sample_time, target_velocity)
from weightflow_jax.flows.sampling import euler_sample, euler_step, velocity
from weightflow_jax.flows.spaces import FLOWS, FlowSpace, is_factor, leaf_counts

__all__ = [
    "COUPLINGS", "couple", "exact_assignment", "mean_pair_cost", "pairwise_cost",
    "sinkhorn_assignment", "PARAMETERIZATIONS", "LOSS_WEIGHTINGS", "TIME_DISTRIBUTIONS", "cfm_loss",
    "interpolate", "predicted_velocity", "predicted_x1", "sample_prior", "sample_time",
    "target_velocity", "euler_sample", "euler_step", "velocity", "FLOWS", "FlowSpace",
    "is_factor", "leaf_counts", "PAIR_ALIGNMENTS", "align_pairs", "check_pair_alignment",
    "pair_costs",
]
