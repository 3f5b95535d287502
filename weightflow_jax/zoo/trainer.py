"""Training many MLPs at once: one jitted, vmapped step for every network of a zoo.

All ``R = num_runs`` networks share one training loop. Their parameters and optimizer
states carry a leading network axis; the per-network SGD/Adam step is ``jax.vmap``-ed over
it and ``lax.scan``-ned over the iterations of an epoch, so one epoch of all networks is
one compiled call. With ``jax.device_count() > 1`` dividing ``R``, the network axis is
sharded over a 1-D device mesh (``NamedSharding``, axis ``"nets"``); otherwise everything
lives on the default device.

Randomness (all derived from ``config.seed`` with ``jax.random.fold_in``, so run ``r`` is
the same network whatever ``num_runs`` is, and a resumed build is bit-identical):

* init of run ``r``: ``fold_in(fold_in(key(seed), 0), r)``; weights ~ N(0, w_std^2) or He
  N(0, 2 / fan_in), biases ~ N(0, b_std^2) (as :func:`weightflow_jax.mlp.init`), drawn as
  one normal vector per network in :func:`weightflow_jax.mlp.flatten` order;
* shuffling of run ``r`` in epoch ``e``: ``fold_in(fold_in(fold_in(key(seed), 1), r), e)``
  (independent order, the default) or ``fold_in(fold_in(key(seed), 2), e)`` for every run
  (``same_batch_order=True``);
* the train subset used for scoring: ``fold_in(key(seed), 3)``.

Snapshot schedule. With ``S = n_train // batch_size`` iterations per epoch (the last partial
batch is dropped) and ``k = snapshot_every``, epoch ``e >= burn_in_epochs`` stores the
weights after its iterations ``k, 2k, ..., (S // k) k``, i.e. global step
``t = e S + j k`` (``j = 1 .. S // k``; ``step`` counts updates done). That is
``S // k`` snapshots per epoch and ``(num_epochs - burn_in_epochs) (S // k)`` per run;
when ``k`` divides ``S`` the last snapshot of a run is its final network.

Early-dense window (``early_snapshot_every = k0 > 0``, ``early_snapshot_steps = n0``): the
first ``n0`` iterations of the run (epoch 0, which must then be kept: ``burn_in_epochs = 0``)
store a snapshot every ``k0`` iterations instead, i.e. steps ``k0, 2 k0, ..., n0``, and the
rest of epoch 0 the regular ``n0 + k, n0 + 2k, ...``; ``n0`` must be a multiple of ``k0`` and
of ``k`` and at most ``S``. The training loss falls fastest in the first iterations, so a
regular schedule leaves the high-loss range almost empty; the window covers it (for flows
conditioned on the training loss, whose prompts should span the zoo's range).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from weightflow_jax import mlp

__all__ = [
    "Dataset",
    "TrainState",
    "EpochOutput",
    "make_optimizer",
    "steps_per_epoch",
    "snapshot_schedule",
    "epoch_segments",
    "early_window",
    "init_state",
    "epoch_permutations",
    "make_step",
    "make_epoch_fn",
    "make_eval_fn",
    "compact_inputs",
    "evaluate",
    "iterate_epochs",
    "eval_subsets",
    "network_sharding",
]


class Dataset(NamedTuple):
    """A classification data set: ``x_*`` float32 ``(n, d)``, ``y_*`` int32 ``(n,)``."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any


class TrainState(NamedTuple):
    """Batched training state: ``params`` and ``opt_state`` carry a leading ``(R,)`` axis;
    ``epoch`` is the number of epochs already trained."""

    params: mlp.Params
    opt_state: Any
    epoch: int


class EpochOutput(NamedTuple):
    """What one epoch of all networks produced.

    Attributes:
      epoch: 0-based index of the epoch.
      snapshots: list of ``(W, b)`` with leading axes ``(S // k, R)`` (empty leading axis of
        size 0 during burn-in epochs is not produced: ``None`` then).
      steps: ``(S // k,)`` global step of each snapshot (updates done).
      train_loss: ``(R,)`` mean minibatch loss of every network over the epoch.
    """

    epoch: int
    snapshots: mlp.Params | None
    steps: np.ndarray
    train_loss: np.ndarray


# ----------------------------------------------------------------------------- config
def _sizes(config: ml_collections.ConfigDict) -> tuple[int, ...]:
    return mlp.parse_arch(config.arch)


def make_optimizer(opt: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax optimizer from ``config.optimizer`` (``name`` sgd/adam, see presets).

    Weight decay is added to the gradient before the optimizer (``torch.optim`` style L2),
    so SGD with momentum matches ``torch.optim.SGD(lr, momentum, weight_decay)``.
    """
    name = str(opt.name).lower()
    if opt.learning_rate <= 0:
        raise ValueError(
            f"optimizer.learning_rate must be positive, got {opt.learning_rate}")
    if name == "sgd":
        base = optax.sgd(opt.learning_rate, momentum=opt.momentum or None,
                         nesterov=bool(opt.nesterov))
    elif name == "adam":
        base = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2)
    else:
        raise ValueError(f"unknown optimizer {opt.name!r}; use 'sgd' or 'adam'")
    if opt.weight_decay:
        return optax.chain(optax.add_decayed_weights(opt.weight_decay), base)
    return base


def steps_per_epoch(config: ml_collections.ConfigDict, n_train: int) -> int:
    """``n_train // batch_size`` (the last partial minibatch is dropped)."""
    if config.batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {config.batch_size}")
    s = n_train // config.batch_size
    if s == 0:
        raise ValueError(
            f"batch_size {config.batch_size} exceeds the {n_train} training examples; "
            "lower --config.zoo.batch_size")
    return s


def early_window(config: ml_collections.ConfigDict) -> tuple[int, int]:
    """``(k0, n0)`` of the early-dense window, ``(0, 0)`` when off (fields absent or 0)."""
    return (int(config.get("early_snapshot_every", 0) or 0),
            int(config.get("early_snapshot_steps", 0) or 0))


def epoch_segments(config: ml_collections.ConfigDict, n_train: int,
                   epoch: int) -> tuple[tuple[int, int], ...]:
    """Snapshot blocks of epoch ``epoch``: ``((block_length, num_blocks), ...)`` in order.

    Every block ends with a snapshot; the ``S % k`` iterations after the last block keep
    none. Regular epochs are ``((k, S // k),)``; epoch 0 with the early window is
    ``((k0, n0 // k0), (k, (S - n0) // k))``. Validates the schedule.
    """
    if config.num_runs <= 0:
        raise ValueError(f"num_runs must be positive, got {config.num_runs}")
    s = steps_per_epoch(config, n_train)
    k = int(config.snapshot_every)
    if k <= 0 or k > s:
        raise ValueError(
            f"snapshot_every={k} must be in [1, {s}] (iterations per epoch = "
            f"{n_train} // {config.batch_size}); snapshots are counted within each epoch")
    if not 0 <= config.burn_in_epochs < config.num_epochs:
        raise ValueError(
            f"burn_in_epochs={config.burn_in_epochs} must be in [0, num_epochs="
            f"{config.num_epochs}); otherwise no snapshot would be kept")
    k0, n0 = early_window(config)
    if k0 or n0:
        if k0 <= 0 or n0 <= 0:
            raise ValueError(
                f"early_snapshot_every={k0} and early_snapshot_steps={n0}: set both positive "
                "(a snapshot every k0 iterations over the first n0) or both 0 (off)")
        if config.burn_in_epochs != 0:
            raise ValueError(
                f"early_snapshot_every={k0} needs burn_in_epochs=0 (the window is the run's "
                f"first {n0} iterations), got burn_in_epochs={config.burn_in_epochs}; set "
                "--config.zoo.burn_in_epochs=0 or --config.zoo.early_snapshot_every=0")
        if n0 > s or n0 % k0 or n0 % k:
            raise ValueError(
                f"early_snapshot_steps={n0} must be at most the {s} iterations of an epoch and "
                f"a multiple of early_snapshot_every={k0} and of snapshot_every={k}")
        if epoch == 0:
            return ((k0, n0 // k0), (k, (s - n0) // k))
    return ((k, s // k),)


def _positions(segments: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Iterations (1-based, within the epoch) after which the blocks' snapshots are taken."""
    out, start = [], 0
    for length, count in segments:
        out.append(start + length * np.arange(1, count + 1, dtype=np.int64))
        start += length * count
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def snapshot_schedule(config: ml_collections.ConfigDict,
                      n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Global steps and epochs of the snapshots of one run.

    Returns:
      ``(steps, epochs)``, both ``(T,)`` (``T = (num_epochs - burn_in_epochs) (S // k)``
      plus the early window's extra snapshots): ``steps`` int64 updates done when the
      snapshot was taken, ``epochs`` int32 0-based epoch it belongs to.
    """
    s = steps_per_epoch(config, n_train)
    epoch_segments(config, n_train, int(config.burn_in_epochs))  # validates
    steps, epochs = [], []
    for e in range(int(config.burn_in_epochs), int(config.num_epochs)):
        pos = _positions(epoch_segments(config, n_train, e))
        steps.append(e * s + pos)
        epochs.append(np.full(pos.shape, e, np.int32))
    return np.concatenate(steps), np.concatenate(epochs)


# ------------------------------------------------------------------------------ init
def _root(seed: int) -> jax.Array:
    return jax.random.key(seed)


def _run_keys(seed: Any, stream: int, run_ids: Any) -> jax.Array:
    base = jax.random.fold_in(_root(seed), stream)
    return jax.vmap(lambda r: jax.random.fold_in(base, r))(jnp.asarray(run_ids, jnp.uint32))


def _w_std(config: ml_collections.ConfigDict) -> float | None:
    scheme = str(config.init.scheme).lower()
    if scheme == "he":
        return None
    if scheme == "normal":
        if config.init.w_std <= 0:
            raise ValueError(f"init.w_std must be positive for scheme 'normal', got "
                             f"{config.init.w_std}")
        return float(config.init.w_std)
    raise ValueError(f"unknown init.scheme {config.init.scheme!r}; use 'normal' or 'he'")


@functools.lru_cache(maxsize=32)
def _init_fn(sizes: tuple[int, ...], w_std: float | None, b_std: float,
             opt_key: tuple) -> Callable:
    """Jitted ``(seed, run_ids) -> (params, opt_state)``, batched over runs."""
    opt = make_optimizer(ml_collections.ConfigDict(dict(opt_key)))

    total = mlp.num_params(sizes)
    scale = []
    for (o, i), _ in mlp.param_shapes(sizes):
        std = math.sqrt(2.0 / i) if w_std is None else w_std
        scale += [np.full(o * i, std, np.float32), np.full(o, b_std, np.float32)]
    scale = np.concatenate(scale)

    def one(key):
        # One N(0, 1) draw per network, laid out like mlp.flatten and scaled per layer:
        # the distribution of mlp.init (one draw compiles much faster than one per array).
        return mlp.unflatten(jax.random.normal(key, (total,), jnp.float32) * scale, sizes)

    def fn(seed, run_ids):
        params = jax.vmap(one)(_run_keys(seed, 0, run_ids))
        return params, jax.vmap(opt.init)(params)

    return jax.jit(fn)


def _opt_key(config: ml_collections.ConfigDict) -> tuple:
    make_optimizer(config.optimizer)  # validates
    return tuple(sorted(config.optimizer.to_dict().items()))


def init_params(config: ml_collections.ConfigDict, run_ids: np.ndarray) -> mlp.Params:
    """Initial weights of the given runs: list of ``(W (R, out, in), b (R, out))``."""
    fn = _init_fn(_sizes(config), _w_std(config), float(config.init.b_std), _opt_key(config))
    return fn(int(config.seed), np.asarray(run_ids, np.uint32))[0]


def init_state(config: ml_collections.ConfigDict,
               run_ids: np.ndarray | None = None) -> TrainState:
    """Fresh :class:`TrainState` for ``run_ids`` (default ``arange(num_runs)``)."""
    if run_ids is None:
        if config.num_runs <= 0:
            raise ValueError(f"num_runs must be positive, got {config.num_runs}")
        run_ids = np.arange(config.num_runs)
    fn = _init_fn(_sizes(config), _w_std(config), float(config.init.b_std), _opt_key(config))
    params, opt_state = fn(int(config.seed), np.asarray(run_ids, np.uint32))
    return TrainState(params, opt_state, 0)


@functools.partial(jax.jit, static_argnames=("n", "same"))
def _perms(seed: jax.Array, run_ids: jax.Array, epoch: jax.Array, n: int,
           same: bool) -> jax.Array:
    if same:
        key = jax.random.fold_in(jax.random.fold_in(_root(seed), 2), epoch)
        return jax.random.permutation(key, n).astype(jnp.int32)
    keys = _run_keys(seed, 1, run_ids)
    keys = jax.vmap(lambda k: jax.random.fold_in(k, epoch))(keys)
    return jax.vmap(lambda k: jax.random.permutation(k, n))(keys).astype(jnp.int32)


def epoch_permutations(config: ml_collections.ConfigDict, run_ids: np.ndarray, epoch: int,
                       n_train: int) -> jax.Array:
    """Shuffling of epoch ``epoch``: ``(R, n_train)`` int32, or ``(n_train,)`` when
    ``same_batch_order``."""
    return _perms(int(config.seed), np.asarray(run_ids, np.uint32), np.uint32(epoch),
                  n=int(n_train), same=bool(config.same_batch_order))


# ------------------------------------------------------------------------------ steps
def loss_and_accuracy(params: mlp.Params, x: jax.Array, y: jax.Array) -> tuple[jax.Array,
                                                                               jax.Array]:
    """Mean cross-entropy and accuracy of one network on ``x (n, d)``, ``y (n,)``."""
    logits = mlp.forward(params, x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    acc = (jnp.argmax(logits, -1) == y).mean()
    return loss, acc


def _loss(params: mlp.Params, x: jax.Array, y: jax.Array) -> jax.Array:
    logits = mlp.forward(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_step(optimizer: optax.GradientTransformation) -> Callable:
    """Single-network step ``(params, opt_state, xb (B, d), yb (B,)) -> (params, opt_state,
    loss)``; not jitted (vmap/scan/jit it)."""

    def step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(_loss)(params, xb, yb)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def compact_inputs(x: np.ndarray) -> np.ndarray:
    """``x`` as uint8 when every entry is exactly ``k / 255`` (image pixels), else float32.

    Minibatch gathers are memory bound on CPU; bytes make them ~4x cheaper. The epoch
    function divides by 255 in float32, so the network sees the same inputs to within one
    ulp (XLA may divide by multiplying with the reciprocal).
    """
    x = np.asarray(x, np.float32)
    if x.size == 0 or x.min() < 0 or x.max() > 1:
        return x
    u = np.rint(x * np.float32(255.0))
    if np.array_equal(u.astype(np.float32) / np.float32(255.0), x):
        return u.astype(np.uint8)
    return x


def make_epoch_fn(config: ml_collections.ConfigDict, n_train: int,
                  epoch: int = 1) -> Callable:
    """Jitted epoch of all networks (epoch ``epoch``'s snapshot schedule, see
    :func:`epoch_segments`; only epoch 0 can differ).

    Returns:
      ``fn(params, opt_state, perm, x, y) -> (params, opt_state, snapshots, mean_loss)``:
      ``params``/``opt_state`` batched ``(R, ...)``; ``perm`` ``(R, n)`` or ``(n,)`` int32;
      ``x (n, d)`` float32, or uint8 pixels meaning ``x / 255`` (see :func:`compact_inputs`);
      ``y (n,)``; ``snapshots`` list of ``(W, b)`` with leading ``(P, R)`` (``P`` snapshots
      of the epoch, ``S // k`` for a regular one); ``mean_loss`` ``(R,)``. ``params`` and
      ``opt_state`` are donated.
    """
    s = steps_per_epoch(config, n_train)
    segments = epoch_segments(config, n_train, epoch)
    return _epoch_fn(_opt_key(config), int(config.batch_size), segments,
                     bool(config.same_batch_order), s)


@functools.lru_cache(maxsize=32)
def _epoch_fn(opt_key: tuple, b: int, segments: tuple[tuple[int, int], ...], same: bool,
              s: int) -> Callable:
    """Cached so that zoos with the same training settings share one compiled function."""
    used = sum(length * count for length, count in segments)
    step = make_step(make_optimizer(ml_collections.ConfigDict(dict(opt_key))))
    vstep = jax.vmap(step, in_axes=(0, 0, None, None) if same else (0, 0, 0, 0))

    def one(carry, idx, x, y):
        params, opt_state = carry
        xb = x[idx]
        if xb.dtype == jnp.uint8:  # pixels stored as bytes: 4x less memory to gather
            xb = xb.astype(jnp.float32) / jnp.float32(255.0)
        params, opt_state, loss = vstep(params, opt_state, xb, y[idx])
        return (params, opt_state), loss

    def epoch(params, opt_state, perm, x, y):
        lead = perm.shape[:-1]
        idx = perm[..., : s * b].reshape(lead + (s, b))
        idx = jnp.moveaxis(idx, -2, 0)  # (S, [R,] B)
        body = functools.partial(one, x=x, y=y)

        def block(carry, idx_block):
            carry, losses = jax.lax.scan(body, carry, idx_block)
            return carry, (carry[0], losses)

        carry, total, snaps, start = (params, opt_state), 0.0, [], 0
        for length, count in segments:
            if count == 0:
                continue
            blocks = idx[start: start + length * count].reshape(
                (count, length) + idx.shape[1:])
            carry, (part, losses) = jax.lax.scan(block, carry, blocks)
            snaps.append(part)
            total = total + losses.sum(axis=(0, 1))
            start += length * count
        if used < s:
            carry, more = jax.lax.scan(body, carry, idx[used:])
            total = total + more.sum(axis=0)
        snaps = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *snaps)
        return carry[0], carry[1], snaps, total / s

    return jax.jit(epoch, donate_argnums=(0, 1))


def make_eval_fn() -> Callable:
    """Jitted ``fn(params (C, ...), x (n, d), y (n,)) -> (loss (C,), acc (C,))``."""
    return jax.jit(jax.vmap(loss_and_accuracy, in_axes=(0, None, None)))


_EVAL = make_eval_fn()


def evaluate(params: mlp.Params, x: Any, y: Any, chunk_size: int = 128) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """Loss and accuracy of ``N`` networks (batched params), in vmapped chunks.

    The last chunk is padded (by repeating a network) so that only one shape compiles.

    Returns:
      ``(loss (N,), acc (N,))`` float32 numpy arrays.
    """
    params = mlp.as_params(params)
    n = int(np.shape(params[0][0])[0])
    if n == 0:
        return np.zeros((0,), np.float32), np.zeros((0,), np.float32)
    c = max(1, min(int(chunk_size), n))
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    losses, accs = [], []
    for start in range(0, n, c):
        sel = np.arange(start, start + c)
        sel = np.minimum(sel, n - 1)
        chunk = [(jnp.asarray(np.asarray(w)[sel]), jnp.asarray(np.asarray(bb)[sel]))
                 for w, bb in params]
        loss, acc = _EVAL(chunk, x, y)
        m = min(c, n - start)
        losses.append(np.asarray(loss)[:m])
        accs.append(np.asarray(acc)[:m])
    return np.concatenate(losses).astype(np.float32), np.concatenate(accs).astype(np.float32)


def eval_subsets(config: ml_collections.ConfigDict, data: Dataset) -> tuple[np.ndarray, ...]:
    """``(x_tr, y_tr, x_te, y_te)`` used to score snapshots (see ``config.eval``)."""
    x_tr, y_tr = np.asarray(data.x_train), np.asarray(data.y_train)
    x_te, y_te = np.asarray(data.x_test), np.asarray(data.y_test)
    n_tr = int(config.eval.train_size)
    if 0 < n_tr < len(x_tr):
        key = jax.random.fold_in(_root(int(config.seed)), 3)
        sel = np.sort(np.asarray(jax.random.permutation(key, len(x_tr))[:n_tr]))
        x_tr, y_tr = x_tr[sel], y_tr[sel]
    n_te = int(config.eval.test_size)
    if 0 < n_te < len(x_te):
        x_te, y_te = x_te[:n_te], y_te[:n_te]
    return x_tr, y_tr, x_te, y_te


# --------------------------------------------------------------------------- sharding
def network_sharding(num_runs: int) -> tuple[NamedSharding, NamedSharding] | None:
    """``(sharded, replicated)`` over a 1-D mesh ``("nets",)`` of all devices, or ``None``
    when there is one device or ``num_runs`` is not a multiple of the device count."""
    n_dev = jax.device_count()
    if n_dev <= 1 or num_runs % n_dev:
        return None
    mesh = Mesh(np.array(jax.devices()), ("nets",))
    return NamedSharding(mesh, PartitionSpec("nets")), NamedSharding(mesh, PartitionSpec())


def check_data(config: ml_collections.ConfigDict, data: Dataset) -> Dataset:
    """Validates shapes/labels against ``config.arch``; returns float32/int32 numpy arrays."""
    sizes = _sizes(config)
    out = []
    for split in ("train", "test"):
        x = np.asarray(getattr(data, f"x_{split}"), np.float32)
        y = np.asarray(getattr(data, f"y_{split}"))
        if x.ndim != 2 or x.shape[1] != sizes[0]:
            raise ValueError(
                f"x_{split} has shape {x.shape} but the MLP {config.arch} takes {sizes[0]} "
                "inputs; pass features shaped (n, d_in) or change --config.zoo.arch")
        if y.shape != (x.shape[0],):
            raise ValueError(f"y_{split} has shape {y.shape}, expected ({x.shape[0]},)")
        if y.size and (y.min() < 0 or y.max() >= sizes[-1]):
            raise ValueError(
                f"y_{split} holds labels in [{y.min()}, {y.max()}] but the MLP {config.arch} "
                f"has {sizes[-1]} outputs")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"x_{split} holds NaN or Inf")
        out += [x, y.astype(np.int32)]
    return Dataset(*out)


# ------------------------------------------------------------------------------- loop
def iterate_epochs(config: ml_collections.ConfigDict, data: Dataset,
                   state: TrainState | None = None) -> Iterator[tuple[TrainState, EpochOutput]]:
    """Trains all networks epoch by epoch, from ``state`` (default: fresh) to
    ``config.num_epochs``.

    Yields:
      ``(state, output)`` after every epoch; ``state.epoch`` counts epochs done.
      Snapshots are ``None`` during burn-in. The epoch function donates its inputs, so a
      yielded ``state``'s arrays are only valid until the next epoch starts: copy them
      (e.g. ``np.asarray``) to keep them.
    """
    data = check_data(config, data)
    n_train = data.x_train.shape[0]
    s = steps_per_epoch(config, n_train)
    snapshot_schedule(config, n_train)  # validates the schedule
    run_ids = np.arange(config.num_runs)
    if state is None:
        state = init_state(config, run_ids)
    shard = network_sharding(config.num_runs)
    params, opt_state = state.params, state.opt_state
    x, y = jnp.asarray(compact_inputs(data.x_train)), jnp.asarray(data.y_train)
    if shard is not None:
        sharded, replicated = shard
        params = jax.device_put(params, sharded)
        opt_state = jax.device_put(opt_state, sharded)
        x, y = jax.device_put(x, replicated), jax.device_put(y, replicated)
    for e in range(state.epoch, config.num_epochs):
        perm = epoch_permutations(config, run_ids, e, n_train)
        if shard is not None:
            perm = jax.device_put(perm, shard[1] if config.same_batch_order else shard[0])
        epoch_fn = make_epoch_fn(config, n_train, e)
        params, opt_state, snaps, loss = epoch_fn(params, opt_state, perm, x, y)
        steps = e * s + _positions(epoch_segments(config, n_train, e))
        keep = e >= config.burn_in_epochs
        yield (TrainState(params, opt_state, e + 1),
               EpochOutput(e, snaps if keep else None, steps if keep else steps[:0],
                           np.asarray(loss)))


def num_snapshots(config: ml_collections.ConfigDict, n_train: int) -> int:
    """Total snapshots of a zoo: ``num_runs`` x the run's :func:`snapshot_schedule`."""
    return int(config.num_runs) * len(snapshot_schedule(config, n_train)[0])


def approx_bytes(config: ml_collections.ConfigDict, n_train: int) -> int:
    """Approximate size of ``weights.npz`` (float32)."""
    return num_snapshots(config, n_train) * mlp.num_params(_sizes(config)) * 4
