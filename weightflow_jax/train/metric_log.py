"""Metric logging: TensorBoard event files (tensorboardX, no TensorFlow) and ``metrics.jsonl``.

``metrics.jsonl`` holds one JSON object per logged step, ``{"step": s, "<name>": value, ...}``,
flushed after every line so that a crashed run keeps its log. Only process 0 writes (on the
others the writer is a no-op).

Also a small tqdm progress bar that shows the loss and steps/s.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def _scalar(name: str, value: Any) -> float:
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"MetricWriter: metric {name!r} must be a scalar, got shape "
                         f"{arr.shape}.")
    return float(arr.reshape(()))


def _json_number(x: float) -> float | str:
    """JSON has no NaN/Inf; write them as the strings "nan", "inf", "-inf"."""
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


class MetricWriter:
    """Writes scalar metrics to TensorBoard event files and to ``workdir/metrics.jsonl``.

    Args:
      workdir: directory for ``metrics.jsonl`` and the ``events.out.tfevents.*`` files
        (created if missing).
      truncate_after: when resuming from step ``s``, drop lines of ``metrics.jsonl`` with a step
        greater than ``s`` (logged by the interrupted run after its last checkpoint), so the log
        matches the resumed run. ``None`` keeps the file as is (appending).
      tensorboard: also write TensorBoard event files.
      enabled: write anything at all; default only on process 0.
    """

    def __init__(self, workdir: str | os.PathLike, *, truncate_after: int | None = None,
                 tensorboard: bool = True, enabled: bool | None = None):
        self.workdir = Path(workdir)
        self.enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self.path = self.workdir / METRICS_FILE
        self._tb = None
        self._file = None
        if not self.enabled:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if truncate_after is not None and self.path.exists():
            self._truncate(truncate_after)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: a few hundred ms
            self._tb = SummaryWriter(logdir=str(self.workdir), flush_secs=10)

    def _truncate(self, last_step: int) -> None:
        kept = []
        with open(self.path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a crash
                    continue
                if int(record.get("step", -1)) <= last_step:
                    kept.append(json.dumps(record))
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            f.write("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        """Logs ``scalars`` (name -> scalar number or 0-d/1-element array) at ``step``."""
        if not self.enabled:
            return
        if self._file is None:
            raise ValueError("MetricWriter: write_scalars called after close().")
        values = {str(k): _scalar(k, v) for k, v in scalars.items()}
        record = {"step": int(step)}
        record.update({k: _json_number(v) for k, v in values.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for name, value in values.items():
                self._tb.add_scalar(name, value, global_step=int(step))

    def flush(self) -> None:
        """Pushes buffered TensorBoard events to disk (the JSON log is always flushed)."""
        if self._tb is not None:
            self._tb.flush()
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes both outputs; safe to call twice."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "MetricWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """Reads ``workdir/metrics.jsonl`` back as a list of dicts (one per logged step)."""
    path = Path(workdir) / METRICS_FILE
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class ProgressBar:
    """A tqdm bar over training steps, showing the latest loss and steps/s.

    Args:
      total: the last step of the run.
      initial: the step the run starts (resumes) from.
      enabled: show it at all; default only on process 0.
    """

    def __init__(self, total: int, initial: int = 0, *, enabled: bool | None = None):
        from tqdm.auto import tqdm
        enabled = jax.process_index() == 0 if enabled is None else bool(enabled)
        self._bar = tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                         dynamic_ncols=True, mininterval=0.5)
        self._n = initial

    def update(self, step: int, loss: float | None = None,
               steps_per_sec: float | None = None) -> None:
        """Moves the bar to ``step`` and shows ``loss`` and ``steps_per_sec`` if given."""
        if step > self._n:
            self._bar.update(step - self._n)
            self._n = step
        postfix = {}
        if loss is not None:
            postfix["loss"] = f"{loss:.4g}"
        if steps_per_sec is not None:
            postfix["steps/s"] = f"{steps_per_sec:.3g}"
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        """Closes the bar."""
        self._bar.close()
