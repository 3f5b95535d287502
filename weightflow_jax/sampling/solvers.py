"""ODE integration of a learned flow with diffrax, on the flow's geometry.

Solvers (``SOLVERS``):

* ``"euler"``: fixed-step Euler on the path geometry, :class:`ManifoldEuler`. One step is
  ``x <- exp_x(dt * v)`` (:func:`weightflow_jax.flows.sampling.euler_step`); ``v`` is the
  tangent velocity of :func:`weightflow_jax.flows.sampling.velocity` (the prediction is
  projected onto the tangent space before the exp map). For flat factors ``exp_x(v) = x + v``,
  so on the euclidean and normalized flows this is plain Euler. It reproduces
  :func:`weightflow_jax.flows.sampling.euler_sample` (same times ``t_k = k / N``).
* ``"midpoint"``: fixed-step explicit midpoint on the path geometry, :class:`ManifoldMidpoint`
  (2nd order; half step, velocity there parallel-transported back, full step; two field
  evaluations per step). Available on every flow, the geometric one included.
* ``"tsit5"``, ``"dopri5"``, ``"heun"`` (2nd order, adaptive via its embedded Euler),
  ``"bosh3"``: diffrax's adaptive Runge-Kutta solvers with a ``PIDController``. Only for
  flows whose path geometry is flat (euclidean, normalized): a Runge-Kutta step combines
  velocities at different points linearly, which has no meaning on the spheres. Asking for
  them on the geometric flow raises a ``ValueError``.

The velocity field may be guided (:class:`weightflow_jax.sampling.guidance.Guidance`):
``v <- v - lambda(t) * proj_x(G(x))``, ``G`` the guidance direction of
:func:`weightflow_jax.sampling.guidance.guidance_direction`.

Flow velocity (``flow_velocity``, :data:`FLOW_VELOCITIES`; ``parameterization="target"``):
``"conditional"`` is the field's own velocity ``log_{x_t}(x1_hat) / (1 - t)``, which pulls any
state back towards the endpoint the field predicts, harder as ``t -> 1`` (at the last Euler
step it jumps onto ``x1_hat``): whatever guidance did along the way is undone unless the field
predicts the guided state itself. ``"displacement"`` is the thesis code's target-mode step,
``x1_hat - x_0`` with ``x_0`` the trajectory's start, on the spheres
``Gamma_{x_0 -> x_t} log_{x_0}(x1_hat)`` (parallel transport along the great circle from
``x_0``): the same velocity along an exact conditional path, but with no pull, so guidance
accumulates.

Output scale (``output_scale``, :data:`OUTPUT_SCALES`; canonical flows in exact mode, whose
coordinates carry the last layer's log-norm ``log_scale``): ``"flow"`` integrates it like
every other coordinate and the sample keeps it. Otherwise the output network's log-scale is
a separate per-sample state ``s`` beside the coordinates: the flow still integrates its own
``log_scale`` (the field needs it as input: replacing it would put the field's input out of
distribution), but the network that the guidance sees and that is returned has its logits
rescaled to last-layer log-norm ``s`` (:func:`with_output_scale`: a temperature, the same
predictions). With a number ``c``, ``s = log c`` throughout; with ``"learn"``, ``s`` starts at 0 (a unit
last-layer norm) and only the guidance moves it (the guidance's ``log_scale`` component goes
to ``s`` instead of the coordinates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from weightflow_jax.flows.paths import predicted_x1
from weightflow_jax.flows.sampling import euler_step, velocity
from weightflow_jax.flows.spaces import FlowSpace
from weightflow_jax.geometry import product
from weightflow_jax.sampling.guidance import (Guidance, check_task, guidance_direction,
                                              schedule_weight)
from weightflow_jax.symmetry import Canonical

__all__ = [
    "SOLVERS",
    "ADAPTIVE_SOLVERS",
    "ManifoldEuler",
    "ManifoldMidpoint",
    "MANIFOLD_SOLVERS",
    "check_solver",
    "check_output_scale",
    "with_output_scale",
    "OUTPUT_SCALES",
    "FLOW_VELOCITIES",
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
MANIFOLD_SOLVERS = ("euler", "midpoint")
SOLVERS = MANIFOLD_SOLVERS + tuple(ADAPTIVE_SOLVERS)


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


class ManifoldMidpoint(ManifoldEuler):
    """Fixed-step explicit midpoint (2nd order) on a manifold: a half step along the
    velocity at ``y0``, the velocity there, parallel-transported back to ``y0``, then a full
    step from ``y0`` along it::

        y_h = exp_{y0}(dt/2 v(t0, y0));  y1 = exp_{y0}(dt Gamma_{y_h -> y0} v(t0 + dt/2, y_h))

    On flat factors this is the classical midpoint rule. Two field evaluations per step.

    Attributes:
      step_fn: as :class:`ManifoldEuler`.
      transport_fn: ``(y_from, y_to, v) -> v`` parallel transport, static.
    """

    transport_fn: Callable = eqx.field(static=True)

    def order(self, terms) -> int:
        return 2

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        dt = terms.contr(t0, t1)
        v0 = terms.vf(t0, y0, args)
        y_half = self.step_fn(y0, v0, 0.5 * dt)
        v_half = terms.vf(t0 + 0.5 * (t1 - t0), y_half, args)
        y1 = self.step_fn(y0, self.transport_fn(y_half, y0, v_half), dt)
        return y1, None, dict(y0=y0, y1=y1), None, diffrax.RESULTS.successful


def check_flow_velocity(flow_velocity: str, parameterization: str = "target") -> str:
    """Raises ``ValueError`` for an unknown ``flow_velocity`` or one the field cannot give."""
    if flow_velocity not in FLOW_VELOCITIES:
        raise ValueError(f"unknown flow_velocity {flow_velocity!r}; choose one of "
                         f"{FLOW_VELOCITIES}")
    if flow_velocity == "displacement" and parameterization != "target":
        raise ValueError("flow_velocity='displacement' needs a field that predicts x1 "
                         f"(parameterization='target'), got {parameterization!r}")
    return flow_velocity


def check_solver(space: FlowSpace, solver: str) -> None:
    """Raises ``ValueError`` for an unknown solver or an adaptive one on the geometric flow."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
    if solver not in MANIFOLD_SOLVERS and space.kind == "geometric":
        raise ValueError(
            f"solver {solver!r} is an adaptive Runge-Kutta method, which needs a flat path "
            "geometry; the geometric flow moves on products of spheres, where only the "
            "exp-map steps solver='euler' and solver='midpoint' (2nd order, parallel "
            "transport) are available. Use one of them with --steps.")


OUTPUT_SCALES = ("flow", "learn", "<positive number>")
FLOW_VELOCITIES = ("conditional", "displacement")


def check_output_scale(value: str | float) -> str | float:
    """``"flow"``, ``"learn"`` or a positive float (a fixed last-layer norm), else ``ValueError``."""
    if isinstance(value, str) and value in ("flow", "learn"):
        return value
    try:
        c = float(value)
    except (TypeError, ValueError):
        c = float("nan")
    if not c > 0 or c == float("inf"):
        raise ValueError(f"output_scale must be 'flow', 'learn' or a positive number (the "
                         f"last layer's Frobenius norm, 1 = the thesis's canonical form), got "
                         f"{value!r}")
    return c


def vector_field(space: FlowSpace, predict_fn: PredictFn, *,
                 parameterization: str = "target", output_scale: str | float = "flow",
                 flow_velocity: str = "conditional"
                 ) -> Callable[[jax.Array, Canonical, Any], Canonical]:
    """The diffrax vector field ``(t, x_batch, guidance) -> v_batch`` (tangent at ``x``).

    The third argument (diffrax's ``args``) is ``None`` or a :class:`Guidance`, passed as data
    so that large task sets are traced arguments rather than baked-in constants; with
    ``flow_velocity="displacement"`` it is the pair ``(guidance or None, x0_batch)``. With a
    separate output scale (module docstring) the state and the velocity are pairs
    ``(x_batch, s (n,))``.

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw network output`` (same tree as ``x_batch``).
      parameterization: ``"target"`` (x1 prediction) or ``"velocity"``.
      output_scale: see the module docstring.
      flow_velocity: ``"conditional"`` or ``"displacement"`` (module docstring).
    """
    output_scale = check_output_scale(output_scale)
    check_flow_velocity(flow_velocity, parameterization)
    separate = space.has_scale and output_scale != "flow"
    spec = space.path_spec

    def vf(t, y, args):
        t = jnp.asarray(t, jnp.float32)
        x, scale = y if separate else (y, None)
        if flow_velocity == "displacement":
            guidance, x_start = args
            pred = predict_fn(x, t)
            v = jax.vmap(lambda p, xi, x0: product.transport(spec, x0, xi, product.log(
                spec, x0, predicted_x1(space, p))))(pred, x, x_start)
        else:
            guidance = args
            v = velocity(space, predict_fn, x, t, parameterization)
        v_scale = None if scale is None else jnp.zeros_like(scale)
        if guidance is not None and guidance.scale:
            seen = x if scale is None else with_output_scale(x, scale)
            g = guidance_direction(space, guidance, t)(seen)
            g = jax.vmap(lambda xi, gi: product.proj(spec, xi, gi))(seen, g)
            w = float(guidance.scale) * schedule_weight(guidance.schedule, t)
            if scale is not None:
                if output_scale == "learn":
                    v_scale = -w * g.log_scale
                # back to x's coordinates: its b_L is the seen one times exp(sigma - s)
                w_l, b_l = g.layers[-1]
                back = jnp.exp(x.log_scale - scale)[:, None]
                g = Canonical(list(g.layers[:-1]) + [(w_l, b_l * back)],
                              jnp.zeros_like(g.log_scale))
            v = jax.tree.map(lambda a, b: a - w * b, v, g)
        return (v, v_scale) if separate else v
    return vf


def integrate(space: FlowSpace, predict_fn: PredictFn, x0: Canonical, *, steps: int = 512,
              solver: str = "euler", guidance: Guidance | None = None,
              parameterization: str = "target", rtol: float = 1e-3, atol: float = 1e-5,
              max_steps: int = 4096, t_end: float = 1.0, retract: bool = True,
              return_stats: bool = False, output_scale: str | float = "flow",
              flow_velocity: str = "conditional"):
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
      output_scale: ``"flow"``, ``"learn"`` or a fixed last-layer norm (module docstring).
      flow_velocity: ``"conditional"`` or ``"displacement"`` (module docstring).

    Returns:
      The batch at ``t_end`` (same tree and shapes as ``x0``; with a separate output scale
      its ``log_scale`` is the output network's ``s``), and the stats if asked.
    """
    check_solver(space, solver)
    output_scale = check_output_scale(output_scale)
    separate = space.has_scale and output_scale != "flow"
    if int(steps) < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if guidance is not None:
        check_task(space.sizes, guidance.x, guidance.y, "guidance task")
    term = diffrax.ODETerm(vector_field(space, predict_fn, parameterization=parameterization,
                                        output_scale=output_scale,
                                        flow_velocity=flow_velocity))
    args = (guidance, x0) if flow_velocity == "displacement" else guidance
    y0 = x0
    if separate:
        start = 0.0 if output_scale == "learn" else math.log(output_scale)
        y0 = (x0, jnp.full_like(x0.log_scale, start))
    dt0 = float(t_end) / int(steps)
    if solver in MANIFOLD_SOLVERS:
        step_fn = _EulerStep(space)
        method = (ManifoldEuler(step_fn) if solver == "euler"
                  else ManifoldMidpoint(step_fn, _Transport(space)))
        sol = diffrax.diffeqsolve(
            term, method, 0.0, float(t_end), dt0, y0, args,
            stepsize_controller=diffrax.ConstantStepSize(), max_steps=int(steps) + 1,
            saveat=diffrax.SaveAt(t1=True))
    else:
        sol = diffrax.diffeqsolve(
            term, ADAPTIVE_SOLVERS[solver](), 0.0, float(t_end), dt0, y0, args,
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=int(max_steps), saveat=diffrax.SaveAt(t1=True))
    y = jax.tree.map(lambda a: a[0], sol.ys)
    x, scale = y if separate else (y, None)
    if retract:
        x = jax.vmap(space.retract)(x)
    if scale is not None:
        x = with_output_scale(x, scale)
    return (x, sol.stats) if return_stats else x


def with_output_scale(x: Canonical, scale: jax.Array) -> Canonical:
    """The network of ``x`` (exact canonical mode, a batch) with logits rescaled so that its
    last layer's log-norm is ``scale``: ``log_scale <- scale`` and ``b_L <- b_L *
    exp(scale - log_scale)``, i.e. all logits times ``exp(scale - log_scale)`` (a
    temperature; predictions unchanged)."""
    w, b = x.layers[-1]
    factor = jnp.exp(scale - x.log_scale)
    return Canonical(list(x.layers[:-1]) + [(w, b * factor[..., None])], scale)


class _EulerStep:
    """Hashable ``(y, v, dt) -> exp_y(dt v)`` for one space (a static solver field)."""

    def __init__(self, space: FlowSpace):
        self.space = space

    def __call__(self, y, v, dt):
        if not isinstance(y, Canonical):  # (coordinates, separate output log-scale)
            return euler_step(self.space, y[0], v[0], dt), y[1] + dt * v[1]
        return euler_step(self.space, y, v, dt)

    def __hash__(self):
        return hash(("_EulerStep", self.space))

    def __eq__(self, other):
        return isinstance(other, _EulerStep) and other.space == self.space


class _Transport:
    """Hashable ``(y_from, y_to, v) -> Gamma v`` (parallel transport on the path geometry) for
    one space, a batch; a separate output log-scale is flat (unchanged)."""

    def __init__(self, space: FlowSpace):
        self.space = space

    def __call__(self, y_from, y_to, v):
        spec = self.space.path_spec
        move = lambda a, b, u: jax.vmap(lambda ai, bi, ui: product.transport(spec, ai, bi, ui))(
            a, b, u)
        if not isinstance(y_from, Canonical):
            return move(y_from[0], y_to[0], v[0]), v[1]
        return move(y_from, y_to, v)

    def __hash__(self):
        return hash(("_Transport", self.space))

    def __eq__(self, other):
        return isinstance(other, _Transport) and other.space == self.space
