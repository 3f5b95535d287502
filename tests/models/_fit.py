"""A field trained to its loss floor inside one jitted scan (shared by the consistency tests)."""

import jax
import jax.numpy as jnp
import optax


def fit(loss_fn, params, batch, steps: int, lr: float = 3e-3, seed: int = 2):
    """Adam (warm-up + cosine) on ``loss_fn(params, batch(key), rng)`` for ``steps`` steps.

    Returns ``(params, losses (steps,))``.
    """
    opt = optax.adam(optax.warmup_cosine_decay_schedule(0.0, lr, 20, steps))

    @jax.jit
    def train(p0):
        def body(carry, i):
            p, s = carry
            kb, kl = jax.random.split(jax.random.fold_in(jax.random.key(seed), i))
            (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch(kb), kl)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss
        (p, _), losses = jax.lax.scan(body, (p0, opt.init(p0)), jnp.arange(steps))
        return p, losses

    return train(params)
