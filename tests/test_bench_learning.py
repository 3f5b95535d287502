"""The time-to-quality benchmark runs end to end on a seconds-sized config."""

import json
import os

import numpy as np
import pytest

from experiments import bench_learning


def test_bench_learning_writes_table_plot_and_samples(tmp_path):
    out = str(tmp_path / "bl")
    bench_learning.main([
        "--task", "breast_cancer", "--size", "test", "--budget", "1.5", "--eval_every", "0.5",
        "--num", "4", "--sample_steps", "2", "--no-novelty", "--zoo_dir",
        str(tmp_path / "zoo"), "--out", out,
        "--variant", "mlp|model.name=mlp", "--variant", "crt|model.name=compact_rt|budget=1"])
    payload = json.load(open(out + ".json"))
    labels = [r["label"] for r in payload["results"]]
    assert labels == ["mlp", "crt"]
    for r in payload["results"]:
        assert r["points"] and r["steps_done"] >= 1
        assert all(0.0 <= p["acc_mean"] <= 1.0 for p in r["points"])
        secs = [p["train_seconds"] for p in r["points"]]
        assert secs == sorted(secs)
    assert payload["results"][1]["budget"] == 1.0
    text = open(out + ".md").read()
    assert "| mlp | `mlp` |" in text and "| crt | `compact_rt` |" in text
    assert os.path.getsize(out + ".png") > 1000
    with np.load(out + "_samples_mlp.npz") as f:
        assert f["W0"].shape == (4, 16, 30)


def test_bench_learning_bad_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown config key 'model.mlp.widht'"):
        bench_learning.apply_overrides(bench_learning.get_base_config(
            "breast_cancer", "geometric", "test"), {"model.mlp.widht": "3"})
    with pytest.raises(ValueError, match="is not key=value"):
        bench_learning.parse_variant("mlp|model.name")
