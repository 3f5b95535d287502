"""Subprocess worker: one of several JAX processes training data-parallel over loopback.

Started by tests/train/test_distributed.py with ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID`` set (read by ``maybe_initialize_distributed``) and
2 fake CPU devices per process; ``python -m tests.train._multiprocess_worker WORKDIR OUT.npz``.
"""

import sys

from weightflow_jax import train

assert train.maybe_initialize_distributed(), "the environment should ask for distributed JAX"

import jax  # noqa: E402  (after initialization on purpose)
import numpy as np  # noqa: E402

from tests.train import _toy  # noqa: E402

NUM_STEPS = 6


def main(workdir, out_path):
    assert jax.process_count() == 2, jax.process_count()
    opt = _toy.optimizer()
    step = train.make_train_step(_toy.loss_fn, opt)  # mesh over all 4 global devices
    state = train.create_train_state(_toy.init_params(), opt, jax.random.key(0))
    state, summary = train.train_loop(state, step, _toy.batch_fn, num_steps=NUM_STEPS,
                                      workdir=workdir, checkpoint_every=3, log_every=3,
                                      config={"toy": 1}, progress=False)
    local = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state.params)
    np.savez(out_path, w=local["w"], b=local["b"], global_devices=jax.device_count(),
             mesh_size=step.mesh.devices.size, last_checkpoint=summary.last_checkpoint)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
