"""Tests of experiments.tables: the results-table command, its overrides, reuse and goals.

The end-to-end table test replaces flow training by ``_fake_train`` (final zoo snapshots plus
noise, written in the same workdir layout as ``pipeline.train_and_evaluate``), so that the
table machinery (rows, reuse, novelty, noise baseline, markdown, json, plots) runs in
seconds; the same test with real training is marked slow (~1.5 min at size test).
"""

import json
import os
import re

import numpy as np
import pytest

from experiments import tables
from weightflow_jax import atomic, data as data_lib, pipeline
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax import zoo as zoo_lib

ROWS = "geometric_aligned_ot,euclidean_plain,target,noisy,ensemble"
ARGV = ["python", "-m", "experiments.tables", "--table=breast_cancer", "--size=test",
        f"--rows={ROWS}"]


class _FakeTrainer:
    """Stands in for pipeline.train_and_evaluate; counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, config, workdir, progress=False):
        self.calls.append(workdir)
        zoo = zoo_lib.load_zoo(zoo_lib.build_zoo(config.zoo, progress=False))
        n = int(config.sample.num)
        rng = np.random.default_rng(int(config.seed) + len(self.calls))
        src = rng.choice(zoo.final_indices(), n)
        params = [(w[src] + 0.05 * rng.standard_normal(w[src].shape).astype(np.float32),
                   b[src] + 0.05 * rng.standard_normal(b[src].shape).astype(np.float32))
                  for w, b in zoo.params]
        x, y = data_lib.load(str(config.zoo.dataset), "test")
        ev = pipeline.evaluate_networks(params, x, y)
        os.makedirs(workdir, exist_ok=True)
        train_lib.save_config(workdir, config)
        sampling_lib.save_samples_npz(os.path.join(workdir, "samples.npz"), params)
        atomic.write_json(os.path.join(workdir, "samples.json"), {
            "num": n, "steps": int(config.sample.steps), "seed": int(config.seed),
            "guidance": float(config.sample.guidance), "samples": ev})
        result = {"train": {"final_step": int(config.train.steps)}, "samples": ev,
                  "wall_seconds": 1.5, "sample_seconds": 0.1, "workdir": workdir}
        atomic.write_json(os.path.join(workdir, "eval.json"), result)
        return result


@pytest.fixture(scope="module")
def bc(tmp_path_factory):
    root = tmp_path_factory.mktemp("tables")
    trainer = _FakeTrainer()
    kw = dict(size="test", runs_dir=str(root / "runs"), results_dir=str(root / "results"),
              rows=ROWS, argv=ARGV, train_fn=trainer, progress=False)
    table = tables.build_table("breast_cancer", **kw)
    return table, trainer, kw


def _md(table):
    with open(os.path.join(table["results_dir"], "breast_cancer.md")) as f:
        return f.read()


def _md_row(md, label):
    lines = [l for l in md.splitlines() if l.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, lines)
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_breast_cancer_table_end_to_end(bc):
    table, trainer, kw = bc
    md = _md(table)
    assert len(trainer.calls) == 2
    assert [r["key"] for r in table["rows"]] == [
        "euclidean_plain", "geometric_aligned_ot", "target", "noisy", "ensemble"]
    # Header: command, size, overrides, hardware, commit, date, workdirs.
    assert "`python -m experiments.tables --table=breast_cancer --size=test" in md
    assert f"--rows={ROWS}" in md
    for text in ("size: `test`", "overrides: `seed=0`", "hardware: backend `cpu`",
                 "git commit:", "date: ", "total wall time", "## Goals", "## Rows"):
        assert text in md, text
    for key in ("euclidean_plain", "geometric_aligned_ot"):
        wd = os.path.join(kw["runs_dir"], "breast_cancer_test", key)
        assert wd in md and os.path.exists(os.path.join(wd, "eval.json"))
    # Thesis numbers next to ours.
    assert "0.998±0.006" in _md_row(md, "Euclidean")
    assert "0.991±0.011" in _md_row(md, "Geometric (aligned + OT)")
    assert "0.992±0.010" in _md_row(md, "Target (final snapshots)")
    assert "## Results" in md and "Checkpoints + Gaussian noise" in md
    noisy = next(r for r in table["rows"] if r["key"] == "noisy")
    best = max((r for r in table["rows"] if r["key"] in ("euclidean_plain",
                                                          "geometric_aligned_ot")),
               key=lambda r: r["acc_mean"])
    assert noisy["matched_row"] == best["key"] and best["label"] in noisy["note"]
    # The noise is calibrated to the best row's median nearest distance (mean of the noisy
    # networks' nearest distances within 0.5 %).
    assert noisy["target_distance"] == pytest.approx(best["novelty"]["l2_median"])
    assert noisy["novelty"]["l2_mean"] == pytest.approx(noisy["target_distance"], rel=0.01)
    # Plots exist and are PNGs.
    assert len(table["plots"]) == 2
    for p in table["plots"]:
        with open(p, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(p) > 1000
        assert os.path.dirname(p) == os.path.join(kw["results_dir"], "breast_cancer")


def test_json_numbers_equal_markdown(bc):
    table, _, kw = bc
    md = _md(table)
    with open(os.path.join(kw["results_dir"], "breast_cancer.json")) as f:
        saved = json.load(f)
    assert [r["key"] for r in saved["rows"]] == [r["key"] for r in table["rows"]]
    for r in saved["rows"]:
        cells = _md_row(md, r["label"])
        acc = (f"{r['acc_mean']:.3f}" if r["acc_std"] is None
               else f"{r['acc_mean']:.3f}±{r['acc_std']:.3f}")
        assert cells[1] == acc, (r["key"], cells)
        if r["loss_mean"] is not None:
            assert f"{r['loss_mean']:.3f}±{r['loss_std']:.3f}" in cells
        nov = r.get("novelty")
        if nov:
            ratio = nov["l2_median"] / nov["l2_spacing_median"]
            assert f"= {ratio:.2f}" in " ".join(cells)
    # The ensemble row is the target's posterior predictive.
    target = next(r for r in saved["rows"] if r["key"] == "target")
    ens = next(r for r in saved["rows"] if r["key"] == "ensemble")
    assert ens["acc_mean"] == target["ensemble_acc"]
    # Goals in the md equal the json's, and each is computed from the json numbers.
    assert saved["goals"] == tables.goals(saved)
    for g in saved["goals"]:
        assert re.search(rf"\| {re.escape(g['goal'])} \|.*\| {re.escape(g['status'])} \|", md), g


def test_rerun_reuses_eval_json(bc):
    table, trainer, kw = bc
    wd = os.path.join(kw["runs_dir"], "breast_cancer_test", "geometric_aligned_ot")
    mtime = os.stat(os.path.join(wd, "eval.json")).st_mtime_ns
    nov_mtime = os.stat(os.path.join(wd, "novelty.json")).st_mtime_ns
    n_calls = len(trainer.calls)
    again = tables.build_table("breast_cancer", **kw)
    assert len(trainer.calls) == n_calls
    assert os.stat(os.path.join(wd, "eval.json")).st_mtime_ns == mtime
    assert os.stat(os.path.join(wd, "novelty.json")).st_mtime_ns == nov_mtime
    flows = [r for r in again["rows"] if r["key"] in ("geometric_aligned_ot",
                                                       "euclidean_plain")]
    assert all(r["reused"] for r in flows)
    for a, b in zip(flows, table["rows"]):
        assert a["acc_mean"] == b["acc_mean"] and a["novelty"] == b["novelty"]
    # Other train steps: that row is retrained (train_and_evaluate resumes), not reused.
    kw2 = dict(kw, rows="euclidean_plain", steps=7, write=False)
    res = tables.build_table("breast_cancer", **kw2)
    assert len(trainer.calls) == n_calls + 1 and not res["rows"][0]["reused"]
    assert res["rows"][0]["train_steps"] == 7


def test_bad_table_rows_and_set_raise_clear_errors(tmp_path):
    kw = dict(size="test", runs_dir=str(tmp_path / "r"), results_dir=str(tmp_path / "o"),
              train_fn=_FakeTrainer(), progress=False)
    with pytest.raises(ValueError, match="unknown table 'cifar'.*breast_cancer"):
        tables.build_table("cifar", **kw)
    with pytest.raises(ValueError, match="unknown size"):
        tables.build_table("breast_cancer", **dict(kw, size="huge"))
    with pytest.raises(ValueError, match="unknown row.*'mnist'.*valid rows: euclidean_aligned"):
        tables.build_table("mnist", rows="euclidean_plain", **kw)
    with pytest.raises(ValueError, match="'noisy'.*flow row"):
        tables.build_table("breast_cancer", rows="noisy,target", **kw)
    with pytest.raises(ValueError, match="expected key=value"):
        tables.build_table("breast_cancer", sets=["model.rt.width"], **kw)
    with pytest.raises(ValueError, match="model.rt has no field 'widht'.*width"):
        tables.build_table("breast_cancer", sets=["model.rt.widht=3"], **kw)
    with pytest.raises(ValueError, match="cannot parse 'abc' as the field's type int"):
        tables.build_table("breast_cancer", sets=["model.rt.width=abc"], **kw)
    with pytest.raises(ValueError, match="is a group"):
        tables.build_table("breast_cancer", sets=["model=3"], **kw)
    with pytest.raises(ValueError, match="--steps must be >= 0"):
        tables.build_table("breast_cancer", steps=-1, **kw)
    assert not os.path.exists(tmp_path / "r") and not os.path.exists(tmp_path / "o")


def test_arch_transfer_table_uses_an_equivariant_field_unless_told_otherwise():
    ov, model = tables.table_overrides("arch_transfer", "cpu", [("train.steps", 5)])
    assert model == "neuron_transformer" and ov[0] == ("model.name", "neuron_transformer")
    cfg = tables.row_config("mnist", "geometric", "aligned_ot", "cpu", ov)
    assert cfg.model.name == "neuron_transformer" and cfg.train.steps == 5
    # An explicit field wins; the thesis size keeps the thesis's rt; other tables keep theirs.
    assert tables.table_overrides("arch_transfer", "cpu", [("model.name", "rt")]) == (
        [("model.name", "rt")], None)
    assert tables.table_overrides("arch_transfer", "default", []) == ([], None)
    assert tables.table_overrides("mnist", "cpu", []) == ([], None)


def test_row_config_variants_and_typed_overrides():
    base = tables.row_config("mnist", "geometric", "aligned_ot", "test")
    cfg = tables.row_config("breast_cancer", "euclidean", "plain", "test",
                            [("model.rt.width", "32"), ("flow.time_a", "2"),
                             ("flow.align", "true"), ("eval.ensemble_sizes", "(1, 3)"),
                             ("train.steps", 9), ("flow.canonical_mode", "thesis")])
    assert cfg.flow.kind == "euclidean" and cfg.flow.coupling == "independent"
    assert cfg.flow.align is True  # the override comes after the variant
    assert cfg.model.rt.width == 32 and isinstance(cfg.model.rt.width, int)
    assert cfg.flow.time_a == 2.0 and isinstance(cfg.flow.time_a, float)
    assert cfg.eval.ensemble_sizes == (1, 3) and cfg.train.steps == 9
    assert cfg.flow.canonical_mode == "thesis"
    assert base.flow.align is True and base.flow.coupling == "exact"
    plain = tables.row_config("breast_cancer", "geometric", "plain", "test")
    assert plain.flow.align is False and plain.flow.coupling == "independent"
    assert plain.model.rt.width == 8  # the size=test config, untouched by the other call
    with pytest.raises(ValueError, match="unknown variant"):
        tables.row_config("mnist", "geometric", "ot", "test")
    assert tables.row_workdir("runs/tables", "mnist", "cpu", "geometric", "aligned_ot") == \
        os.path.join("runs/tables", "mnist_cpu", "geometric_aligned_ot")
    assert tables.row_workdir("r", "mnist", "cpu", "geometric", "aligned_ot",
                              "neuron_transformer") == os.path.join(
        "r", "mnist_cpu", "geometric_aligned_ot_neuron_transformer")
    assert tables.select_rows("arch_transfer", " geometric_guided , euclidean_unguided") == [
        "euclidean_unguided", "geometric_guided"]
    assert len(tables.select_rows("breast_cancer", None)) == 12
    assert tables._sweep_steps(64) == [8, 32, 64]
    assert tables._sweep_steps(512) == [8, 32, 128, 512]
    assert tables._sweep_steps(4) == [4]


def _flow(key, acc, loss=0.5, ens=0.9, med=None, spacing=2.0, thesis_table="mnist"):
    return {"key": key, "label": key, "acc_mean": acc, "acc_std": 0.01, "loss_mean": loss,
            "loss_std": 0.1, "ensemble_acc": ens,
            "thesis": tables.THESIS[thesis_table].get(key),
            "novelty": None if med is None else {"l2_median": med,
                                                 "l2_spacing_median": spacing}}


def test_goals_met_and_missed_from_numbers():
    rows = [_flow("geometric_aligned_ot", 0.86, loss=1.2, ens=0.95, med=1.5),
            _flow("euclidean_aligned", 0.72, med=0.9),       # 0.737 - 0.01 = 0.727 > 0.72
            _flow("normalized_aligned", 0.743, med=1.01),    # 0.753 - 0.01 = 0.743: met
            _flow("target", 0.90)]
    got = {g["goal"]: g for g in tables.goals({"table": "mnist", "rows": rows})}
    st = {k: g["status"] for k, g in got.items()}
    assert st["match or beat the thesis: geometric_aligned_ot"] == "met"
    assert st["match or beat the thesis: euclidean_aligned"] == "missed"
    assert st["match or beat the thesis: normalized_aligned"] == "met"
    assert st["match or beat the thesis: target"] == "missed"
    assert st["MNIST geometric (aligned + OT) accuracy and loss"] == "met"
    assert st["MNIST posterior predictive (geometric, aligned + OT)"] == "met"
    assert st["samples are not copies: geometric_aligned_ot"] == "met"      # 1.5 > 1.0
    assert st["samples are not copies: euclidean_aligned"] == "missed"      # 0.9 < 1.0
    assert got["samples are not copies: euclidean_aligned"]["value"] == pytest.approx(0.45)
    # Far from every checkpoint but not working: novelty is not counted as met.
    bad = [_flow("geometric_aligned", 0.10, med=5.0)]
    st_bad = {g["goal"]: g["status"] for g in tables.goals({"table": "mnist", "rows": bad})}
    assert st_bad["samples are not copies: geometric_aligned"].startswith("not meaningful")
    # Loss too high / ensemble too low / row missing.
    rows2 = [_flow("geometric_aligned_ot", 0.90, loss=1.44, ens=0.939)]
    st2 = {g["goal"]: g["status"] for g in tables.goals({"table": "mnist", "rows": rows2})}
    assert st2["MNIST geometric (aligned + OT) accuracy and loss"] == "missed"
    assert st2["MNIST posterior predictive (geometric, aligned + OT)"] == "missed"
    st3 = {g["goal"]: g["status"] for g in tables.goals({"table": "mnist", "rows": []})}
    assert set(st3.values()) == {"not run"} and len(st3) == 2
    # Architecture transfer: best geometric row; fashion unguided rows are not goals.
    arch = [_flow("geometric_unguided", 0.88, thesis_table="arch_transfer"),
            _flow("geometric_guided", 0.891, thesis_table="arch_transfer"),
            _flow("normalized_unguided", 0.19, thesis_table="arch_transfer")]
    sa = {g["goal"]: g for g in tables.goals({"table": "arch_transfer", "rows": arch})}
    assert sa["784-32-10 transfer (geometric, best of unguided/guided)"]["status"] == "met"
    assert sa["784-32-10 transfer (geometric, best of unguided/guided)"]["value"] == 0.891
    assert sa["match or beat the thesis: geometric_unguided"]["status"] == "met"  # 0.88
    assert sa["match or beat the thesis: normalized_unguided"]["status"] == "missed"
    arch[1]["acc_mean"] = 0.85
    sa = {g["goal"]: g["status"] for g in tables.goals({"table": "arch_transfer",
                                                          "rows": arch})}
    assert sa["784-32-10 transfer (geometric, best of unguided/guided)"] == "missed"
    fash = [_flow("geometric_unguided", 0.05, thesis_table="fashion_transfer"),
            _flow("adam", 0.91, thesis_table="fashion_transfer")]
    sf = [g["goal"] for g in tables.goals({"table": "fashion_transfer", "rows": fash})]
    assert sf == ["match or beat the thesis: adam"]


def test_render_markdown_of_synthetic_table():
    rows = [dict(_flow("geometric_aligned_ot", 0.8123, med=1.5), label="Geo OT", diversity=0.001,
                 ensemble_size=64, train_steps=400, wall_seconds=12.0, num=64)]
    table = {"table": "mnist", "title": "t", "size": "cpu", "command": "python -m x",
             "overrides": [["seed", 0]], "seeds": {"config.seed": 0},
             "hardware": {"backend": "cpu", "devices": ["cpu:0"]}, "git_commit": None,
             "date": "today", "wall_seconds": 3.0, "runs_dir": "r", "results_dir": "o",
             "selected_rows": ["geometric_aligned_ot"], "rows": rows,
             "extras": {"steps_sweep": {"workdir": "w", "train_steps": 400, "cap": 64,
                                        "points": [{"steps": 8, "acc_mean": 0.5,
                                                    "acc_std": 0.1, "loss_mean": 1.0,
                                                    "loss_std": 0.2, "ensemble_acc": 0.6,
                                                    "sample_seconds": 2.0}]}},
             "goal_definitions": ["d"]}
    table["goals"] = tables.goals(table)
    md = tables.render_markdown(table)
    cells = _md_row(md, "Geo OT")
    assert cells[1:5] == ["0.812±0.010", "0.786±0.064", "0.500±0.100", "1.443±0.046"]
    assert "0.00100" in cells and "0.00093" in cells and "0.900 (k=64)" in cells
    assert "0.940" in cells and "1.5 / 2 = 0.75" in cells and "400" in cells
    assert "| 8 | 0.500±0.100 | 1.000±0.200 | 0.600 | 2.0 |" in md
    assert "git commit: `unknown`" in md and "2 of 4 goals met." in md


@pytest.mark.slow
def test_breast_cancer_table_with_real_training(tmp_path):
    """The same two flow rows trained for real (size test, ~1.5 min on 2 cores)."""
    table = tables.build_table("breast_cancer", size="test", runs_dir=str(tmp_path / "runs"),
                               results_dir=str(tmp_path / "res"),
                               rows="geometric_aligned_ot,euclidean_plain,target",
                               progress=False)
    assert [r["key"] for r in table["rows"]] == ["euclidean_plain", "geometric_aligned_ot",
                                                 "target"]
    for r in table["rows"][:2]:
        assert r["train_steps"] == 6 and 0.0 <= r["acc_mean"] <= 1.0
        assert r["novelty"]["l2_median"] > 0
    again = tables.build_table("breast_cancer", size="test", runs_dir=str(tmp_path / "runs"),
                               results_dir=str(tmp_path / "res"),
                               rows="geometric_aligned_ot,euclidean_plain,target",
                               progress=False)
    assert all(r["reused"] for r in again["rows"][:2])
