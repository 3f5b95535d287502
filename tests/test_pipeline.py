"""End-to-end tests of flow training: toy clusters on spheres, resume, the whole command."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import breast_cancer_geometric
from weightflow_jax import flows, pipeline, sampling, train as train_lib
from weightflow_jax.train import recipe
from weightflow_jax.geometry import product

# One hidden neuron: no permutation symmetry, so "near a cluster" needs no alignment.
SIZES = (3, 1, 2)


def _toy_config(steps=300, coupling="exact", model="rt"):
    config = breast_cancer_geometric.get_config("test")
    with config.unlocked():
        config.zoo.arch = "3-1-2"
        config.model.name = model
        config.model.rt.update(dict(num_layers=2, width=16, num_heads=2, time_features=16))
        config.model.compact_rt.update(dict(num_layers=2, width=16, num_heads=2,
                                            time_features=16))
        config.train.update(dict(steps=steps, batch_size=16, learning_rate=3e-3,
                                 warmup_steps=10, checkpoint_every=100, log_every=50))
        config.flow.coupling = coupling
    return config


def _clusters(key, space, n_centers=3, n=240, noise=0.02):
    """Tight clusters around random points of the canonical manifold."""
    k1, k2 = jax.random.split(key)
    centers = jax.vmap(lambda k: flows.sample_prior(k, space, std=1.0))(
        jax.random.split(k1, n_centers))
    centers = jax.vmap(space.retract)(centers._replace(
        log_scale=jnp.array([-1.0, 0.0, 1.0])[:n_centers]))
    which = np.arange(n) % n_centers
    pts = jax.tree.map(lambda c: c[which], centers)
    noise_tree = jax.tree.map(lambda a: noise * jax.random.normal(k2, a.shape), pts)
    pts = jax.tree.map(lambda a, b: a + b, pts, noise_tree)
    pts = jax.vmap(space.retract)(pts)
    return centers, jax.tree.map(np.asarray, pts)


def _nearest_sq_dist(space, xs, centers):
    d = jax.vmap(lambda x: jax.vmap(lambda c: product.sq_dist(space.path_spec, x, c))(centers))(xs)
    return np.asarray(jnp.min(d, axis=1))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    config = _toy_config()
    space = flows.FlowSpace("geometric", SIZES)
    centers, coords = _clusters(jax.random.key(0), space)
    workdir = str(tmp_path_factory.mktemp("toy"))
    run, summary = pipeline.train_flow(config, workdir, space, coords, progress=False)
    return config, space, centers, coords, workdir, run, summary


def test_geometric_flow_learns_clusters_on_spheres(toy_run):
    config, space, centers, coords, workdir, run, summary = toy_run
    metrics = train_lib.read_metrics(workdir)
    assert metrics[-1]["loss"] < 0.5 * metrics[0]["loss"]
    x0 = jax.vmap(lambda k: flows.sample_prior(k, space))(jax.random.split(jax.random.key(5), 64))
    samples = flows.euler_sample(space, run.predict_fn(), x0, 32)
    before = _nearest_sq_dist(space, x0, centers)
    after = _nearest_sq_dist(space, samples, centers)
    spread = _nearest_sq_dist(space, jax.tree.map(jnp.asarray, coords), centers)
    # Samples land near a cluster: >20x closer than the prior draws they started from
    # (measured: prior 7.2, samples 0.12, data spread 0.002 after 300 steps).
    assert np.median(before) > 100 * np.mean(spread)
    assert np.median(after) < 0.05 * np.median(before)
    assert np.median(after) < 0.5
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(samples))


@pytest.mark.parametrize("model", ["mlp"])  # the jit-only NaN of this toy was fixed in sphere.normalize
def test_resumed_run_equals_uninterrupted(toy_run, tmp_path, model):
    config, space, centers, coords, *_ = toy_run
    full = _toy_config(steps=8, model=model)
    with full.unlocked():
        full.train.checkpoint_every = 4
        full.train.ema_decay = 0.9  # the EMA is part of the state and of the samples
    run_a, _ = pipeline.train_flow(full, str(tmp_path / "a"), space, coords, progress=False)
    half = _toy_config(steps=4, model=model)
    with half.unlocked():
        half.train.checkpoint_every = 4
        half.train.ema_decay = 0.9
    pipeline.train_flow(half, str(tmp_path / "b"), space, coords, progress=False)
    run_b, summary = pipeline.train_flow(full, str(tmp_path / "b"), space, coords,
                                         progress=False)
    assert summary.start_step == 4
    for a, b in zip(jax.tree.leaves(run_a.variables), jax.tree.leaves(run_b.variables)):
        np.testing.assert_array_equal(a, b)
    # The reopened run samples with the same EMA variables and standardization statistics.
    loaded = pipeline.load_flow(str(tmp_path / "b"))
    for a, b in zip(jax.tree.leaves(run_a.variables), jax.tree.leaves(loaded.variables)):
        np.testing.assert_array_equal(a, b)
    assert loaded.stats.equals(run_a.stats) and loaded.stats.mode != "none"
    assert loaded.field.name == model
    # Another config in the same workdir is refused, naming the field.
    other = _toy_config(steps=8, model=model)
    with other.unlocked():
        other.train.ema_decay = 0.9
        other.model[model].width = 8
    with pytest.raises(ValueError, match=f"model.{model}.width"):
        pipeline.train_flow(other, str(tmp_path / "b"), space, coords, progress=False)


def test_train_command_end_to_end(tmp_path):
    config = breast_cancer_geometric.get_config("test")
    with config.unlocked():
        config.zoo.dir = str(tmp_path / "zoo")
        config.model.name = "compact_rt"  # equivariant: also samples other hidden widths
    workdir = str(tmp_path / "run")
    pipeline.train_and_evaluate(config, workdir, progress=False)
    for name in ("report.md", "eval.json", "samples.npz", "metrics.jsonl", "config.json"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with np.load(os.path.join(workdir, "samples.npz")) as f:
        assert f["W0"].shape == (config.sample.num, 16, 30)
        assert f["b2"].shape == (config.sample.num, 2)
        assert np.all(np.isfinite(f["W1"]))
    ev = json.load(open(os.path.join(workdir, "eval.json")))
    assert 0.0 <= ev["samples"]["acc_mean"] <= 1.0
    assert ev["train"]["final_step"] == config.train.steps
    assert ev["samples"]["ensemble_sizes"][-1] == config.sample.num
    assert 0.0 <= ev["samples"]["diversity_jsd"] <= np.log(2)
    assert ev["hardware"]["lock_file"]["name"] == pipeline.LOCK_FILE  # names the package lock
    # Sampling a finished run reopens it from its checkpoint, also for other hidden widths.
    run = pipeline.load_flow(workdir)
    assert run.space == flows.FlowSpace("geometric", (30, 16, 16, 2))
    out = str(tmp_path / "wide")
    res = pipeline.sample_and_evaluate(run, out, num=3, steps=2, arch="30-24-8-2", chunk=3)
    with np.load(out + ".npz") as f:
        assert f["W0"].shape == (3, 24, 30) and f["W1"].shape == (3, 8, 24)
    assert res["arch"] == "30-24-8-2"
    assert res["params"][0][0].shape == (3, 24, 30) and "params" not in json.load(
        open(out + ".json"))  # the networks are returned, not written into the JSON
    # Written balanced by default (the file and the JSON say so); exact on request, the
    # same function.
    assert res["representative"] == "balanced" and res["output_scale"] == "flow"
    assert sampling.samples_representative(out + ".npz") == "balanced"
    assert ev["sample_options"]["representative"] == "balanced"
    ex = pipeline.sample_and_evaluate(
        run, str(tmp_path / "exact"), num=3, steps=2, arch="30-24-8-2", chunk=3,
        options=pipeline.sampling_options(run.config.sample, representative="exact"))
    assert ex["samples"]["acc"] == pytest.approx(res["samples"]["acc"])
    assert ex["samples"]["loss"] == pytest.approx(res["samples"]["loss"], rel=1e-4)
    # Guided: the displacement velocity; on the flow's own task the flow's output scale.
    g = pipeline.sample_and_evaluate(run, str(tmp_path / "g"), num=2, steps=2, guidance=1.0,
                                     guidance_batch=8, chunk=2)
    assert (g["flow_velocity"], g["output_scale"], g["guidance_mode"]) == (
        "displacement", "flow", "balanced")
    auto = pipeline.resolve_sampling(pipeline.sampling_options({}), guided=False,
                                     own_task=False)
    assert auto["output_scale"] == 1.0 and auto["flow_velocity"] == "conditional"
    assert pipeline.resolve_sampling(pipeline.sampling_options({}), guided=True,
                                     own_task=False)["output_scale"] == "learn"
    # Bad input: a clear error and nothing written.
    bad = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="input/output widths"):
        pipeline.sample_and_evaluate(run, bad, num=2, steps=2, arch="31-16-16-2")
    with pytest.raises(ValueError, match="task 'mnist' has 784 inputs"):
        pipeline.sample_and_evaluate(run, bad, num=2, steps=2, task="mnist")
    assert not os.path.exists(bad + ".npz") and not os.path.exists(bad + ".json")
    with pytest.raises(ValueError, match="no trained flow"):
        pipeline.load_flow(str(tmp_path / "empty"))
    # A standardizing field's run without its statistics file is refused, saying why.
    os.remove(os.path.join(workdir, recipe.STATS_FILE))
    with pytest.raises(ValueError, match="no field_stats.npz"):
        pipeline.load_flow(workdir)


def test_mlp_field_refuses_other_architectures(tmp_path):
    config = _toy_config(steps=4, model="mlp")
    space = flows.FlowSpace("geometric", SIZES)
    _, coords = _clusters(jax.random.key(1), space, n=32)
    run = recipe.build_flow(config, space, jax.random.key(0),
                            recipe.fit_field_stats(config, coords))
    with pytest.raises(ValueError, match="'mlp' is not permutation-equivariant.*3-1-2.*3-4-2"
                       ".*compact_rt"):
        pipeline.flow_space_for(run, "3-4-2")


def test_run_from_before_fields_by_name_loads(tmp_path):
    """A workdir written before fields by name (flat model fields, no EMA, no stats file)
    reopens as the unstandardized rt it was."""
    config = _toy_config(steps=4, model="rt")
    with config.unlocked():
        config.train.ema_decay = 0.0
    space = flows.FlowSpace("geometric", SIZES)
    _, coords = _clusters(jax.random.key(2), space, n=32)
    old = str(tmp_path / "old")
    run, _ = pipeline.train_flow(config, old, space, coords, progress=False)
    os.remove(os.path.join(old, recipe.STATS_FILE))
    cfg = json.load(open(os.path.join(old, "config.json")))
    rt_block = cfg["model"]["rt"]
    assert rt_block["standardize"] == "none"
    cfg["model"] = {k: rt_block[k] for k in ("num_layers", "width", "num_heads", "mlp_ratio",
                                             "attention", "time_features")}
    for k in ("ema_decay", "schedule", "min_lr_ratio"):
        cfg["train"].pop(k)
    json.dump(cfg, open(os.path.join(old, "config.json"), "w"))
    loaded = pipeline.load_flow(old)
    assert loaded.field.name == "rt"
    for a, b in zip(jax.tree.leaves(run.variables), jax.tree.leaves(loaded.variables)):
        np.testing.assert_array_equal(a, b)
    cfg["model"]["bogus"] = 1
    json.dump(cfg, open(os.path.join(old, "config.json"), "w"))
    with pytest.raises(ValueError, match="bogus"):
        pipeline.load_flow(old)


def test_report_says_what_pair_alignment_cannot_do_for_mlp():
    """The report of a non-equivariant field says what pair alignment cannot do for it."""
    mlp_cfg = _toy_config(steps=4, model="mlp")
    with mlp_cfg.unlocked():
        mlp_cfg.flow.pair_alignment = "weight_matching"
    text = pipeline._report(mlp_cfg, {
        "config_name": "x", "size": "test", "arch": "3-4-2", "num_training_snapshots": 1,
        "model": "mlp", "model_params": 1, "equivariant": False,
        "train": {"final_step": 1, "steps_per_sec": 1.0, "peak_rss_mb": 1.0},
        "samples": _EV, "target_final_snapshots": _EV, "sample_seconds": 0.0,
        "wall_seconds": 0.0, "hardware": {"backend": "cpu", "devices": ["cpu"]}})
    assert "cannot make the non-equivariant field `mlp`" in text


_EV = {"num": 1, "acc_mean": 0.5, "acc_std": 0.0, "loss_mean": 1.0, "loss_std": 0.0,
       "ensemble_acc": 0.5, "diversity_jsd": 0.0}


def test_loss_conditioned_run_end_to_end(tmp_path):
    """flow.condition=train_loss: trained on the zoo's recorded training losses, reopened,
    sampled with a prompt and a guidance weight (library and command line), recorded."""
    import subprocess
    import sys

    config = breast_cancer_geometric.get_config("test")
    with config.unlocked():
        config.zoo.dir = str(tmp_path / "zoo")
        config.model.name = "mlp"
        config.flow.condition = "train_loss"
    workdir = str(tmp_path / "run")
    ev = pipeline.train_and_evaluate(config, workdir, progress=False)
    stored = json.load(open(os.path.join(workdir, recipe.CONDITION_FILE)))
    assert stored["kind"] == "train_loss"
    assert stored["prompts"]["best"] <= stored["prompts"]["final"] <= stored["prompts"]["max"]
    assert ev["condition"]["prompt"] == "final"
    assert ev["condition"]["value"] == pytest.approx(stored["prompts"]["final"])
    assert np.isfinite(ev["samples"]["train_loss_mean"])
    run = pipeline.load_flow(workdir)
    assert run.conditioner.to_dict() == stored
    res = pipeline.sample_and_evaluate(
        run, str(tmp_path / "best"), num=2, steps=2, chunk=2,
        options=pipeline.sampling_options(run.config.sample, condition="best",
                                          condition_weight=2.0))
    info = res["condition_info"]
    assert (info["prompt"], info["weight"]) == ("best", 2.0)
    assert info["value"] == pytest.approx(stored["prompts"]["best"])
    assert (res["condition"], res["condition_weight"]) == ("best", 2.0)
    bad = str(tmp_path / "bad")
    with pytest.raises(ValueError, match="neither a number nor one of"):
        pipeline.sample_and_evaluate(
            run, bad, num=2, steps=2, options=pipeline.sampling_options(
                run.config.sample, condition="lowest"))
    assert not os.path.exists(bad + ".npz") and not os.path.exists(bad + ".json")
    # The command line: a numeric prompt and a weight, written into the JSON.
    out = str(tmp_path / "cli")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.sample", f"--workdir={workdir}", "--num=2",
         "--steps=2", "--chunk=2", "--condition=0.25", "--condition_weight=1.5",
         f"--out={out}"], capture_output=True, text=True, timeout=600,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.load(open(out + ".json"))
    assert got["condition_info"]["value"] == 0.25 and got["condition_info"]["weight"] == 1.5
    assert "condition train_loss = 0.25" in proc.stdout
    # A conditioned run without its condition file is refused, saying why.
    os.remove(os.path.join(workdir, recipe.CONDITION_FILE))
    with pytest.raises(ValueError, match="no condition.json"):
        pipeline.load_flow(workdir)


def test_total_train_seconds_over_resumed_runs():
    from types import SimpleNamespace as S
    fresh = S(start_step=0, wall_time_s=12.0)
    assert pipeline.total_train_seconds(fresh, None) == 12.0
    resampled = S(start_step=100, wall_time_s=0.5)   # a finished run re-sampled
    prev = {"train": {"final_step": 100, "wall_time_s": 40.0}}
    assert pipeline.total_train_seconds(resampled, prev) == 40.5
    prev["train"]["total_wall_time_s"] = 90.0         # its own total already summed
    assert pipeline.total_train_seconds(resampled, prev) == 90.5
    # Resumed from a checkpoint no record covers (interrupted before evaluation): unknown.
    assert pipeline.total_train_seconds(resampled, None) is None
    assert pipeline.total_train_seconds(S(start_step=50, wall_time_s=3.0), prev) is None


def test_prepare_data_aligns_to_the_template_when_asked(tmp_path):
    """``flow.template_iters`` > 0 aligns the zoo to an iterated template (reference index
    -1), and the bench builds a variant's own data for it instead of reusing the base's."""
    from weightflow_jax.benchmarks import learning

    config = breast_cancer_geometric.get_config("test")
    config.zoo.dir = str(tmp_path / "zoo")
    *_, pre = pipeline.prepare_data(config, progress=False)
    assert pre.reference_index >= 0
    key = learning.data_key(config)
    config.flow.template_iters = 2
    space, coords, zoo, pre_t = pipeline.prepare_data(config, progress=False)
    assert pre_t.reference_index == -1 and pre_t.key != pre.key
    assert coords.layers[0][0].shape[0] == zoo.num_snapshots
    assert learning.data_key(config) != key
    config.flow.template_iters = -1
    with pytest.raises(ValueError, match="template_iters must be >= 0"):
        pipeline.prepare_data(config, progress=False)
    config.flow.template_iters = 0
    config.flow.align_scope = "run"
    *_, pre_r = pipeline.prepare_data(config, progress=False)
    assert pre_r.key.endswith("-perrun-exact") and learning.data_key(config) != key
    config.flow.align_scope = "runs"
    with pytest.raises(ValueError, match="align_scope must be one of"):
        pipeline.prepare_data(config, progress=False)
    config.flow.align_scope = "snapshot"
    config.flow.template_iters = 2
    before = learning.data_key(config)
    config.train.steps = 7  # training settings share the prepared data
    assert learning.data_key(config) == before
