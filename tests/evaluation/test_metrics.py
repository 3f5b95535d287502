"""Tests for accuracy/loss, ensembles, JSD diversity, tables and plots."""

import math
import os

import jax
import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from weightflow_jax import evaluation as ev
from weightflow_jax import mlp

SIZES = (6, 5, 4, 3)


def _nets(n, key=0, sizes=SIZES, w_std=0.7):
    keys = jax.random.split(jax.random.key(key), n)
    p = jax.vmap(lambda k: mlp.init(k, sizes, w_std=w_std, b_std=0.2))(keys)
    return [(np.asarray(w), np.asarray(b)) for w, b in p]


def _task(m=50, key=1):
    rng = np.random.default_rng(key)
    x = rng.normal(size=(m, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], size=m).astype(np.int32)
    return x, y


def _manual(params, x, y):
    accs, losses = [], []
    for i in range(params[0][0].shape[0]):
        h = x.astype(np.float64)
        for l, (w, b) in enumerate(params):
            h = h @ w[i].T.astype(np.float64) + b[i]
            if l < len(params) - 1:
                h = np.maximum(h, 0)
        z = h - h.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        losses.append(-logp[np.arange(len(y)), y].mean())
        accs.append((h.argmax(-1) == y).mean())
    return np.array(accs), np.array(losses)


def test_accuracy_and_loss_match_manual_computation_with_padding():
    params, (x, y) = _nets(7), _task()
    acc, loss = ev.accuracy_and_loss(params, x, y, chunk_size=3)  # 3 + 3 + 1 (padded)
    want_acc, want_loss = _manual(params, x, y)
    assert acc.shape == (7,) and loss.shape == (7,)
    np.testing.assert_allclose(acc, want_acc, atol=1e-6)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    mean, std = ev.mean_std(acc)
    np.testing.assert_allclose([mean, std], [want_acc.mean(), want_acc.std()], rtol=1e-6)
    res = ev.AccuracyEvaluator(x, y, chunk_size=4).run(params)
    np.testing.assert_allclose(res["loss_mean"], want_loss.mean(), rtol=1e-5)
    assert res["num_networks"] == 7 and res["num_finite"] == 7


def test_bad_task_input_names_sizes():
    params, (x, y) = _nets(2), _task()
    with pytest.raises(ValueError, match=r"5 features but the networks take 6 inputs"):
        ev.accuracy_and_loss(params, x[:, :5], y)
    with pytest.raises(ValueError, match=r"labels range over \[0, 7\] but the networks have 3"):
        ev.accuracy_and_loss(params, x[:2], np.array([0, 7]))
    with pytest.raises(ValueError, match="labels must be shaped"):
        ev.ensemble_curve(params, x, y[:-1])
    with pytest.raises(ValueError, match="5 features"):
        ev.diversity(params, x[:, :5])


def test_jsd_properties():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(5), size=20)
    q = rng.dirichlet(np.ones(5), size=20)
    d = np.asarray(ev.jsd(p, q))
    np.testing.assert_allclose(d, [jensenshannon(a, b) ** 2 for a, b in zip(p, q)],
                               rtol=1e-5)
    np.testing.assert_allclose(d, np.asarray(ev.jsd(q, p)), rtol=1e-6)  # symmetric
    assert np.all(np.asarray(ev.jsd(p, p)) == 0)
    assert np.all(d <= math.log(2))
    # disjoint supports reach log 2 exactly; zeros give no NaN
    np.testing.assert_allclose(float(ev.jsd(np.array([1.0, 0, 0]), np.array([0, 0.5, 0.5]))),
                               math.log(2), rtol=1e-6)
    # tiny differences stay accurate in float32 (JSD ~ sum (p-q)^2 / (8 s))
    base = np.array([0.7, 0.2, 0.1], np.float32)
    eps = np.array([1e-3, -1e-3, 0.0], np.float32)
    want = sum((e ** 2) / (4 * b) for e, b in zip(eps.astype(np.float64), base)) / 2
    np.testing.assert_allclose(float(ev.jsd(base + eps / 2, base - eps / 2)), want, rtol=1e-2)
    g = jax.grad(lambda a: ev.jsd(a, np.array([1.0, 0.0, 0.0])))(np.array([0.0, 0.5, 0.5]))
    assert np.all(np.isfinite(np.asarray(g)))


def test_mean_pairwise_jsd():
    params, (x, _) = _nets(5), _task()
    probs = ev.probabilities(params, x)
    got = ev.mean_pairwise_jsd(probs)
    brute = [np.mean([jensenshannon(a, b) ** 2 for a, b in zip(probs[i], probs[j])])
             for i in range(5) for j in range(i + 1, 5)]
    assert got["num_pairs"] == 10
    np.testing.assert_allclose(got["mean"], np.mean(brute), rtol=1e-4)
    same = [(np.repeat(w[:1], 4, 0), np.repeat(b[:1], 4, 0)) for w, b in params]
    assert ev.diversity(same, x)["mean"] == 0.0
    res = ev.DiversityEvaluator(x).run(params)
    np.testing.assert_allclose(res["jsd_mean"], np.mean(brute), rtol=1e-4)
    with pytest.raises(ValueError, match="at least two networks"):
        ev.mean_pairwise_jsd(probs[:1])


def test_ensemble_curve_constructed_case():
    # 80 "networks" each right on a random 60% of 400 points (confident), else a random
    # wrong class: majority voting improves with ensemble size.
    rng = np.random.default_rng(0)
    n, m, c = 80, 400, 3
    y = rng.integers(0, c, m)
    right = rng.random((n, m)) < 0.6
    wrong = (y[None] + rng.integers(1, c, (n, m))) % c
    pred = np.where(right, y[None], wrong)
    probs = np.full((n, m, c), 0.05)
    np.put_along_axis(probs, pred[..., None], 0.9, axis=-1)
    out = ev.ensemble_curve_from_probs(probs, y, num_subsets=5)
    assert out["sizes"].tolist() == list(range(1, 65))
    assert len(out["accuracy"]) == 64 and len(out["subset_accuracy_mean"]) == 64
    np.testing.assert_allclose(out["accuracy"][0], right[0].mean())
    k2 = probs[:2].mean(0)
    np.testing.assert_allclose(out["accuracy"][1], np.mean(k2.argmax(-1) == y))
    assert out["accuracy"][-1] > 0.95 > 0.65 > out["accuracy"][0]
    sub = out["subset_accuracy_mean"]
    assert np.all(np.diff(sub[::8]) > -0.01)  # monotone-ish
    assert out["nll"][-1] < out["nll"][0]
    short = ev.ensemble_curve_from_probs(probs[:5], y)
    assert short["sizes"].tolist() == [1, 2, 3, 4, 5]


def test_ensemble_evaluator_on_networks():
    params, (x, y) = _nets(6), _task()
    res = ev.EnsembleEvaluator(x, y, max_size=4).run(params)
    assert res["sizes"] == [1, 2, 3, 4] and res["final_size"] == 4
    probs = ev.probabilities([(w[:4], b[:4]) for w, b in params], x).mean(0)
    np.testing.assert_allclose(res["final_accuracy"], np.mean(probs.argmax(-1) == y))


def test_tables():
    assert ev.format_mean_std(0.73712, 0.0851) == "0.737±0.085"
    assert ev.format_value(None) == "–"
    assert ev.format_value(np.array([1.0, 3.0]), 1) == "2.0±1.0"
    assert ev.format_value(0.00102, 5) == "0.00102"
    assert ev.format_value(7) == "7"
    table = ev.results_table(
        {"Geometric": {"accuracy": (0.786, 0.064), "loss": np.array([1.0, 2.0])},
         "Target": {"accuracy": (0.933, 0.009), "diversity": 2e-5}},
        ["accuracy", "loss", "diversity"], digits={"diversity": 5})
    assert table == ("| method | accuracy | loss | diversity |\n"
                     "|---|---|---|---|\n"
                     "| Geometric | 0.786±0.064 | 1.500±0.500 | – |\n"
                     "| Target | 0.933±0.009 | – | 0.00002 |\n")
    with pytest.raises(ValueError, match="row 0 has 1 cells but the header has 2"):
        ev.markdown_table(["a", "b"], [["x"]])


def test_plots_write_png(tmp_path):
    png = b"\x89PNG"
    paths = [
        ev.plot_ensemble_curve(str(tmp_path / "ens.png"),
                               {"flow": ([1, 2, 4], [0.7, 0.8, 0.85])}, hlines={"target": 0.9}),
        ev.plot_accuracy_histograms(str(tmp_path / "hist.png"),
                                    {"a": np.random.default_rng(0).random(20),
                                     "b": [0.5, np.nan]}),
        ev.plot_finetune_curves(str(tmp_path / "ft.png"),
                                {"given": {"epoch": np.arange(3),
                                           "test_accuracy": np.random.rand(4, 3)}}),
        ev.plot_steps_vs_accuracy(str(tmp_path / "sub" / "steps.png"),
                                  {"geo": ([8, 64, 512], [0.5, 0.7, 0.75], None)}),
    ]
    for p in paths:
        assert open(p, "rb").read(4) == png
    assert sorted(os.listdir(tmp_path)) == ["ens.png", "ft.png", "hist.png", "sub"]


def test_ensemble_zoom_on_the_rows_that_work(tmp_path):
    works = {"a": ([1, 2, 4], [0.93, 0.95, 0.958]), "b": ([1, 2, 4], [0.92, 0.94, 0.96])}
    broken = {"rt": ([1, 2, 4], [0.14, 0.10, 0.05])}
    lo, hi = ev.ensemble_zoom({**works, **broken})
    assert lo < 0.92 < 0.96 < hi and hi - lo < 0.06   # the broken row is left out
    assert ev.ensemble_zoom(works) is None               # nothing to zoom into
    assert ev.ensemble_zoom({"x": ([1], [float("nan")])}) is None
    assert ev.ensemble_zoom({"flat": ([1, 2], [0.9, 0.9])}) is None
    p = ev.plot_ensemble_curve(str(tmp_path / "z.png"), {**works, **broken},
                               hlines={"thesis": 0.94, "far": 0.2})
    assert open(p, "rb").read(4) == b"\x89PNG"


def test_ci95_half_width():
    from weightflow_jax import evaluation
    np.testing.assert_allclose(evaluation.ci95_half_width([0.0, 1.0, 2.0, 3.0]), 2.0543,
                               atol=1e-3)   # t_{0.975,3} = 3.1824, std 1.2910, n 4
    cols = evaluation.ci95_half_width(np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]]))
    assert cols.shape == (2,) and cols[1] == 0.0 and cols[0] > 0
    assert np.isnan(evaluation.ci95_half_width([1.0]))


def test_prompt_alignment_r2_around_the_identity():
    from weightflow_jax import evaluation

    grid = evaluation.prompt_grid(0.1, 1.0, 5)
    assert grid[0] == pytest.approx(0.1) and grid[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(np.diff(np.log(grid)), np.log(10) / 4)
    assert evaluation.prompt_grid(0.0, 1.0, 3, log=False) == [0.0, 0.5, 1.0]
    assert evaluation.r_squared(grid, grid) == pytest.approx(1.0)
    # The mean for every prompt scores 0; a perfectly correlated but shifted answer < 1.
    assert evaluation.r_squared(grid, [np.mean(grid)] * 5) == pytest.approx(0.0)
    assert evaluation.r_squared(grid, np.asarray(grid) + 0.5) < 0
    out = evaluation.prompt_alignment(grid, [[g * 0.9, g * 1.1] for g in grid])
    assert out["r2_means"] == pytest.approx(1.0)
    assert out["r2_networks"] < 1.0 and out["slope"] == pytest.approx(1.0)
    assert out["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        evaluation.prompt_grid(0.1, 1.0, 1)
    with pytest.raises(ValueError, match="positive bounds"):
        evaluation.prompt_grid(0.0, 1.0, 3)
    with pytest.raises(ValueError, match="all prompts are equal"):
        evaluation.r_squared([0.3, 0.3], [0.2, 0.4])
    with pytest.raises(ValueError, match="non-finite"):
        evaluation.r_squared([0.1, 0.3], [0.2, np.nan])
