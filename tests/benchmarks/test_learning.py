"""The time-to-quality benchmark (weightflow_jax/benchmarks/learning.py and its command line
experiments/bench_learning.py) runs end to end on a seconds-sized config."""

import json
import os

import numpy as np
import pytest

from experiments import bench_learning
from weightflow_jax import pipeline
from weightflow_jax.benchmarks import learning
from weightflow_jax.tables import overrides


def test_bench_learning_table_plot_samples_transfer_curve_and_saved_runs(tmp_path):
    """One run of the benchmark on a seconds-sized config: a per-variant budget, the table,
    plot and samples; --transfer_arch evaluates another hidden width at every evaluation
    (equivariant fields only); --save_runs leaves runs that load_flow / experiments.sample
    open (one test: both halves need the same zoo and compiled fields)."""
    out, runs = str(tmp_path / "bl"), str(tmp_path / "runs")
    argv = ["--task", "breast_cancer", "--size", "test", "--budget", "1.5", "--eval_every",
            "0.5", "--num", "4", "--sample_steps", "2", "--no-novelty", "--zoo_dir",
            str(tmp_path / "zoo"), "--out", out, "--transfer_arch", "30-24-8-2",
            "--save_runs", runs,
            "--variant", "nt|model.name=neuron_transformer",
            "--variant", "mlp|model.name=mlp|budget=1"]
    bench_learning.main(argv)
    payload = json.load(open(out + ".json"))
    assert [r["label"] for r in payload["results"]] == ["nt", "mlp"]
    for r in payload["results"]:
        assert r["points"] and r["steps_done"] >= 1
        assert all(0.0 <= p["acc_mean"] <= 1.0 for p in r["points"])
        secs = [p["train_seconds"] for p in r["points"]]
        assert secs == sorted(secs)
    nt, flat = payload["results"]
    assert flat["budget"] == 1.0
    assert all(0.0 <= p["transfer"]["acc_mean"] <= 1.0 for p in nt["points"])
    assert all("transfer" not in p for p in flat["points"])
    text = open(out + ".md").read()
    assert "| mlp | `mlp` |" in text and "| nt | `neuron_transformer` |" in text
    assert "30-24-8-2 samples (final)" in text and "— (field not equivariant)" in text
    assert os.path.getsize(out + ".png") > 1000
    with np.load(out + "_samples_mlp.npz") as f:
        assert f["W0"].shape == (4, 16, 30)
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
    """A misspelt key fails before any zoo is built, naming the variant flag and the fields."""
    with pytest.raises(ValueError, match="--variant model.mlp.widht: model.mlp has no field "
                       "'widht'; its fields: .*width"):
        learning.run(learning.Settings(size="test", variant=["mlp|model.mlp.widht=3"]))
    with pytest.raises(ValueError, match="is not key=value"):
        overrides.parse_variant("mlp|model.name")
    with pytest.raises(ValueError, match="empty variant"):
        overrides.parse_variant(" | ")
    assert overrides.parse_variant("crt|model.name=compact_rt|budget=1") == (
        "crt", [("model.name", "compact_rt"), ("budget", "1")])
