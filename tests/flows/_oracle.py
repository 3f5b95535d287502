"""The exact marginal velocity of a flow over a finite training set, and the training loss's
minimiser, for the consistency tests (training vs sampling).

With the independent coupling and a finite set ``{x1_i}`` (equal weights), a point
``x_t`` of a flat path (euclidean, normalized: ``x_t = (1 - t) x0 + t x1_i``, ``x0 ~
N(0, std^2 I)``) came from ``x1_i`` with posterior probability
``p_i ∝ exp(-|x_t - t x1_i|^2 / (2 (1 - t)^2 std^2))``, and the marginal velocity the ODE must
integrate to carry the prior to the data is ``u(x_t) = sum_i p_i u_t(x_t | x1_i)``. At ``t = 0``
the posterior is uniform on every flow (``x_0`` is independent of ``x1``), the geometric one
included.
"""

import jax
import jax.numpy as jnp
import optax

from weightflow_jax import flows


def _sq(tree):
    return sum(jnp.sum(a * a) for a in jax.tree.leaves(tree))


def posterior(space, x1s, x, t, std):
    """``(K,)`` posterior over the training points given ``x_t = x`` (flat paths, or t = 0)."""
    if space.kind == "geometric":
        k = jax.tree.leaves(x1s)[0].shape[0]
        return jnp.full((k,), 1.0 / k)  # valid at t = 0 only (x_0 independent of x1)
    d = jax.vmap(lambda c: _sq(jax.tree.map(lambda a, b: a - t * b, x, c)))(x1s)
    return jax.nn.softmax(-d / (2.0 * ((1.0 - t) * std) ** 2))


def marginal_velocity(space, x1s, x, t, std):
    """``sum_i p_i u_t(x | x1_i)``: what the sampler must integrate at ``(x, t)``."""
    p = posterior(space, x1s, x, t, std)
    u = jax.vmap(lambda c: flows.target_velocity(space, x, c, t))(x1s)
    return jax.tree.map(lambda a: jnp.tensordot(p, a, 1), u)


def loss_minimiser(space, x1s, x, t, param, std, steps=600):
    """The raw prediction at ``(x, t)`` minimising the expected training loss
    ``sum_i p_i cfm_loss(pred | x1_i)`` (Adam with a decaying step; jit-able)."""
    p = posterior(space, x1s, x, t, std)

    def loss(pred):
        return jnp.sum(p * jax.vmap(
            lambda c: flows.cfm_loss(space, pred, x, c, x, t, param))(x1s))

    opt = optax.adam(optax.cosine_decay_schedule(0.03, steps))

    def body(carry, _):
        pred, state = carry
        upd, state = opt.update(jax.grad(loss)(pred), state, pred)
        return (optax.apply_updates(pred, upd), state), None

    init = x if param == "target" else jax.tree.map(jnp.zeros_like, x)
    (pred, _), _ = jax.lax.scan(body, (init, opt.init(init)), None, steps)
    return pred


def relative_error(a, b):
    """``|a - b| / |b|`` over whole trees."""
    return jnp.sqrt(_sq(jax.tree.map(jnp.subtract, a, b)) / _sq(b))
