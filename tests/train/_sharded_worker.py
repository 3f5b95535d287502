"""Subprocess worker: data-parallel step on 4 fake CPU devices against a 1-device step.

Run with ``XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu`` as
``python -m tests.train._sharded_worker WORKDIR``; prints one JSON line of results.
"""

import json
import sys

import jax
import numpy as np

from tests.train import _toy
from weightflow_jax import train

NUM_STEPS = 5


def run_steps(mesh, n):
    opt = _toy.optimizer()
    step = train.make_train_step(_toy.loss_fn, opt, mesh)
    state = train.replicate(train.create_train_state(_toy.init_params(), opt,
                                                     jax.random.key(0)), mesh)
    losses = []
    for i in range(n):
        state, metrics = step(state, train.shard_batch(_toy.batch_fn(i), mesh))
        losses.append(float(metrics["loss"]))
    return state, losses


def max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def main(workdir):
    out = {"device_count": jax.device_count()}
    mesh1 = train.make_mesh(jax.devices()[:1])
    mesh4 = train.make_mesh()
    ref, ref_losses = run_steps(mesh1, NUM_STEPS)
    dp, dp_losses = run_steps(mesh4, NUM_STEPS)
    out["params_max_diff"] = max_diff(ref.params, dp.params)
    out["opt_state_max_diff"] = max_diff(ref.opt_state, dp.opt_state)
    out["loss_max_rel_diff"] = float(np.max(np.abs(np.subtract(ref_losses, dp_losses))
                                            / np.abs(ref_losses)))
    out["params_replicated"] = dp.params["w"].sharding == train.replicated_sharding(mesh4)
    batch = train.shard_batch(_toy.batch_fn(0), mesh4)
    out["batch_shard_shapes"] = sorted({tuple(s.data.shape) for s in
                                        batch["x"].addressable_shards})
    out["batch_num_shards"] = len(batch["x"].addressable_shards)
    try:
        train.shard_batch(_toy.batch_fn(0, batch_size=6), mesh4)
        out["indivisible_error"] = None
    except ValueError as e:
        out["indivisible_error"] = str(e)

    # Train 6 steps on 4 devices, then resume on 1 device up to 8: same as 8 on 1 device.
    opt = _toy.optimizer()
    step4 = train.make_train_step(_toy.loss_fn, opt, mesh4)
    step1 = train.make_train_step(_toy.loss_fn, opt, mesh1)
    fresh = lambda: train.create_train_state(_toy.init_params(), opt, jax.random.key(0))
    kw = dict(checkpoint_every=3, log_every=2, progress=False)
    train.train_loop(fresh(), step4, _toy.batch_fn, num_steps=6, workdir=f"{workdir}/a", **kw)
    resumed, summary = train.train_loop(fresh(), step1, _toy.batch_fn, num_steps=8,
                                        workdir=f"{workdir}/a", **kw)
    single, _ = train.train_loop(fresh(), step1, _toy.batch_fn, num_steps=8,
                                 workdir=f"{workdir}/b", **kw)
    out["resume_start_step"] = summary.start_step
    out["resume_other_mesh_max_diff"] = max_diff(resumed, single)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
