"""A generic, model-agnostic trainer: state, data-parallel step, checkpoints, metrics, loop.

Typical use (see each function's docstring)::

    from weightflow_jax import train

    train.maybe_initialize_distributed()          # first, before other JAX calls
    state = train.create_train_state(params, optimizer, jax.random.key(0))
    step = train.make_train_step(loss_fn, optimizer)   # loss_fn(params, batch, rng)
    state, summary = train.train_loop(
        state, step, batch_fn, num_steps=10_000, workdir=workdir,
        checkpoint_every=1000, log_every=100, config=config)

``batch_fn(step)`` must be pure in ``step`` (see :mod:`weightflow_jax.train.loop`) so that a
resumed run sees the same batches as one that never stopped.

The flows' own training recipe (field, optimizer + schedule + EMA, CFM loss, coupled
batches) is :mod:`weightflow_jax.train.recipe`; it imports flows and models, so it is not
imported here (``from weightflow_jax.train import recipe``).
"""

from weightflow_jax.train.checkpoint import (DEFAULT_SAFE_FIELDS, CheckpointStore,
                                             ConfigMismatchError, canonical_config_json,
                                             check_config_compatible, config_differences,
                                             config_field,
                                             config_to_dict, load_config, restore_or_init,
                                             save_config)
from weightflow_jax.train.distributed import maybe_initialize_distributed
from weightflow_jax.train.loop import (NonFiniteLossError, StopTraining, TrainSummary,
                                       peak_rss_mb, train_loop)
from weightflow_jax.train.metric_log import MetricWriter, ProgressBar, read_metrics
from weightflow_jax.train.state import TrainState, create_train_state, replicate
from weightflow_jax.train.step import (DATA_AXIS, TrainStep, batch_sharding, make_mesh,
                                       make_train_step, replicated_sharding, shard_batch)

__all__ = [
    "DATA_AXIS", "DEFAULT_SAFE_FIELDS", "CheckpointStore", "ConfigMismatchError", "MetricWriter",
    "NonFiniteLossError", "ProgressBar", "StopTraining", "TrainState", "TrainStep",
    "TrainSummary", "batch_sharding", "canonical_config_json", "check_config_compatible",
    "config_differences", "config_field", "config_to_dict", "create_train_state", "load_config",
    "make_mesh", "make_train_step", "maybe_initialize_distributed", "peak_rss_mb",
    "read_metrics", "replicate", "replicated_sharding", "restore_or_init", "save_config",
    "shard_batch", "train_loop",
]
