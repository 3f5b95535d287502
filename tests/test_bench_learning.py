"""The time-to-quality benchmark runs end to end on a seconds-sized config."""

import json
import os

import numpy as np
import pytest

from experiments import bench_learning
from weightflow_jax import pipeline


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


def test_bench_learning_transfer_curve_and_saved_runs(tmp_path):
    """--transfer_arch evaluates another hidden width at every evaluation (equivariant fields
    only); --save_runs leaves a run that load_flow / experiments.sample open."""
    out, runs = str(tmp_path / "bl"), str(tmp_path / "runs")
    argv = ["--task", "breast_cancer", "--size", "test", "--budget", "1", "--eval_every",
            "0.5", "--num", "4", "--sample_steps", "2", "--no-novelty", "--zoo_dir",
            str(tmp_path / "zoo"), "--out", out, "--transfer_arch", "30-24-8-2",
            "--save_runs", runs,
            "--variant", "nt|model.name=neuron_transformer", "--variant", "mlp|model.name=mlp"]
    bench_learning.main(argv)
    payload = json.load(open(out + ".json"))
    nt, flat = payload["results"]
    assert all(0.0 <= p["transfer"]["acc_mean"] <= 1.0 for p in nt["points"])
    assert all("transfer" not in p for p in flat["points"])
    text = open(out + ".md").read()
    assert "30-24-8-2 samples (final)" in text and "— (field not equivariant)" in text
    with np.load(out + "_samples_nt_30-24-8-2.npz") as f:
        assert f["W0"].shape == (4, 24, 30) and f["W1"].shape == (4, 8, 24)
    run = pipeline.load_flow(os.path.join(runs, "nt"))
    assert str(run.config.model.name) == "neuron_transformer"
    res = pipeline.sample_and_evaluate(run, str(tmp_path / "s"), num=2, steps=2,
                                       arch="30-24-8-2")
    assert 0.0 <= res["samples"]["acc_mean"] <= 1.0
    with pytest.raises(SystemExit, match="already holds runs"):
        bench_learning.main(argv)


def test_bench_learning_bad_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown config key 'model.mlp.widht'"):
        bench_learning.apply_overrides(bench_learning.get_base_config(
            "breast_cancer", "geometric", "test"), {"model.mlp.widht": "3"})
    with pytest.raises(ValueError, match="is not key=value"):
        bench_learning.parse_variant("mlp|model.name")
