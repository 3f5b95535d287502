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
import json
import math
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
from weightflow_jax.train import checkpoint
from weightflow_jax.train.state import TrainState, create_train_state
from weightflow_jax.train.step import TrainStep, make_mesh, make_train_step

__all__ = ["FlowRun", "flow_space", "build_flow", "condition_kind", "fit_conditioner",
           "CONDITION_FILE", "save_conditioner", "load_conditioner", "conditioned_predict_fn", "STATS_FILE", "fit_field_stats",
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

    @property
    def conditioner(self) -> models_lib.Conditioner | None:
        """The field's condition (``None``: an unconditioned flow)."""
        return self.field.spec.condition

    def predict_fn(self, space: flows.FlowSpace | None = None, *,
                   condition: float | None = None, condition_weight: float = 1.0):
        """``(x_batch, t) -> raw output`` for sampling, optionally on another architecture.

        Args:
          condition: a conditioned flow's prompt in raw units (e.g. a train loss; see
            :meth:`Conditioner.resolve`); ``None`` samples unconditionally (null condition).
          condition_weight: classifier-free guidance weight ``w``:
            ``pred_null + w (pred_cond - pred_null)``; ``1`` = the conditional field alone.
        Raises:
          ValueError: a condition for an unconditioned flow, or a non-finite weight.
        """
        if space is not None:
            self.field.check_sizes(space.sizes)
        if condition is None:
            cond = None
        elif self.conditioner is None:
            raise ValueError("this flow was trained without a condition (flow.condition="
                             "'none'); sample it without --condition")
        else:
            cond = jnp.float32(condition)
        return conditioned_predict_fn(self.field, self.variables, cond,
                                      float(condition_weight))


def conditioned_predict_fn(fld: models_lib.Field, variables: Any, cond: jax.Array | None,
                           weight: float = 1.0):
    """``(x, t) -> prediction`` of ``fld`` with classifier-free guidance on ``cond``.

    ``weight == 1`` (or no condition) evaluates the field once; otherwise twice, with the
    prompt and with the null condition, and returns ``null + weight * (cond - null)``.
    """
    if not math.isfinite(weight):
        raise ValueError(f"condition_weight must be finite, got {weight}")
    if cond is None or weight == 1.0:
        return lambda x, t: fld.apply(variables, x, t, cond)

    def predict(x, t):
        pc = fld.apply(variables, x, t, cond)
        pu = fld.apply(variables, x, t, None)
        return jax.tree.map(lambda u, c: u + weight * (c - u), pu, pc)

    return predict


def flow_space(config: ml_collections.ConfigDict) -> flows.FlowSpace:
    """The flow space of ``config``: ``flow.kind`` on ``zoo.arch`` in ``flow.canonical_mode``
    with ``flow.prior``."""
    return flows.FlowSpace(str(config.flow.kind), mlp.parse_arch(str(config.zoo.arch)),
                           str(config.flow.canonical_mode),
                           str(checkpoint.config_field(config, "flow.prior")))


STATS_FILE = "field_stats.npz"


def condition_kind(config: ml_collections.ConfigDict) -> str:
    """``config.flow.condition`` (``none`` for configs that predate conditioning), checked."""
    return models_lib.conditioning.check_condition(str(config.flow.get("condition", "none")))


def fit_conditioner(config: ml_collections.ConfigDict, zoo) -> models_lib.Conditioner | None:
    """The :class:`Conditioner` of ``config.flow.condition`` fitted on ``zoo``'s recorded
    training-split metric (``None`` for an unconditioned flow). The values follow the zoo's
    snapshot order, the order of :func:`weightflow_jax.pipeline.prepare_data`'s coords."""
    kind = condition_kind(config)
    if kind == "none":
        return None
    if kind not in zoo.metrics:
        raise ValueError(f"the zoo at {zoo.path} records no {kind!r}; rebuild it")
    return models_lib.Conditioner.fit(kind, zoo.metrics[kind], zoo.final_indices())


CONDITION_FILE = "condition.json"


def save_conditioner(workdir: str, cond: models_lib.Conditioner | None) -> None:
    """Writes ``workdir/condition.json`` atomically (nothing for an unconditioned flow)."""
    if cond is not None:
        atomic.write_text(os.path.join(workdir, CONDITION_FILE), cond.to_json())


def load_conditioner(workdir: str) -> models_lib.Conditioner | None:
    """The conditioner stored with a run, or ``None`` when it has none."""
    path = os.path.join(workdir, CONDITION_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return models_lib.Conditioner.from_dict(json.load(f))


def build_flow(config: ml_collections.ConfigDict, space: flows.FlowSpace, key: jax.Array,
               stats: models_lib.Standardizer | None = None,
               condition: models_lib.Conditioner | None = None) -> FlowRun:
    """The field named ``config.model.name`` for ``space`` and freshly initialised variables.

    Args:
      stats: the field's standardization statistics (:func:`fit_field_stats`); ``None``
        uses neutral ones (mean 0, std 1) — for benchmarks without a training set.
      condition: the conditioner of a conditioned flow (:func:`fit_conditioner`); ``None``
        with ``flow.condition != 'none'`` uses a neutral one (mean 0, std 1, no prompts).
    Raises:
      ValueError: a conditioner given for an unconditioned config, or of another metric.
    """
    if stats is None:
        stats = models_lib.Standardizer.neutral(models_lib.stats_mode(config.model),
                                                space.sizes, space.has_scale)
    kind = condition_kind(config)
    if kind == "none" and condition is not None:
        raise ValueError("a conditioner was given but config.flow.condition is 'none'")
    if kind != "none":
        if condition is None:
            condition = models_lib.Conditioner(kind, 0.0, 1.0, {})
        elif condition.kind != kind:
            raise ValueError(f"the conditioner is for {condition.kind!r} but "
                             f"config.flow.condition is {kind!r}")
    fld = field.make_field(config.model, space, str(config.flow.parameterization), stats,
                           condition)
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
    coupled), plus ``"c"`` ``(n,)`` for a conditioned flow (``NaN`` = dropped condition);
    times are drawn inside from ``rng``.
    """
    cfg = run.config.flow
    space = run.space
    param = str(cfg.parameterization)
    weighting = str(checkpoint.config_field(run.config, "flow.loss_weighting"))
    if weighting not in flows.LOSS_WEIGHTINGS:
        raise ValueError(f"flow.loss_weighting must be one of {flows.LOSS_WEIGHTINGS}, got "
                         f"{weighting!r}")

    def loss_fn(params, batch, rng):
        x0, x1 = batch["x0"], batch["x1"]
        n = x0.layers[0][0].shape[0]
        t = flows.sample_time(rng, (n,), str(cfg.time_distribution), float(cfg.time_a),
                              float(cfg.time_b))
        xt = jax.vmap(lambda a, b, s: flows.interpolate(space, a, b, s))(x0, x1, t)
        pred = run.field.apply({"params": params}, xt, t, batch.get("c"))
        losses = jax.vmap(lambda p, a, b, c, s: flows.cfm_loss(space, p, a, b, c, s, param,
                                                               weighting))(
            pred, x0, x1, xt, t)
        return jnp.mean(losses), {"t_mean": jnp.mean(t)}

    return loss_fn


def make_batch_fn(run: FlowRun, coords: Canonical, key: jax.Array,
                  conditions: np.ndarray | None = None):
    """``batch_fn(step)``: a coupled batch that depends only on ``step`` (resumable).

    With ``flow.pair_alignment="weight_matching"`` every chosen target is then permuted to
    match its prior draw (:func:`weightflow_jax.flows.align_pairs`).

    Args:
      conditions: a conditioned flow's raw condition value of every training network
        (``(N,)``, the order of ``coords``); each batch carries its targets' values as
        ``"c"`` (reordered with the coupling), a fraction ``flow.condition_dropout`` of them
        replaced by ``NaN`` (the null condition of classifier-free guidance). With
        ``flow.condition_balance > 0`` targets are drawn with replacement, networks of rare
        values more often (:meth:`Conditioner.sampling_probs`).
    Raises:
      ValueError: a conditioned flow without ``conditions`` (or of the wrong length),
        ``conditions`` for an unconditioned one, or a balance outside ``[0, 1]`` (or set
        for an unconditioned flow).
    """
    cfg, tcfg = run.config.flow, run.config.train
    space = run.space
    n_data = int(coords.layers[0][0].shape[0])
    balance = float(checkpoint.config_field(run.config, "flow.condition_balance"))
    probs = None
    if run.conditioner is not None:
        if conditions is None:
            raise ValueError(f"flow.condition={run.conditioner.kind!r} needs the training "
                             "networks' values (make_batch_fn(..., conditions=...))")
        conditions = np.asarray(conditions, np.float32).reshape(-1)
        if conditions.shape[0] != n_data:
            raise ValueError(f"{conditions.shape[0]} condition values for {n_data} training "
                             "networks")
        drop = float(cfg.get("condition_dropout", 0.1))
        if not 0.0 <= drop < 1.0:
            raise ValueError(f"flow.condition_dropout={drop} must be in [0, 1)")
        if balance != 0.0:
            probs = run.conditioner.sampling_probs(conditions, balance)
    elif conditions is not None:
        raise ValueError("condition values given for an unconditioned flow "
                         "(flow.condition='none')")
    elif balance != 0.0:
        raise ValueError("flow.condition_balance balances a conditioned flow's draws over "
                         "its condition; set flow.condition (train_loss | train_acc) or "
                         "leave the balance at 0")
    bsz = int(tcfg.batch_size)
    std = float(cfg.prior_std)
    prior = jax.jit(lambda k: jax.vmap(lambda kk: flows.sample_prior(kk, space, std))(
        jax.random.split(k, bsz)))
    seed = int(run.config.seed)
    pair_alignment = flows.check_pair_alignment(str(cfg.get("pair_alignment", "none")))

    def batch_fn(step: int):
        rng = np.random.default_rng((seed, 7, int(step)))
        if probs is None:
            idx = rng.choice(n_data, size=bsz, replace=n_data < bsz)
        else:   # flow.condition_balance > 0: rare condition values drawn more often
            idx = rng.choice(n_data, size=bsz, replace=True, p=probs)
        x1 = jax.tree.map(lambda a: a[idx], coords)
        k = jax.random.fold_in(key, int(step))
        x0 = prior(k)
        x1, order = flows.couple(str(cfg.coupling), jax.random.fold_in(k, 1), space, x0, x1,
                                 float(cfg.sinkhorn_epsilon), return_index=True)
        if pair_alignment == "weight_matching":
            x1, _ = flows.align_pairs(space, x0, x1)
        batch = {"x0": x0, "x1": x1}
        if conditions is not None:
            c = conditions[idx][np.asarray(order)]
            c = np.where(rng.random(bsz) < drop, np.float32(np.nan), c).astype(np.float32)
            batch["c"] = jnp.asarray(c)
        return batch

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
