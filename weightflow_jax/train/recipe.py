"""The flow's training recipe: field, optimizer + schedule + EMA, CFM loss, coupled batches.

Everything :func:`weightflow_jax.pipeline.train_flow` and the benchmarks build a flow's
train step from, each callable on its own with a config (``configs/common.py``)::

    from weightflow_jax.train import recipe

    space = recipe.flow_space(config)
    run = recipe.build_flow(config, space, k_init, recipe.fit_field_stats(config, coords))
    state, step, mesh = recipe.make_training(run, k_state)   # Adam(W), schedule, EMA
    batch_fn = recipe.make_batch_fn(run, coords, k_data)     # coupled, resumable batches
    state, metrics = step(train.replicate(state, mesh), train.shard_batch(batch_fn(0), mesh))
    variables = recipe.sampling_variables(state)             # EMA parameters when kept

* :class:`FlowRun` — a flow's space, field, variables and config; :func:`build_flow`
  makes one with freshly initialised variables.
* :func:`fit_field_stats`, :func:`save_field_stats`, :func:`load_field_stats` — the field's
  standardization statistics and their file in a workdir (:data:`STATS_FILE`).
* :func:`make_schedule` (:data:`SCHEDULES`), :func:`make_optimizer`, :func:`ema_decay` —
  warm-up + constant/cosine learning rate, Adam(W) with gradient clipping, parameter EMA.
* :func:`make_loss_fn` — the conditional flow-matching loss for
  :func:`weightflow_jax.train.make_train_step`; :func:`make_batch_fn` — prior draws coupled
  to training coordinates (optionally pair-aligned), a pure function of the step.
* :func:`make_training` — optimizer, train state and jitted step in one call.

Unlike the rest of :mod:`weightflow_jax.train` (model-agnostic), this module knows flows and
fields: it imports :mod:`weightflow_jax.flows` and :mod:`weightflow_jax.models`, and is not
imported by ``weightflow_jax.train`` itself (``from weightflow_jax.train import recipe``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from weightflow_jax import atomic, flows, mlp
from weightflow_jax import models as models_lib
from weightflow_jax.flows import field
from weightflow_jax.symmetry import Canonical
from weightflow_jax.train.state import TrainState, create_train_state
from weightflow_jax.train.step import TrainStep, make_mesh, make_train_step

__all__ = ["FlowRun", "flow_space", "build_flow", "STATS_FILE", "fit_field_stats",
           "save_field_stats", "load_field_stats", "SCHEDULES", "make_schedule",
           "make_optimizer", "ema_decay", "make_loss_fn", "make_batch_fn", "make_training",
           "sampling_variables"]


@dataclasses.dataclass
class FlowRun:
    """A flow ready to train or sample: its space, field, variables and config.

    ``variables`` are the ones sampling uses: the EMA of the parameters when the run keeps
    one (``config.train.ema_decay > 0``), else the parameters.
    """

    config: ml_collections.ConfigDict
    space: flows.FlowSpace
    field: models_lib.Field
    variables: Any

    @property
    def model(self) -> models_lib.Field:
        """The field (older name)."""
        return self.field

    @property
    def stats(self) -> models_lib.Standardizer:
        return self.field.stats

    def predict_fn(self, space: flows.FlowSpace | None = None):
        """``(x_batch, t) -> raw output`` for sampling, optionally on another architecture."""
        if space is not None:
            self.field.check_sizes(space.sizes)
        return lambda x, t: self.field.apply(self.variables, x, t)


def flow_space(config: ml_collections.ConfigDict) -> flows.FlowSpace:
    """The flow space of ``config``: ``flow.kind`` on ``zoo.arch`` in ``flow.canonical_mode``."""
    return flows.FlowSpace(str(config.flow.kind), mlp.parse_arch(str(config.zoo.arch)),
                           str(config.flow.canonical_mode))


STATS_FILE = "field_stats.npz"


def build_flow(config: ml_collections.ConfigDict, space: flows.FlowSpace, key: jax.Array,
               stats: models_lib.Standardizer | None = None) -> FlowRun:
    """The field named ``config.model.name`` for ``space`` and freshly initialised variables.

    Args:
      stats: the field's standardization statistics (:func:`fit_field_stats`); ``None``
        uses neutral ones (mean 0, std 1) — for benchmarks without a training set.
    """
    if stats is None:
        stats = models_lib.Standardizer.neutral(models_lib.stats_mode(config.model),
                                                space.sizes, space.has_scale)
    fld = field.make_field(config.model, space, str(config.flow.parameterization), stats)
    variables = fld.init(key)
    return FlowRun(config, space, fld, variables)


def fit_field_stats(config: ml_collections.ConfigDict,
                    coords: Canonical) -> models_lib.Standardizer:
    """Standardization statistics of the training ``coords`` for the configured field."""
    return field.fit_stats(config.model, coords)


def save_field_stats(workdir: str, stats: models_lib.Standardizer) -> None:
    """Writes ``workdir/field_stats.npz`` atomically."""
    atomic.savez(os.path.join(workdir, STATS_FILE), **stats.to_npz_dict())


def load_field_stats(workdir: str) -> models_lib.Standardizer | None:
    """The statistics stored with a run, or ``None`` when it has none."""
    path = os.path.join(workdir, STATS_FILE)
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as d:
        return models_lib.Standardizer.from_npz_dict({k: d[k] for k in d.files})


SCHEDULES = ("constant", "cosine")


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up, then constant or cosine decay to ``min_lr_ratio * learning_rate``."""
    t = config.train
    lr, warm = float(t.learning_rate), max(int(t.warmup_steps), 1)
    kind = str(t.get("schedule", "constant"))
    if kind == "constant":
        return optax.linear_schedule(0.0, lr, warm)
    if kind == "cosine":
        total = max(int(t.steps), warm + 1)
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warm, total, end_value=lr * float(t.get("min_lr_ratio", 0.0)))
    raise ValueError(f"unknown train.schedule {kind!r}; choose one of {SCHEDULES}")


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Adam(W) with the configured schedule (:func:`make_schedule`) and gradient clipping."""
    t = config.train
    return optax.chain(optax.clip_by_global_norm(float(t.grad_clip)),
                       optax.adamw(make_schedule(config), weight_decay=float(t.weight_decay)))


def ema_decay(config: ml_collections.ConfigDict) -> float | None:
    """``config.train.ema_decay`` as the train step wants it (``None`` = no EMA)."""
    d = float(config.train.get("ema_decay", 0.0))
    if not 0.0 <= d < 1.0:
        raise ValueError(f"train.ema_decay={d} must be in [0, 1) (0 = no EMA)")
    return d or None


def make_loss_fn(run: FlowRun):
    """``loss_fn(params, batch, rng) -> (loss, metrics)`` for :func:`train.make_train_step`.

    ``batch = {"x0": Canonical, "x1": Canonical}`` with a leading batch axis (already
    coupled); times are drawn inside from ``rng``.
    """
    cfg = run.config.flow
    space = run.space
    param = str(cfg.parameterization)

    def loss_fn(params, batch, rng):
        x0, x1 = batch["x0"], batch["x1"]
        n = x0.layers[0][0].shape[0]
        t = flows.sample_time(rng, (n,), str(cfg.time_distribution), float(cfg.time_a),
                              float(cfg.time_b))
        xt = jax.vmap(lambda a, b, s: flows.interpolate(space, a, b, s))(x0, x1, t)
        pred = run.field.apply({"params": params}, xt, t)
        losses = jax.vmap(lambda p, a, b, c, s: flows.cfm_loss(space, p, a, b, c, s, param))(
            pred, x0, x1, xt, t)
        return jnp.mean(losses), {"t_mean": jnp.mean(t)}

    return loss_fn


def make_batch_fn(run: FlowRun, coords: Canonical, key: jax.Array):
    """``batch_fn(step)``: a coupled batch that depends only on ``step`` (resumable).

    With ``flow.pair_alignment="weight_matching"`` every chosen target is then permuted to
    match its prior draw (:func:`weightflow_jax.flows.align_pairs`).
    """
    cfg, tcfg = run.config.flow, run.config.train
    space = run.space
    n_data = int(coords.layers[0][0].shape[0])
    bsz = int(tcfg.batch_size)
    std = float(cfg.prior_std)
    prior = jax.jit(lambda k: jax.vmap(lambda kk: flows.sample_prior(kk, space, std))(
        jax.random.split(k, bsz)))
    seed = int(run.config.seed)
    pair_alignment = flows.check_pair_alignment(str(cfg.get("pair_alignment", "none")))

    def batch_fn(step: int):
        rng = np.random.default_rng((seed, 7, int(step)))
        idx = rng.choice(n_data, size=bsz, replace=n_data < bsz)
        x1 = jax.tree.map(lambda a: a[idx], coords)
        k = jax.random.fold_in(key, int(step))
        x0 = prior(k)
        x1 = flows.couple(str(cfg.coupling), jax.random.fold_in(k, 1), space, x0, x1,
                          float(cfg.sinkhorn_epsilon))
        if pair_alignment == "weight_matching":
            x1, _ = flows.align_pairs(space, x0, x1)
        return {"x0": x0, "x1": x1}

    return batch_fn


def make_training(run: FlowRun, key: jax.Array, *, ema: bool = True,
                  mesh: jax.sharding.Mesh | None = None
                  ) -> tuple[TrainState, TrainStep, jax.sharding.Mesh]:
    """The recipe's initial train state and jitted step for ``run``.

    :func:`make_optimizer` of ``run.config``; with ``ema`` (and ``train.ema_decay > 0``) the
    state keeps a parameter EMA updated with warm-up (:func:`ema_decay`); the step's loss is
    :func:`make_loss_fn`.

    Args:
      key: the state's PRNG key (the loss draws its times from it).
      ema: ``False`` trains without an EMA whatever the config says (calibration,
        throughput).
      mesh: the data-parallel mesh; ``None`` makes one over all devices.
    Returns:
      ``(state, step, mesh)``; ``state`` is on the host (the train loop replicates it; a
      hand-written loop calls :func:`weightflow_jax.train.replicate` first).
    """
    optimizer = make_optimizer(run.config)
    decay = ema_decay(run.config) if ema else None
    state = create_train_state(run.variables["params"], optimizer, key,
                               ema=decay is not None)
    mesh = make_mesh() if mesh is None else mesh
    step = make_train_step(make_loss_fn(run), optimizer, mesh, ema_decay=decay,
                           ema_warmup=True)
    return state, step, mesh


def sampling_variables(state: TrainState) -> dict:
    """``{"params": ...}`` for sampling: the EMA parameters when kept, else the parameters."""
    params = state.ema_params if state.ema_params is not None else state.params
    return {"params": jax.tree.map(jnp.asarray, jax.device_get(params))}
