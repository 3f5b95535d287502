"""MetricWriter: metrics.jsonl and TensorBoard event files (read back without TensorFlow)."""

import glob
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from weightflow_jax import train


def read_events(workdir) -> dict[str, list[tuple[int, float]]]:
    """Parses every events.out.tfevents.* file (TFRecord framing) into {tag: [(step, v)]}."""
    out: dict[str, list[tuple[int, float]]] = {}
    files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
    assert files, f"no event file in {workdir}"
    for path in files:
        data = open(path, "rb").read()
        i = 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((event.step, value.simple_value))
    return out


def test_writes_jsonl_and_events(tmp_path):
    with train.MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": 2.5, "acc": np.float32(0.25)})
        writer.write_scalars(2, {"loss": np.array(1.5), "acc": float("nan")})
        # The JSON line is on disk before close (flushed per line).
        assert len(train.read_metrics(tmp_path)) == 2
    records = train.read_metrics(tmp_path)
    assert records == [{"step": 1, "loss": 2.5, "acc": 0.25},
                       {"step": 2, "loss": 1.5, "acc": "nan"}]
    events = read_events(tmp_path)
    assert events["loss"] == [(1, 2.5), (2, 1.5)]
    assert events["acc"][0] == (1, 0.25) and np.isnan(events["acc"][1][1])
    writer.close()  # closing twice is fine
    with pytest.raises(ValueError, match="after close"):
        writer.write_scalars(3, {"loss": 1.0})


def test_truncate_after_drops_lines_past_the_resume_step(tmp_path):
    with train.MetricWriter(tmp_path, tensorboard=False) as writer:
        for step in (5, 10, 15):
            writer.write_scalars(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 20, "loss"')  # a line cut short by a crash
    with train.MetricWriter(tmp_path, tensorboard=False, truncate_after=10) as writer:
        writer.write_scalars(15, {"loss": -1.0})
    assert [(r["step"], r["loss"]) for r in train.read_metrics(tmp_path)] == [
        (5, 5.0), (10, 10.0), (15, -1.0)]


def test_disabled_writer_writes_nothing_and_bad_values_fail(tmp_path):
    with train.MetricWriter(tmp_path / "off", enabled=False) as writer:
        writer.write_scalars(1, {"loss": 1.0})
    assert not (tmp_path / "off").exists()
    with train.MetricWriter(tmp_path, tensorboard=False) as writer:
        with pytest.raises(ValueError, match="metric 'v' must be a scalar"):
            writer.write_scalars(1, {"v": np.ones(3)})


def test_progress_bar_runs_silently_when_disabled():
    bar = train.ProgressBar(total=10, initial=2, enabled=False)
    bar.update(5, loss=0.5, steps_per_sec=12.0)
    bar.update(5)
    assert bar._n == 5
    bar.close()
