"""Log-likelihood of given networks under a trained flow (continuous change of variables).

For the ODE ``dx/dt = v(x, t)`` carrying ``p0`` to ``p1``::

    log p1(x1) = log p0(x(0)) - int_0^1 div v(x(t), t) dt,

where ``x(t)`` solves the ODE backwards from ``x(1) = x1``. We integrate the augmented state
``(x, l)`` with ``dl/dt = div v`` from ``t_end`` down to 0 starting at ``l = 0``, so that
``l(0) = -int_0^{t_end} div v dt`` and ``log p1(x1) = log p0(x(0)) + l(0)``.

Divergence:

* ``"exact"``: ``sum_k <P e_k, J (P e_k)>`` over the ambient basis ``e_k`` (one
  Jacobian-vector product per coordinate, batched with ``lax.map``), with ``P`` the
  projection onto the tangent space (identity for flat flows). Cost ``D`` JVPs per step:
  for small networks (breast cancer, 802 coordinates).
* ``"hutchinson"``: ``mean_p <P eps_p, J (P eps_p)>`` with ``num_probes`` Rademacher (or
  Gaussian) probes ``eps_p``, drawn once per network and kept for the whole solve (as in
  FFJORD), so the estimate is unbiased for the whole integral, also with adaptive solvers.

Geometry:

* euclidean / normalized flows: flat coordinates; the density is with respect to Lebesgue
  measure on ``R^D`` (for the normalized flow: of the ODE's ambient push-forward before
  the final renormalization onto the spheres); ``p0 = N(0, std^2 I)``.
* geometric flow: the field is tangent to the product of spheres ``M``. Its Riemannian
  divergence is ``div_M v = tr(P J P) = tr(P J)`` for the ambient Jacobian ``J`` of any
  smooth extension of ``v`` (derivatives along tangent directions only see ``v`` on ``M``),
  which is what both estimators compute. The density is with respect to the Riemannian
  volume of ``M`` (arc length on each sphere times Lebesgue measure on the Euclidean parts);
  ``p0`` is uniform on each sphere (density ``1 / area(S^{d-1})``) times ``N(0, std^2)`` on
  the Euclidean parts (biases, ``log_scale``), matching :func:`flows.sample_prior`.
  Only ``solver="euler"`` (exp-map steps) is allowed there.

With x1-prediction (``"target"``) the field behaves like ``(x1_hat - x) / (1 - t)`` near
``t = 1``, so its divergence blows up like ``-D / (1 - t)``. The integration therefore starts
at ``t_end = flows.paths.T_MAX`` (``1 - 1e-3``, the largest training time) by default:
the value is the log-density of ``x_{t_end}`` evaluated at ``x1``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from weightflow_jax.flows.paths import T_MAX
from weightflow_jax.flows.sampling import euler_step, velocity
from weightflow_jax.flows.spaces import FlowSpace, is_factor
from weightflow_jax.geometry import Sphere, product
from weightflow_jax.sampling.solvers import ADAPTIVE_SOLVERS, ManifoldEuler, check_solver
from weightflow_jax.symmetry import Canonical

__all__ = [
    "DIVERGENCES",
    "log_sphere_area",
    "prior_log_density",
    "divergence",
    "log_likelihood",
]

PredictFn = Callable[[Canonical, jax.Array], Canonical]
DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def log_sphere_area(d: int) -> float:
    """``log`` of the surface area of the unit sphere ``S^{d-1}`` in ``R^d`` (``d >= 1``)."""
    d = int(d)
    if d < 1:
        raise ValueError(f"sphere dimension must be >= 1, got {d}")
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def prior_log_density(space: FlowSpace, x: Canonical, std: float = 0.1) -> jax.Array:
    """``log p0(x)`` of ONE point (vmap over a batch); a scalar.

    Geometric flow: uniform on each sphere of ``space.manifold_spec`` (Riemannian volume)
    times ``N(0, std^2)`` on Euclidean leaves. Other flows: ``N(0, std^2)`` on every entry.
    """
    if space.kind == "normalized" and space.prior == "spheres":
        raise ValueError(
            f"the {space.kind} flow's prior={space.prior!r} lives on spheres inside the flat "
            "space its path uses, so it has no density there; likelihoods need "
            "flow.prior='gaussian' for this flow (or the geometric flow)")
    spec = space.prior_spec
    factors = jax.tree.leaves(spec, is_leaf=is_factor)
    leaves = jax.tree.leaves(x)
    if len(factors) != len(leaves):
        raise ValueError(f"the point has {len(leaves)} arrays but the flow's space has "
                         f"{len(factors)} factors; pass coordinates of space {space}")
    total = jnp.zeros((), jnp.float32)
    log_norm = -0.5 * math.log(2.0 * math.pi) - math.log(std)
    for factor, leaf in zip(factors, leaves):
        leaf = jnp.asarray(leaf, jnp.float32)
        if isinstance(factor, Sphere):
            shape = leaf.shape
            split = len(shape) - factor.ndim
            n_spheres = int(np.prod(shape[:split], dtype=np.int64))
            d = int(np.prod(shape[split:], dtype=np.int64))
            total = total - n_spheres * log_sphere_area(d)
        else:
            total = total + leaf.size * log_norm - 0.5 * jnp.sum(jnp.square(leaf)) / std ** 2
    return total


def _per_sample_dot(a: Canonical, b: Canonical) -> jax.Array:
    """``(n,)``: ``sum`` of ``a * b`` over all entries of each sample."""
    parts = [jnp.sum(u * w, axis=tuple(range(1, u.ndim))) for u, w in
             zip(jax.tree.leaves(a), jax.tree.leaves(b))]
    return sum(parts)


def divergence(space: FlowSpace, field: Callable[[Canonical], Canonical], x: Canonical, *,
               method: str = "exact", probes: Canonical | None = None,
               chunk_size: int = 64) -> tuple[Canonical, jax.Array]:
    """Value and (Riemannian) divergence of a batched field at a batch of points.

    Args:
      space: the flow's space (``path_spec`` gives the tangent projection).
      field: ``x_batch -> v_batch`` with no coupling between samples.
      x: batch of points (leading axis ``n``).
      method: ``"exact"`` or ``"hutchinson"``.
      probes: Hutchinson probes, leaves shaped ``(num_probes, n, ...)``.
      chunk_size: basis vectors per vmapped batch of JVPs (exact method).

    Returns:
      ``(v, div)``: the field (tree like ``x``) and ``(n,)`` divergences.
    """
    spec = space.path_spec
    project = jax.vmap(lambda xi, ui: product.proj(spec, xi, ui))
    v, jvp = jax.linearize(field, x)
    if method == "hutchinson":
        if probes is None:
            raise ValueError("the Hutchinson estimator needs probes (num_probes, n, ...)")
        z = jax.vmap(lambda e: project(x, e))(probes)
        jz = jax.vmap(jvp)(z)
        est = jax.vmap(_per_sample_dot)(z, jz)
        return v, jnp.mean(est, axis=0)
    if method != "exact":
        raise ValueError(f"unknown divergence method {method!r}; choose one of {DIVERGENCES}")
    one = jax.tree.map(lambda a: a[0], x)
    flat, unravel = ravel_pytree(one)
    dim = flat.shape[0]
    n = jax.tree.leaves(x)[0].shape[0]

    def term(k):
        e = unravel(jax.nn.one_hot(k, dim, dtype=flat.dtype))
        e = jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), e)
        z = project(x, e)
        return _per_sample_dot(z, jvp(z))

    terms = jax.lax.map(term, jnp.arange(dim), batch_size=min(int(chunk_size), dim))
    return v, jnp.sum(terms, axis=0)


class _AugStep:
    """Hashable Euler step of ``(x, l)``: exp map on ``x``, plain Euler on ``l``."""

    def __init__(self, space: FlowSpace):
        self.space = space

    def __call__(self, y, v, dt):
        (x, logdet), (vx, vl) = y, v
        return euler_step(self.space, x, vx, dt), logdet + dt * vl

    def __hash__(self):
        return hash(("_AugStep", self.space))

    def __eq__(self, other):
        return isinstance(other, _AugStep) and other.space == self.space


def _solve(space: FlowSpace, predict_fn: PredictFn, x1: Canonical, probes, *, method: str,
           solver: str, steps: int, t_end: float, parameterization: str, rtol: float,
           atol: float, max_steps: int, chunk_size: int, prior_std: float):
    def aug_vf(t, state, probes):
        x, _ = state
        t = jnp.asarray(t, jnp.float32)
        field = lambda xb: velocity(space, predict_fn, xb, t, parameterization)
        return divergence(space, field, x, method=method, probes=probes,
                          chunk_size=chunk_size)

    n = jax.tree.leaves(x1)[0].shape[0]
    y0 = (x1, jnp.zeros((n,), jnp.float32))
    term = diffrax.ODETerm(aug_vf)
    dt0 = -float(t_end) / int(steps)
    if solver == "euler":
        sol = diffrax.diffeqsolve(term, ManifoldEuler(_AugStep(space)), float(t_end), 0.0,
                                  dt0, y0, probes,
                                  stepsize_controller=diffrax.ConstantStepSize(),
                                  max_steps=int(steps) + 1)
    else:
        sol = diffrax.diffeqsolve(term, ADAPTIVE_SOLVERS[solver](), float(t_end), 0.0, dt0, y0,
                                  probes,
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
                                  max_steps=int(max_steps))
    x0, logdet = jax.tree.map(lambda a: a[0], sol.ys)
    if space.kind == "geometric":
        x0 = jax.vmap(space.retract)(x0)
    logp0 = jax.vmap(lambda xi: prior_log_density(space, xi, prior_std))(x0)
    return logp0 + logdet


def log_likelihood(space: FlowSpace, predict_fn: PredictFn, x1: Canonical, *,
                   divergence_method: str = "exact", key: jax.Array | None = None,
                   num_probes: int = 1, probe: str = "rademacher", solver: str = "euler",
                   steps: int = 512, t_end: float = T_MAX, prior_std: float = 0.1,
                   parameterization: str = "target", rtol: float = 1e-5, atol: float = 1e-5,
                   max_steps: int = 4096, batch_size: int = 64,
                   chunk_size: int = 64) -> np.ndarray:
    """``log p1(x1)`` of a batch of networks' coordinates under the flow (module docstring).

    Args:
      space: the flow's space.
      predict_fn: ``(x_batch, t) -> raw output``.
      x1: coordinates of the networks, leading axis ``n`` — ``space.encode`` of weights
        aligned to the zoo's reference (the flow models aligned networks). Geometric flow:
        spheres are renormalized first.
      divergence_method: ``"exact"`` (small nets) or ``"hutchinson"`` (needs ``key``).
      key: PRNG key of the Hutchinson probes.
      num_probes: probes per network (the estimate's variance falls as ``1/num_probes``).
      probe: ``"rademacher"`` or ``"gaussian"``.
      solver: ``"euler"`` (``steps`` fixed steps) or, for flat flows, an adaptive one.
      steps: Euler steps (initial step of adaptive solvers).
      t_end: time the backward integration starts from (see the module docstring).
      prior_std: the prior's standard deviation.
      parameterization: what ``predict_fn`` returns.
      rtol, atol, max_steps: adaptive solver settings.
      batch_size: networks integrated at once.
      chunk_size: JVPs batched together by the exact divergence.

    Returns:
      ``(n,)`` float32 numpy log-densities (nats).
    """
    check_solver(space, solver)
    if solver == "midpoint":
        raise ValueError("log_likelihood integrates with solver='euler' (every flow) or an "
                         "adaptive solver (flat flows); 'midpoint' is a sampling solver")
    if divergence_method not in DIVERGENCES:
        raise ValueError(f"unknown divergence method {divergence_method!r}; choose one of "
                         f"{DIVERGENCES}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")
    if divergence_method == "hutchinson" and key is None:
        raise ValueError("divergence_method='hutchinson' needs a PRNG key for its probes")
    if not 0.0 < float(t_end) <= 1.0:
        raise ValueError(f"t_end must lie in (0, 1], got {t_end}")
    n = int(jax.tree.leaves(x1)[0].shape[0])
    if n < 1:
        raise ValueError("x1 holds no networks")
    x1 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), x1)
    if space.kind == "geometric":
        x1 = jax.vmap(space.retract)(x1)
    chunk = max(1, min(int(batch_size), n))
    hutch = divergence_method == "hutchinson"

    @jax.jit
    def run(xb, kb):
        probes = None
        if hutch:
            def draw(k):
                leaves, treedef = jax.tree.flatten(jax.tree.map(lambda a: a[0], xb))
                ks = jax.random.split(k, len(leaves))
                shape = lambda a: (num_probes,) + a.shape
                if probe == "rademacher":
                    out = [jax.random.rademacher(kk, shape(a), jnp.float32)
                           for kk, a in zip(ks, leaves)]
                else:
                    out = [jax.random.normal(kk, shape(a), jnp.float32)
                           for kk, a in zip(ks, leaves)]
                return jax.tree.unflatten(treedef, out)
            per = jax.vmap(draw)(kb)  # leaves (chunk, num_probes, ...)
            probes = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), per)
        return _solve(space, predict_fn, xb, probes, method=divergence_method, solver=solver,
                      steps=steps, t_end=t_end, parameterization=parameterization,
                      rtol=rtol, atol=atol, max_steps=max_steps, chunk_size=chunk_size,
                      prior_std=prior_std)

    keys = jax.random.split(key if key is not None else jax.random.key(0), n)
    out = []
    for start in range(0, n, chunk):
        idx = np.minimum(np.arange(start, start + chunk), n - 1)
        xb = jax.tree.map(lambda a: a[idx], x1)
        res = run(xb, keys[idx])
        out.append(np.asarray(res)[:min(chunk, n - start)])
    return np.concatenate(out).astype(np.float32)
