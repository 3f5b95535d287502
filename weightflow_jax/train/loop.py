"""The training loop: resume, step, log, checkpoint, stop on a non-finite loss.

The loop knows nothing about the model. It is given a state, a train step
(:func:`weightflow_jax.train.make_train_step`) and a *batch function*:

**Batch contract.** ``batch_fn(step) -> batch`` returns the global batch for the update that
takes the state from ``step`` to ``step + 1`` (``step`` counts from 0). It must be a pure
function of ``step`` -- e.g. draw indices with ``jax.random.fold_in(data_key, step)`` or a
``numpy.random.default_rng((seed, step))``, never from an iterator's hidden position -- so that
a run resumed from a checkpoint at step ``s`` sees exactly the batches ``s, s+1, ...`` that the
uninterrupted run saw, and ends with the same parameters. On several processes every process
calls ``batch_fn(step)`` and must get the same global batch (each keeps only its own rows).

Timing of the side effects, with ``done = step + 1`` the number of updates finished:
  * hooks run after every update as ``hook(done, state, metrics)`` (the state is donated to the
    next step: a hook must not keep it); a hook may raise :class:`StopTraining` to end the run
    cleanly (a checkpoint is saved at ``done``); any other exception ends the run without a
    save, leaving the last checkpoint as the point to resume from;
  * metrics are fetched (one device sync) every ``log_every`` updates and before every save,
    and checked: a NaN/Inf ``loss`` or ``grad_norm`` raises :class:`NonFiniteLossError` and the
    bad state is not saved; the mean of each metric over the interval is logged;
  * checkpoints every ``checkpoint_every`` updates and at ``num_steps``.
"""

from __future__ import annotations

import dataclasses
import math
import resource
import sys
import time
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np

from weightflow_jax.train.checkpoint import (DEFAULT_SAFE_FIELDS, CheckpointStore,
                                             check_config_compatible, save_config)
from weightflow_jax.train.metric_log import MetricWriter, ProgressBar
from weightflow_jax.train.state import TrainState, replicate
from weightflow_jax.train.step import make_mesh, shard_batch

PyTree = Any
BatchFn = Callable[[int], PyTree]
Hook = Callable[[int, TrainState, Mapping[str, jax.Array]], None]

CHECKED_METRICS = ("loss", "grad_norm")


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN or Inf; the run was stopped without saving.

    Attributes:
      step: the number of the update (1-based, as in the logs) whose metrics were not finite.
      metrics: that update's metrics as Python floats.
      last_checkpoint: the newest checkpoint step left on disk (``None`` if none).
    """

    def __init__(self, step: int, metrics: Mapping[str, float], last_checkpoint: int | None):
        self.step = step
        self.metrics = dict(metrics)
        self.last_checkpoint = last_checkpoint
        bad = [k for k in CHECKED_METRICS if k in metrics and not math.isfinite(metrics[k])]
        shown = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.metrics.items()))
        where = (f"the last good checkpoint is step {last_checkpoint}; the run resumes from it"
                 if last_checkpoint is not None else "no checkpoint was saved before it")
        super().__init__(
            f"non-finite {' and '.join(bad)} at step {step} (metrics: {shown}); training "
            f"stopped and this state was not saved; {where}. Lower the learning rate, clip "
            f"gradients, or check the data.")


class StopTraining(Exception):
    """Raise from a hook to end the run cleanly at the current step (a checkpoint is saved)."""


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What :func:`train_loop` did.

    Attributes:
      start_step: the step the run began (or resumed) from.
      final_step: the step of the returned state.
      steps_run: updates done in this call.
      wall_time_s: seconds spent in the loop (including the first step's compilation).
      steps_per_sec: updates per second after the first one (compilation excluded); ``nan``
        when fewer than two updates ran.
      peak_rss_mb: peak resident memory of this process so far (``resource.getrusage``), MiB.
      last_metrics: the last logged metrics (interval means), Python floats.
      stopped_early: a hook raised :class:`StopTraining`.
      last_checkpoint: the newest checkpoint step on disk at the end.
    """

    start_step: int
    final_step: int
    steps_run: int
    wall_time_s: float
    steps_per_sec: float
    peak_rss_mb: float
    last_metrics: dict
    stopped_early: bool
    last_checkpoint: int | None

    def as_dict(self) -> dict:
        """The summary as a plain (JSON-able) dict."""
        return dataclasses.asdict(self)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss``: KiB on Linux, B on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def _check_positive(name: str, value: int, minimum: int = 1) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"train_loop: {name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _first_non_finite(steps: Sequence[int], metrics: Sequence[Mapping[str, Any]]):
    for step, m in zip(steps, metrics):
        if any(k in m and not np.isfinite(m[k]) for k in CHECKED_METRICS):
            return step, {k: float(v) for k, v in m.items()}
    return None


def train_loop(state: TrainState, train_step: Callable, batch_fn: BatchFn, *, num_steps: int,
               workdir: str, checkpoint_every: int, log_every: int, config: Any = None,
               hooks: Iterable[Hook] = (), max_to_keep: int | None = 3,
               mesh: jax.sharding.Mesh | None = None, progress: bool = True,
               safe_config_fields: Iterable[str] = DEFAULT_SAFE_FIELDS,
               async_checkpoint: bool = False) -> tuple[TrainState, TrainSummary]:
    """Trains ``state`` up to ``num_steps`` updates, resuming from ``workdir`` if it holds a run.

    Args:
      state: a freshly initialised state (:func:`create_train_state`); if ``workdir`` has a
        checkpoint the latest one is restored into its structure instead.
      train_step: ``(state, batch) -> (state, metrics)``, normally from
        :func:`make_train_step` (its ``mesh`` is used); metrics must include ``"loss"``.
      batch_fn: ``batch_fn(step) -> batch`` pure in ``step`` (see the module docstring); each
        batch leaf shaped ``(B, ...)`` with ``B`` divisible by the number of devices.
      num_steps: total number of updates of the run (not of this call).
      workdir: run directory (checkpoints, ``config.json``, ``metrics.jsonl``, event files).
      checkpoint_every: save every this many updates (and always at ``num_steps``).
      log_every: fetch, check and log metrics every this many updates.
      config: the run's config (dict or ``ml_collections.ConfigDict``); when given, a workdir
        holding another config is refused (:func:`check_config_compatible`) and the config is
        stored in ``workdir/config.json``.
      hooks: callables ``hook(step, state, metrics)`` run after every update (see above).
      max_to_keep: number of latest checkpoints kept (``None``: all).
      mesh: device mesh; default ``train_step.mesh`` or all devices.
      progress: show a tqdm progress bar (process 0 only).
      safe_config_fields: config fields allowed to differ on resume.
      async_checkpoint: write checkpoints in a background thread.

    Returns:
      ``(state, summary)``: the state after ``num_steps`` updates (or where a hook stopped the
      run) and a :class:`TrainSummary`.

    Raises:
      NonFiniteLossError: a NaN/Inf loss or gradient norm; checkpoints on disk are untouched.
      ConfigMismatchError: ``workdir`` holds a run of a different config.
    """
    num_steps = _check_positive("num_steps", num_steps, minimum=0)
    checkpoint_every = _check_positive("checkpoint_every", checkpoint_every)
    log_every = _check_positive("log_every", log_every)
    hooks = tuple(hooks)
    mesh = mesh or getattr(train_step, "mesh", None) or make_mesh()

    if config is not None:
        check_config_compatible(workdir, config, safe_fields=safe_config_fields)
        save_config(workdir, config)

    t_start = time.perf_counter()
    state = replicate(state, mesh)
    store = CheckpointStore(workdir, max_to_keep=max_to_keep, async_save=async_checkpoint)
    writer = bar = None
    try:
        state = store.restore_or_init(state)
        start_step = int(jax.device_get(state.step))
        if start_step > num_steps:
            warnings.warn(f"train_loop: the checkpoint in {workdir} is at step {start_step}, "
                          f"past num_steps={num_steps}; returning it unchanged.")
        writer = MetricWriter(workdir, truncate_after=start_step)
        bar = ProgressBar(total=num_steps, initial=min(start_step, num_steps),
                          enabled=None if progress else False)

        unchecked_steps: list[int] = []
        unchecked: list[Mapping[str, jax.Array]] = []
        to_log: list[Mapping[str, Any]] = []
        last_metrics: dict = {}
        stopped = False
        t_first = None
        t_log, step_log = time.perf_counter(), start_step
        done = start_step

        def check_pending() -> None:
            """Fetches the metrics not yet checked; raises on a non-finite loss."""
            host = jax.device_get(unchecked)
            bad = _first_non_finite(unchecked_steps, host)
            if bad is not None:
                raise NonFiniteLossError(bad[0], bad[1], store.latest_step())
            to_log.extend(host)
            unchecked_steps.clear()
            unchecked.clear()

        for step in range(start_step, num_steps):
            batch = shard_batch(batch_fn(step), mesh)
            state, metrics = train_step(state, batch)
            done = step + 1
            if t_first is None:
                jax.block_until_ready(metrics)
                t_first = time.perf_counter()
            unchecked_steps.append(done)
            unchecked.append(metrics)
            try:
                for hook in hooks:
                    hook(done, state, metrics)
            except StopTraining:
                stopped = True
            is_log = done % log_every == 0 or done == num_steps or stopped
            is_ckpt = done % checkpoint_every == 0 or done == num_steps or stopped
            if is_log or is_ckpt:
                check_pending()
            if is_log:
                now = time.perf_counter()
                rate = (done - step_log) / max(now - t_log, 1e-9)
                t_log, step_log = now, done
                last_metrics = {k: float(np.mean([m[k] for m in to_log])) for k in to_log[0]}
                to_log.clear()
                writer.write_scalars(done, {**last_metrics, "steps_per_sec": rate})
                bar.update(done, last_metrics.get("loss"), rate)
            if is_ckpt:
                t_save = time.perf_counter()
                store.save(done, state)
                t_log += time.perf_counter() - t_save  # keep saving out of steps/s
            if stopped:
                break

        jax.block_until_ready(state)
        t_end = time.perf_counter()
        steps_run = done - start_step
        store.wait()
        summary = TrainSummary(
            start_step=start_step, final_step=done, steps_run=steps_run,
            wall_time_s=t_end - t_start,
            steps_per_sec=((steps_run - 1) / (t_end - t_first)
                           if steps_run >= 2 and t_end > t_first else float("nan")),
            peak_rss_mb=peak_rss_mb(), last_metrics=last_metrics, stopped_early=stopped,
            last_checkpoint=store.latest_step())
        return state, summary
    finally:
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        store.close()
