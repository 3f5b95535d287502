"""The jitted, data-parallel train step (``jax.jit`` with shardings, not ``pmap``).

One 1-D :class:`jax.sharding.Mesh` over ``jax.devices()`` (all devices of all processes) with
axis name ``"data"``. The train state is replicated on every device
(``NamedSharding(mesh, P())``); every leaf of a batch is split along its leading axis
(``NamedSharding(mesh, P("data"))``). XLA inserts the gradient all-reduce itself, so the step is
written as if for one device: ``loss_fn`` sees the whole global batch.

Contract of ``loss_fn(params, batch, rng) -> (loss, metrics)``:
  * ``params``: the model parameter pytree of the ``TrainState``;
  * ``batch``: the global batch pytree (every leaf with the batch on axis 0);
  * ``rng``: a raw PRNG key, ``fold_in(state.rng, state.step)`` -- distinct for each step and
    the same on every device and after a resume;
  * returns a float scalar ``loss`` (mean over the batch, so the result does not depend on the
    number of devices) and a dict of float scalar metrics (may be empty).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from weightflow_jax.train.state import TrainState

PyTree = Any
LossFn = Callable[[PyTree, PyTree, jax.Array], tuple[jax.Array, Mapping[str, jax.Array]]]

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """Returns the 1-D data-parallel mesh over ``devices`` (default: ``jax.devices()``).

    Args:
      devices: the devices to use, in order; ``None`` means every device of every process.

    Returns:
      ``Mesh`` of shape ``(len(devices),)`` with the single axis name ``"data"``.
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("make_mesh: no devices given.")
    return Mesh(np.asarray(devices, dtype=object), (DATA_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of the train state: a full copy on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The sharding of a batch leaf: its leading (batch) axis split over ``"data"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def shard_batch(batch: PyTree, mesh: Mesh, *, process_local: bool = False) -> PyTree:
    """Turns a host batch into global ``jax.Array`` s split along the leading axis.

    Two ways of feeding several processes:
      * ``process_local=False`` (default): ``batch`` is the *global* batch and is the same on
        every process (e.g. made by a ``batch_fn(step)`` that is pure in ``step``); each process
        copies only the rows that belong to its own devices.
      * ``process_local=True``: ``batch`` holds only this process's rows (global batch size =
        local size x ``jax.process_count()``), in process order.
    With one process both are the same.

    Args:
      batch: pytree of arrays (numpy or jax), each of shape ``(B, ...)`` with the same ``B``.
      mesh: the data-parallel mesh (:func:`make_mesh`).
      process_local: see above.

    Returns:
      The same pytree of global arrays of shape ``(B_global, ...)`` with sharding
      ``NamedSharding(mesh, P("data"))``; leaves that already have it are passed through.

    Raises:
      ValueError: a leaf without a batch axis, leaves with different batch sizes, or a global
        batch size not divisible by the number of devices in the mesh.
    """
    sharding = batch_sharding(mesh)
    num_devices = mesh.devices.size
    leaves, treedef = jax.tree.flatten(batch)
    if not leaves:
        raise ValueError("shard_batch: the batch has no array leaves.")
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(batch)[0]]
    sizes = {}
    for path, leaf in zip(paths, leaves):
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                f"shard_batch: batch leaf {path or '<root>'} is a scalar; every batch leaf needs "
                f"a leading batch axis (put per-run constants in the loss function instead).")
        sizes[path] = shape[0]
    if len(set(sizes.values())) > 1:
        raise ValueError(f"shard_batch: batch leaves have different leading (batch) sizes: "
                         f"{sizes}; they must all be equal.")
    local_size = next(iter(sizes.values()))
    global_size = local_size * (jax.process_count() if process_local else 1)
    if global_size % num_devices != 0:
        raise ValueError(
            f"shard_batch: the global batch size {global_size} is not divisible by the number "
            f"of devices {num_devices}; use a batch size that is a multiple of {num_devices}.")

    def put(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
            return leaf
        host = np.asarray(leaf)
        if process_local:
            return jax.make_array_from_process_local_data(sharding, host)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.unflatten(treedef, [put(x) for x in leaves])


def _check_loss_output(out: Any) -> None:
    """Validates the abstract output of ``loss_fn``: ``(scalar, {name: scalar})``."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ValueError(f"loss_fn must return a pair (loss, dict of metrics), got "
                         f"{type(out).__name__}.")
    loss, metrics = out
    if getattr(loss, "shape", None) != ():
        raise ValueError(f"loss_fn must return a scalar loss, got shape "
                         f"{getattr(loss, 'shape', type(loss).__name__)}.")
    if not isinstance(metrics, Mapping):
        raise ValueError(f"loss_fn must return (loss, dict of metrics), got metrics of type "
                         f"{type(metrics).__name__}.")
    for name, value in metrics.items():
        if getattr(value, "shape", None) != ():
            raise ValueError(f"loss_fn metric {name!r} must be a scalar, got shape "
                             f"{getattr(value, 'shape', type(value).__name__)}.")


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """A compiled data-parallel train step: ``(state, batch) -> (state, metrics)``.

    Attributes:
      fn: the ``jax.jit``-ed function (``.lower(...)`` etc. work on it).
      mesh: the mesh it was built for; batches must be sharded on it (:func:`shard_batch`).
    """

    fn: Callable[[TrainState, PyTree], tuple[TrainState, dict[str, jax.Array]]]
    mesh: Mesh

    def __call__(self, state: TrainState, batch: PyTree):
        """Runs one update; ``batch`` leaves of shape ``(B, ...)``, B divisible by #devices."""
        return self.fn(state, batch)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation,
                    mesh: Mesh | None = None, *, donate: bool = True,
                    ema_decay: float | None = None, ema_warmup: bool = False) -> TrainStep:
    """Builds the jitted data-parallel train step for ``loss_fn`` and ``optimizer``.

    The step computes ``rng = fold_in(state.rng, state.step)``, the loss and its gradient on the
    whole (sharded) batch, applies ``optimizer``, increments ``step`` and, when ``ema_decay`` is
    given, updates ``ema_params = d * ema_params + (1 - d) * params``.

    Args:
      loss_fn: ``loss_fn(params, batch, rng) -> (scalar loss, dict of scalar metrics)``
        (see the module docstring); must be jittable.
      optimizer: the optax transformation whose state is ``state.opt_state``.
      mesh: the data-parallel mesh; ``None`` builds :func:`make_mesh` over all devices.
      donate: donate the input state's buffers to the output (saves memory; the state passed
        in must not be used afterwards).
      ema_decay: decay in ``[0, 1)`` of the parameter EMA (``optax.incremental_update``); the
        state must have been made with ``create_train_state(..., ema=True)``.
      ema_warmup: use the decay ``min(ema_decay, (1 + step) / (10 + step))`` at update
        ``step`` (0-based), so that the average forgets the random initialisation quickly in
        short runs; ``False`` uses ``ema_decay`` from the first update.

    Returns:
      A :class:`TrainStep`; calling it returns the new state and the metrics dict, holding the
      ``loss_fn`` metrics plus ``"loss"`` and ``"grad_norm"`` (global L2 norm of the gradient),
      all replicated float32 scalars.
    """
    if mesh is None:
        mesh = make_mesh()
    if ema_decay is not None and not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"make_train_step: ema_decay must be in [0, 1), got {ema_decay}.")
    replicated = replicated_sharding(mesh)
    data = batch_sharding(mesh)

    def step(state: TrainState, batch: PyTree):
        if ema_decay is not None and state.ema_params is None:
            raise ValueError("make_train_step: ema_decay was given but the state has no "
                             "ema_params; build it with create_train_state(..., ema=True).")
        rng = jax.random.fold_in(state.rng, state.step)

        def checked_loss(params):
            out = loss_fn(params, batch, rng)
            _check_loss_output(out)  # before differentiating, for a clear message
            return out

        loss, vjp_fn, metrics = jax.vjp(checked_loss, state.params, has_aux=True)
        (grads,) = vjp_fn(jnp.ones_like(loss))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema_params = state.ema_params
        if ema_decay is not None:
            decay = jnp.asarray(ema_decay, jnp.float32)
            if ema_warmup:
                s = state.step.astype(jnp.float32)
                decay = jnp.minimum(decay, (1.0 + s) / (10.0 + s))
            ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  ema_params=ema_params)
        out = {name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()}
        out["loss"] = jnp.asarray(loss, jnp.float32)
        out["grad_norm"] = jnp.asarray(optax.tree.norm(grads), jnp.float32)
        return new_state, out

    fn = jax.jit(step, in_shardings=(replicated, data), out_shardings=(replicated, replicated),
                 donate_argnums=(0,) if donate else ())
    return TrainStep(fn=fn, mesh=mesh)
