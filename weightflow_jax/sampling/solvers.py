"""ODE integration of a learned flow with diffrax, on the flow's geometry.

Solvers (``SOLVERS``):

* ``"euler"``: fixed-step Euler on the path geometry, :class:`ManifoldEuler`. One step is
  ``x <- exp_x(dt * v)`` (:func:`weightflow_jax.flows.sampling.euler_step`); ``v`` is the
  tangent velocity of :func:`weightflow_jax.flows.sampling.velocity` (the prediction is
  projected onto the tangent space before the exp map). For flat factors ``exp_x(v) = x + v``,
  so on the euclidean and normalized flows this is plain Euler. It reproduces
  :func:`weightflow_jax.flows.sampling.euler_sample` (same times ``t_k = k / N``).
* ``"tsit5"``, ``"dopri5"``, ``"heun"`` (2nd order, adaptive via its embedded Euler),
  ``"bosh3"``: diffrax's adaptive Runge-Kutta solvers with a ``PIDController``. Only for
  flows whose path geometry is flat (euclidean, normalized): a Runge-Kutta step combines
  velocities at different points linearly, which has no meaning on the spheres. Asking for
  them on the geometric flow raises a ``ValueError``.

The velocity field may be guided (:class:`weightflow_jax.sampling.guidance.Guidance`):
``v <- v - lambda * proj_x(grad_x L)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from weightflow_jax.flows.sampling import euler_step, velocity
from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.sampling.guidance import Guidance, check_task, guidance_loss_at
from weightflow_jax.symmetry import Canonical

__all__ = [
    "SOLVERS",
    "ADAPTIVE_SOLVERS",
    "ManifoldEuler",
    "check_solver",
    "vector_field",
    "integrate",
]

PredictFn = Callable[[Canonical, jax.Array], Canonical]

ADAPTIVE_SOLVERS = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
}
SOLVERS = ("euler",) + tuple(ADAPTIVE_SOLVERS)


class ManifoldEuler(diffrax.AbstractSolver):
    """Fixed-step Euler whose update is a user-given retraction/exp map.

    ``step_fn(y, v, dt) -> y_next`` receives the state, the vector field's value at
    ``(t0, y)`` and the signed time step (negative when integrating backwards). With
    ``step_fn = lambda y, v, dt: flows.euler_step(space, y, v, dt)`` the step is
    ``exp_y(dt * v)`` on the flow's product manifold. Use it with
    ``diffrax.ConstantStepSize`` (it gives no error estimate).

    Attributes:
      step_fn: the update, static (hashable) callable.
    """

    step_fn: Callable = eqx.field(static=True)

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., diffrax.LocalLinearInterpolation]] = (
        diffrax.LocalLinearInterpolation)

    def order(self, terms) -> int:
        return 1

    def init(self, terms, t0, t1, y0, args) -> None:
        return None

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        v = terms.vf(t0, y0, args)
        dt = terms.contr(t0, t1)
        y1 = self.step_fn(y0, v, dt)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)


def check_solver(space: FlowSpace, solver: str) -> None:
    """Raises ``ValueError`` for an unknown solver or an adaptive one on the geometric flow."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if solver != "euler" and space.kind == "geometric":
        raise ValueError(
            f"solver {solver!r} is an adaptive Runge-Kutta method, which needs a flat path "
            "geometry; the geometric flow moves on products of spheres, where only "
            "solver='euler' (exp-map steps) is available. Use solver='euler' with --steps.")


def vector_field(space: FlowSpace, predict_fn: PredictFn, *,
                 parameterization: str = "target") -> Callable[[jax.Array, Canonical, Any],
                                                               Canonical]:
    """The diffrax vector field ``(t, x_batch, guidance) -> v_batch`` (tangent at ``x``).

    The third argument (diffrax's ``args``) is ``None`` or a :class:`Guidance`, passed as data
    so that large task sets are traced arguments rather than baked-in constants.

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw network output`` (same tree as ``x_batch``).
      parameterization: ``"target"`` (x1 prediction) or ``"velocity"``.
    """
    def vf(t, x, guidance):
        t = jnp.asarray(t, jnp.float32)
        g_fn, g_scale = None, 0.0
        if guidance is not None and guidance.scale:
            g_fn = guidance_loss_at(space, guidance, t)
            g_scale = float(guidance.scale)
        return velocity(space, predict_fn, x, t, parameterization, g_fn, g_scale)
    return vf


def integrate(space: FlowSpace, predict_fn: PredictFn, x0: Canonical, *, steps: int = 512,
              solver: str = "euler", guidance: Guidance | None = None,
              parameterization: str = "target", rtol: float = 1e-3, atol: float = 1e-5,
              max_steps: int = 4096, t_end: float = 1.0, retract: bool = True,
              return_stats: bool = False):
    """Carries a batch of prior draws from ``t = 0`` to ``t_end`` along the learned field.

    Works under ``jax.jit`` (all options are static Python values).

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw output`` for a batch (leading axis ``n``).
      x0: batch of prior draws, :class:`Canonical` with leading axis ``n``.
      steps: Euler steps (``"euler"``); the initial step is ``t_end / steps`` for adaptive
        solvers.
      solver: one of :data:`SOLVERS`; adaptive ones only for euclidean/normalized flows.
      guidance: optional task-loss guidance.
      parameterization: what ``predict_fn`` returns (``"target"`` or ``"velocity"``).
      rtol, atol: tolerances of the adaptive step-size controller.
      max_steps: step budget of adaptive solvers (diffrax raises when it runs out).
      t_end: final time (1.0 by default).
      retract: put the final points onto the data manifold (spheres renormalized), as
        :func:`weightflow_jax.flows.euler_sample` does.
      return_stats: also return diffrax's statistics dict (``num_steps``, ...).

    Returns:
      The batch at ``t_end`` (same tree and shapes as ``x0``), and the stats if asked.
    """
    check_solver(space, solver)
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance is not None:
        check_task(space.sizes, guidance.x, guidance.y, "guidance task")
    term = diffrax.ODETerm(vector_field(space, predict_fn, parameterization=parameterization))
    dt0 = float(t_end) / int(steps)
    if solver == "euler":
        step_fn = _EulerStep(space)
        sol = diffrax.diffeqsolve(
            term, ManifoldEuler(step_fn), 0.0, float(t_end), dt0, x0, guidance,
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=int(steps) + 1,
            saveat=diffrax.SaveAt(t1=True))
    else:
        sol = diffrax.diffeqsolve(
            term, ADAPTIVE_SOLVERS[solver](), 0.0, float(t_end), dt0, x0, guidance,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=int(max_steps), saveat=diffrax.SaveAt(t1=True))
    x = jax.tree.map(lambda a: a[0], sol.ys)
    if retract:
        x = jax.vmap(space.retract)(x)
    return (x, sol.stats) if return_stats else x


class _EulerStep:
    """Hashable ``(y, v, dt) -> exp_y(dt v)`` for one space (a static solver field)."""

    def __init__(self, space: FlowSpace):
        self.space = space

    def __call__(self, y, v, dt):
        return euler_step(self.space, y, v, dt)

    def __hash__(self):
        return hash(("_EulerStep", self.space))

    def __eq__(self, other):
        return isinstance(other, _EulerStep) and other.space == self.space
