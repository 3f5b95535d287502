"""Fine-tuning from given weights against random initialization (the thesis's init test).

:func:`finetune_curves` trains a batch of networks at once (one optax step vmapped over the
networks, ``lax.scan`` over an epoch's minibatches). All networks see the same minibatch
order (one permutation of the training set per epoch, from ``key``; the last partial
batch is dropped), so curves differ only by their initialization. Test accuracy and loss
are recorded before training (epoch 0) and after every epoch, and, with ``eval_steps``, at
given step counts too (e.g. after 16, 64 and 256 steps) together with the training seconds
spent so far (compilation excluded: every scan length is compiled before the clock runs),
so that the time a start needs to reach an accuracy can be read off
(:func:`seconds_to_reach`).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from weightflow_jax import mlp
from weightflow_jax.evaluation.metrics import accuracy_and_loss, check_task

__all__ = ["OPTIMIZERS", "make_optimizer", "random_init", "finetune_curves", "compare_inits",
           "seconds_to_reach"]

OPTIMIZERS = ("adam", "sgd")


def make_optimizer(name: str = "adam", learning_rate: float = 1e-3, momentum: float = 0.9
                   ) -> optax.GradientTransformation:
    """``"adam"`` (``optax.adam``) or ``"sgd"`` (with ``momentum``)."""
    if name == "adam":
        return optax.adam(learning_rate)
    if name == "sgd":
        return optax.sgd(learning_rate, momentum=momentum or None)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def random_init(key: jax.Array, sizes: Any, num: int, *, w_std: float | None = 0.1
                ) -> mlp.Params:
    """``num`` randomly initialized networks (:func:`mlp.init`, zero biases), numpy."""
    sizes = mlp.parse_arch(sizes)
    params = jax.vmap(lambda k: mlp.init(k, sizes, w_std=w_std))(jax.random.split(key, num))
    return [(np.asarray(w), np.asarray(b)) for w, b in params]


def _loss(params, x, y):
    logits = mlp.forward(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _epoch_fn(optimizer: optax.GradientTransformation):
    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(_loss)(params, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    vstep = jax.vmap(step, in_axes=(0, 0, None, None))

    @jax.jit
    def epoch(params, opt_state, xs, ys):
        def body(carry, batch):
            p, s = carry
            p, s, loss = vstep(p, s, *batch)
            return (p, s), loss
        (params, opt_state), losses = jax.lax.scan(body, (params, opt_state), (xs, ys))
        return params, opt_state, jnp.mean(losses, axis=0)

    return epoch


def finetune_curves(init_params: mlp.Params, x_train: Any, y_train: Any, x_test: Any,
                    y_test: Any, *, key: jax.Array, epochs: int = 5, batch_size: int = 128,
                    optimizer: str = "adam", learning_rate: float = 1e-3,
                    momentum: float = 0.9, chunk_size: int = 64,
                    eval_steps: Any = ()) -> dict[str, np.ndarray]:
    """Trains ``N`` networks from ``init_params`` and records test metrics per epoch.

    Args:
      init_params: ``N`` networks (leading axis) to start from.
      x_train, y_train: ``(m, d_in)``, ``(m,)`` training set (``m >= batch_size``).
      x_test, y_test: test set.
      key: PRNG key of the minibatch order.
      epochs: passes over the training set.
      batch_size: minibatch size.
      optimizer, learning_rate, momentum: see :func:`make_optimizer`.
      chunk_size: networks per evaluation call.
      eval_steps: optimizer-step counts (``1 .. epochs * steps_per_epoch``) at which test
        metrics are recorded as well; epoch ends are always recorded.

    Returns:
      dict ``epoch (E+1,)`` (0 .. E), ``test_accuracy (N, E+1)``, ``test_loss (N, E+1)``,
      ``train_loss (N, E)`` (mean minibatch loss of each epoch), ``params`` (the
      trained networks), and on the step axis ``step (S,)`` (0, the ``eval_steps`` and
      the epoch ends, sorted), ``step_accuracy (N, S)``, ``step_loss (N, S)``,
      ``step_seconds (S,)`` (training wall-clock seconds up to that step, all ``N``
      networks together) and ``steps_per_epoch``.
    """
    check_task(init_params, x_train, y_train, "training")
    check_task(init_params, x_test, y_test, "test")
    m = int(np.shape(x_train)[0])
    batch_size = int(batch_size)
    if not 1 <= batch_size <= m:
        raise ValueError(f"batch_size must lie in [1, {m}] (training set size), got "
                         f"{batch_size}")
    if int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    opt = make_optimizer(optimizer, learning_rate, momentum)
    params = [(jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32))
              for w, b in mlp.as_params(init_params)]
    opt_state = jax.vmap(opt.init)(params)
    epoch_fn = _epoch_fn(opt)
    xtr = jnp.asarray(x_train, jnp.float32)
    ytr = jnp.asarray(y_train, jnp.int32)
    steps = m // batch_size
    total = steps * int(epochs)
    marks = sorted({int(s) for s in eval_steps if 0 < int(s) <= total}
                   | {steps * (e + 1) for e in range(int(epochs))})
    accs, losses, train_losses = [], [], []
    a, l = accuracy_and_loss(params, x_test, y_test, chunk_size=chunk_size)
    accs.append(a)
    losses.append(l)
    step_acc, step_loss, step_secs, clock = [a], [l], [0.0], 0.0
    compiled: set[int] = set()
    done = 0
    for e in range(int(epochs)):
        perm = jax.random.permutation(jax.random.fold_in(key, e), m)[:steps * batch_size]
        xs = xtr[perm].reshape(steps, batch_size, -1)
        ys = ytr[perm].reshape(steps, batch_size)
        epoch_losses = []
        for mark in [k for k in marks if steps * e < k <= steps * (e + 1)]:
            lo, hi = done - steps * e, mark - steps * e
            if hi - lo not in compiled:  # compile outside the clock (result discarded)
                jax.block_until_ready(epoch_fn(params, opt_state, xs[lo:hi], ys[lo:hi]))
                compiled.add(hi - lo)
            t0 = time.perf_counter()
            params, opt_state, tl = epoch_fn(params, opt_state, xs[lo:hi], ys[lo:hi])
            jax.block_until_ready(params)
            clock += time.perf_counter() - t0
            epoch_losses.append((np.asarray(tl), hi - lo))
            done = mark
            a, l = accuracy_and_loss(params, x_test, y_test, chunk_size=chunk_size)
            step_acc.append(a)
            step_loss.append(l)
            step_secs.append(clock)
        train_losses.append(sum(t * k for t, k in epoch_losses) / steps)
        accs.append(step_acc[-1])
        losses.append(step_loss[-1])
    n = accs[0].shape[0]
    return {
        "step": np.asarray([0] + marks),
        "step_accuracy": np.stack(step_acc, axis=1),
        "step_loss": np.stack(step_loss, axis=1),
        "step_seconds": np.asarray(step_secs),
        "steps_per_epoch": steps,
        "epoch": np.arange(int(epochs) + 1),
        "test_accuracy": np.stack(accs, axis=1),
        "test_loss": np.stack(losses, axis=1),
        "train_loss": (np.stack(train_losses, axis=1) if train_losses
                       else np.zeros((n, 0), np.float32)),
        "params": [(np.asarray(w), np.asarray(b)) for w, b in params],
    }


def compare_inits(inits: dict[str, mlp.Params], x_train: Any, y_train: Any, x_test: Any,
                  y_test: Any, *, key: jax.Array, **kwargs: Any) -> dict[str, dict]:
    """:func:`finetune_curves` for several initializations with the same minibatch order.

    Args:
      inits: name -> batch of initial networks (e.g. ``{"sampled": ..., "random":
        random_init(...)}``).
      key: shared PRNG key of the minibatch order.
      kwargs: forwarded to :func:`finetune_curves`.

    Returns:
      name -> curves dict (without ``params``).
    """
    out = {}
    for name, init in inits.items():
        res = finetune_curves(init, x_train, y_train, x_test, y_test, key=key, **kwargs)
        res.pop("params")
        out[name] = res
    return out


def seconds_to_reach(curves: dict[str, Any], threshold: float) -> float | None:
    """Training seconds until the *mean* accuracy over networks first reaches ``threshold``.

    Linear interpolation between the recorded steps of :func:`finetune_curves`
    (``step_accuracy``, ``step_seconds``); ``0.0`` when the start is already there and
    ``None`` when it never gets there.
    """
    acc = np.mean(np.asarray(curves["step_accuracy"]), axis=0)
    secs = np.asarray(curves["step_seconds"], np.float64)
    if acc[0] >= threshold:
        return 0.0
    for i in range(1, len(acc)):
        if acc[i] >= threshold:
            f = (threshold - acc[i - 1]) / max(acc[i] - acc[i - 1], 1e-12)
            return float(secs[i - 1] + f * (secs[i] - secs[i - 1]))
    return None
