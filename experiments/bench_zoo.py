"""Zoo training throughput: vmapped trainer vs one network at a time, in the same run.

Usage::

    python -m experiments.bench_zoo --config=configs/mnist_zoo.py:cpu \\
        --config.zoo.num_runs=32 --epochs=2

Both sides train the same networks (same inits, same minibatch orders) for ``--epochs``
epochs after one warm-up epoch (compilation excluded):

* vmapped: :func:`weightflow_jax.zoo.trainer.make_epoch_fn` — one jitted call per epoch for
  all networks (``lax.scan`` over iterations, snapshots emitted as in a real build);
* loop: a jitted single-network step (batch gathered inside the jit), called once per
  iteration from a Python loop, network after network (``--loop_runs`` of them; the
  throughput per network does not depend on how many are timed).

Prints network-epochs per second for both, their ratio, and the largest difference between
the two sides' final weights of the timed networks (same training, so it is float noise).
Data: ``config.zoo.dataset`` via :mod:`weightflow_jax.data`, or ``--synthetic`` random data
of the same shape (60,000 x 784, 10 classes for MNIST-sized archs).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from weightflow_jax import mlp
from weightflow_jax.zoo import build, trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config with a .zoo field.",
                                          lock_config=True)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Timed epochs per side (after a warm-up epoch).")
_LOOP_RUNS = flags.DEFINE_integer("loop_runs", 0,
                                  "Networks timed in the plain loop (0 = all num_runs).")
_SYNTHETIC = flags.DEFINE_integer("synthetic", 0,
                                  "Use random data with this many training rows instead "
                                  "of the real data set (0 = real data).")


def _data(cfg) -> trainer.Dataset:
    if _SYNTHETIC.value:
        sizes = mlp.parse_arch(cfg.arch)
        rng = np.random.default_rng(0)
        n = _SYNTHETIC.value
        x = rng.random((n, sizes[0]), dtype=np.float32)
        y = rng.integers(0, sizes[-1], n).astype(np.int32)
        return trainer.Dataset(x, y, x[:100], y[:100])
    return build.load_data(cfg)


def run_benchmark(cfg, data: trainer.Dataset, epochs: int, loop_runs: int) -> dict:
    """Times both trainers; returns network-epochs/s of each and their ratio."""
    data = trainer.check_data(cfg, data)
    n = data.x_train.shape[0]
    s = trainer.steps_per_epoch(cfg, n)
    b = int(cfg.batch_size)
    r = int(cfg.num_runs)
    run_ids = np.arange(r)
    x, y = jnp.asarray(trainer.compact_inputs(data.x_train)), jnp.asarray(data.y_train)
    perms = [trainer.epoch_permutations(cfg, run_ids, e, n) for e in range(epochs + 1)]
    jax.block_until_ready(perms)

    # --- vmapped: one call per epoch for all networks.
    state = trainer.init_state(cfg, run_ids)
    epoch_fn = trainer.make_epoch_fn(cfg, n)
    params, opt_state = state.params, state.opt_state
    params, opt_state, snaps, loss = epoch_fn(params, opt_state, perms[0], x, y)  # warm-up
    jax.block_until_ready((params, snaps))
    t0 = time.perf_counter()
    for e in range(1, epochs + 1):
        params, opt_state, snaps, loss = epoch_fn(params, opt_state, perms[e], x, y)
    jax.block_until_ready((params, opt_state, snaps, loss))
    t_vmap = time.perf_counter() - t0
    vmap_final = params

    # --- loop: one jitted single-network step per iteration, network after network.
    opt = trainer.make_optimizer(cfg.optimizer)
    step = trainer.make_step(opt)

    @jax.jit
    def single(params, opt_state, perm, i, x, y):
        idx = jax.lax.dynamic_slice_in_dim(perm, i * b, b)
        xb = x[idx]
        if xb.dtype == jnp.uint8:  # same input handling as the vmapped epoch
            xb = xb.astype(jnp.float32) / jnp.float32(255.0)
        return step(params, opt_state, xb, y[idx])

    m = r if loop_runs <= 0 else min(loop_runs, r)
    init = trainer.init_state(cfg, run_ids)
    t_loop = 0.0
    worst = 0.0
    for net in range(m):
        p = jax.tree_util.tree_map(lambda a: a[net], init.params)
        o = jax.tree_util.tree_map(lambda a: a[net], init.opt_state)
        net_perms = [pe if cfg.same_batch_order else pe[net] for pe in perms]
        for i in range(s):  # warm-up epoch (also compiles once, for net 0)
            p, o, _ = single(p, o, net_perms[0], i, x, y)
        jax.block_until_ready(p)
        t0 = time.perf_counter()
        for e in range(1, epochs + 1):
            for i in range(s):
                p, o, _ = single(p, o, net_perms[e], i, x, y)
        jax.block_until_ready(p)
        t_loop += time.perf_counter() - t0
        for (w, bb), (wv, bv) in zip(p, vmap_final):
            worst = max(worst, float(jnp.max(jnp.abs(w - wv[net]))),
                        float(jnp.max(jnp.abs(bb - bv[net]))))
    vmap_rate = r * epochs / t_vmap
    loop_rate = m * epochs / t_loop
    return {"vmap_net_epochs_per_s": vmap_rate, "loop_net_epochs_per_s": loop_rate,
            "ratio": vmap_rate / loop_rate, "num_runs": r, "loop_runs": m, "epochs": epochs,
            "steps_per_epoch": s, "max_abs_weight_diff": worst, "vmap_seconds": t_vmap,
            "loop_seconds": t_loop}


def main(argv):
    del argv
    cfg = build._zoo_cfg(_CONFIG.value)
    data = _data(cfg)
    out = run_benchmark(cfg, data, _EPOCHS.value, _LOOP_RUNS.value)
    what = f"synthetic {_SYNTHETIC.value} rows" if _SYNTHETIC.value else cfg.dataset
    print(f"zoo benchmark: {cfg.arch} on {what}, {cfg.optimizer.name}, batch {cfg.batch_size}, "
          f"{out['steps_per_epoch']} iterations/epoch, {jax.device_count()} "
          f"{jax.default_backend()} device(s)")
    print(f"  vmapped ({out['num_runs']} nets x {out['epochs']} epochs): "
          f"{out['vmap_net_epochs_per_s']:.2f} network-epochs/s ({out['vmap_seconds']:.2f} s)")
    print(f"  loop    ({out['loop_runs']} nets x {out['epochs']} epochs): "
          f"{out['loop_net_epochs_per_s']:.2f} network-epochs/s ({out['loop_seconds']:.2f} s)")
    print(f"  speed-up: {out['ratio']:.1f}x   (max |weight difference| vmapped vs loop: "
          f"{out['max_abs_weight_diff']:.2e})")


if __name__ == "__main__":
    app.run(main)
