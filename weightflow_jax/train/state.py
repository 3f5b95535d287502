"""The training state: one pytree holding everything a run needs to continue.

``TrainState`` knows nothing about the model: ``params`` is any pytree of arrays, ``opt_state``
is whatever the optax optimizer keeps, ``rng`` is a raw ``uint32[2]``-style key (the key data, so
that orbax can save it as a plain array) and ``step`` counts finished updates. An optional
exponential moving average of the parameters (``ema_params``) is kept when asked for.

The optimizer itself (an ``optax.GradientTransformation``) is not part of the state: it is code,
not data, and is handed to :func:`weightflow_jax.train.make_train_step` instead.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: int32 scalar, number of optimizer updates applied so far.
      params: model parameters, any pytree of float arrays.
      opt_state: the optax optimizer state for ``params``.
      rng: raw PRNG key data (``uint32``, shape ``(2,)`` for the default threefry keys); the
        key used at update ``step`` is ``jax.random.fold_in(rng, step)``, so it never changes.
      ema_params: exponential moving average of ``params`` (same tree), or ``None`` when no
        EMA is kept.
    """

    step: jax.Array
    params: PyTree
    opt_state: PyTree
    rng: jax.Array
    ema_params: PyTree = None


def _raw_key(rng: jax.Array) -> jax.Array:
    """Returns the raw uint32 key data of ``rng`` (typed or raw key), validating it."""
    rng = jnp.asarray(rng) if not isinstance(rng, jax.Array) else rng
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if rng.shape != ():
            raise ValueError(
                f"create_train_state: expected a single PRNG key, got a key array of shape "
                f"{rng.shape}; pass one key, e.g. jax.random.key(0).")
        return jax.random.key_data(rng)
    if rng.dtype != jnp.uint32 or rng.ndim != 1:
        raise ValueError(
            f"create_train_state: rng must be a PRNG key (jax.random.key(seed) or "
            f"jax.random.PRNGKey(seed)), got an array of dtype {rng.dtype} and shape "
            f"{rng.shape}.")
    return rng


def create_train_state(params: PyTree, optimizer: optax.GradientTransformation,
                       rng: jax.Array, *, ema: bool = False) -> TrainState:
    """Builds the initial ``TrainState`` (step 0) for ``params`` and ``optimizer``.

    Args:
      params: model parameters, any pytree of arrays (e.g. a Flax variable dict or the MLP
        list of ``(W, b)`` tuples).
      optimizer: an optax gradient transformation; ``optimizer.init(params)`` gives the state.
      rng: a PRNG key, typed (``jax.random.key(0)``) or raw (``jax.random.PRNGKey(0)``); it is
        stored as raw ``uint32`` key data so that checkpoints hold a plain array.
      ema: also keep an exponential moving average of the parameters, initialised to
        ``params`` (updated when ``make_train_step(..., ema_decay=d)`` is used).

    Returns:
      A ``TrainState`` with ``step = 0`` (int32 scalar).
    """
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ValueError(
            f"create_train_state: optimizer must be an optax.GradientTransformation "
            f"(e.g. optax.adam(1e-3)), got {type(optimizer).__name__}.")
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("create_train_state: params has no array leaves; nothing to train.")
    params = jax.tree.map(jnp.asarray, params)
    ema_params = jax.tree.map(jnp.copy, params) if ema else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params), rng=_raw_key(rng),
                      ema_params=ema_params)


def replicate(tree: PyTree, mesh: jax.sharding.Mesh) -> PyTree:
    """Places every array of ``tree`` fully replicated on all devices of ``mesh``.

    Works with several processes too: every process must hold the same values (as it does when
    the state was built from the same seed); each only writes its own devices' copies.

    Args:
      tree: a pytree of arrays (host numpy or jax), e.g. a ``TrainState``.
      mesh: the device mesh (see :func:`weightflow_jax.train.make_mesh`).

    Returns:
      The same tree of global ``jax.Array`` with ``NamedSharding(mesh, PartitionSpec())``.
    """
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise ValueError("replicate: typed PRNG key arrays are not supported; store "
                             "jax.random.key_data(key) instead (TrainState does).")
        host = np.asarray(x)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)
