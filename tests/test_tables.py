"""Tests of the results tables (``weightflow_jax.tables`` and ``experiments/tables.py``).

The end-to-end table test replaces flow training by ``_FakeTrainer`` (final zoo snapshots
plus noise, written in the same workdir layout as ``pipeline.train_and_evaluate``), so that
the machinery (rows, reuse, novelty, noise baseline, published samples, markdown, json,
plots) runs in seconds. The transfer / fine-tuning evaluators run on real (size ``test``)
flows of a small breast-cancer table declared here.
"""

import json
import os
import re

import numpy as np
import pytest

from experiments import tables as tables_cli
from weightflow_jax import atomic, data as data_lib, pipeline
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import tables
from weightflow_jax import train as train_lib
from weightflow_jax import zoo as zoo_lib
from weightflow_jax.tables import declarations, evaluators, goals as G, publish, render
from weightflow_jax.tables.context import Context
from weightflow_jax.tables.spec import FlowSpec, Row, Table

ROWS = ("geometric_aligned_ot,euclidean_plain,geometric_aligned_ot_rt,target,snapshots,heldout,"
        "noisy,ensemble")
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
        result = {"train": {"final_step": int(config.train.steps), "wall_time_s": 1.0},
                  "samples": ev, "wall_seconds": 1.5, "sample_seconds": 0.1,
                  "workdir": workdir, "model": str(config.model.name)}
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
    with open(os.path.join(table["results_dir"], f"{table['table']}.md")) as f:
        return f.read()


def _md_row(md, label):
    lines = [l for l in md.splitlines() if l.startswith(f"| {label} |")]
    assert len(lines) == 1, (label, lines)
    return [c.strip() for c in lines[0].strip("|").split("|")]


def test_breast_cancer_table_end_to_end(bc):
    table, trainer, kw = bc
    md = _md(table)
    assert len(trainer.calls) == 3
    assert [r["key"] for r in table["rows"]] == [
        "euclidean_plain", "geometric_aligned_ot", "geometric_aligned_ot_rt", "target",
        "snapshots", "heldout", "noisy", "ensemble"]
    assert "`python -m experiments.tables --table=breast_cancer --size=test" in md
    for text in ("size: `test`", "command-line overrides: `seed=0`",
                 "the table's overrides at this size: `model.name=mlp`",
                 "hardware: backend `cpu`", "git commit:", "date: ", "total wall time",
                 "## Goals", "## Rows", "## Published samples", "Our split"):
        assert text in md, text
    # The table's field and the rt comparison row, each in its own workdir.
    root = os.path.join(kw["runs_dir"], "breast_cancer_test")
    assert sorted(os.path.basename(w) for w in trainer.calls) == [
        "euclidean_plain", "geometric_aligned_ot",
        "geometric_aligned_ot_rt"]
    for wd in trainer.calls:
        assert wd.startswith(root) and wd in md
    cells = _md_row(md, "Geometric (aligned + OT)")
    assert cells[2] == "mlp" and "0.991±0.011" in cells
    assert _md_row(md, "Geometric (aligned + OT), thesis RT, same wall clock")[2] == "rt"
    assert "0.992±0.010" in _md_row(md, "Target (final snapshots)")
    noisy = next(r for r in table["rows"] if r["key"] == "noisy")
    best = max((r for r in table["rows"] if r["is_flow"]), key=lambda r: r["acc_mean"])
    assert noisy["matched_row"] == best["key"] and best["label"] in noisy["note"]
    assert noisy["target_distance"] == pytest.approx(best["novelty"]["l2_median"])
    assert noisy["calibrated_distance"] == pytest.approx(noisy["target_distance"], rel=0.01)
    # Reported up to permutation, like the flows. Not strictly below the calibration: the
    # noisy networks are re-aligned to the reference before the search, as samples are.
    assert noisy["novelty"]["l2_mean"] <= 1.01 * noisy["calibrated_distance"]
    assert noisy["novelty"]["runs_covered"] >= 1
    # Published samples: one file per flow row, equal to the row's networks.
    for r in table["rows"]:
        if not r["is_flow"]:
            assert "published" not in r
            continue
        pub = r["published"]
        assert pub["file"] == os.path.join(kw["results_dir"], "breast_cancer", "samples",
                                           f"{r['key']}.npz")
        got = sampling_lib.load_samples_npz(pub["file"])
        src = sampling_lib.load_samples_npz(os.path.join(r["workdir"], "samples.npz"))
        with np.load(pub["file"]) as z:
            assert sorted(z.files) == ["W0", "W1", "W2", "b0", "b1", "b2"]
            assert str(z["W0"].dtype) == pub["dtype"]
        for (w, b), (w0, b0) in zip(got, src):
            np.testing.assert_allclose(w, w0, atol=2e-3 * max(1.0, np.abs(w0).max()))
        acc, _ = pipeline.evaluation.accuracy_and_loss(got, *data_lib.load("breast_cancer",
                                                                           "test"))
        if pub["dtype"] == "float16":
            assert np.max(np.abs(np.asarray(acc) - np.asarray(r["acc"]))) <= 1e-3
    assert len(table["plots"]) == 2
    for p in table["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_snapshots_row_is_random_training_snapshots(bc):
    """The row's numbers are those of the zoo snapshots it records, drawn as many at a time
    as a flow row samples, distinct within a draw and different between draws."""
    table, _, kw = bc
    row = next(r for r in table["rows"] if r["key"] == "snapshots")
    flow_num = max(r["num"] for r in table["rows"] if r["is_flow"])
    idx = np.asarray(row["snapshot_indices"])
    assert idx.shape == (evaluators.SNAPSHOT_DRAWS, flow_num) and row["num"] == flow_num
    assert all(len(set(d)) == flow_num for d in idx.tolist())
    assert len({tuple(sorted(d)) for d in idx.tolist()}) == evaluators.SNAPSHOT_DRAWS
    zoo = zoo_lib.load_zoo(os.path.join(zoo_lib.default_zoo_root(), "breast_cancer_test"))
    assert idx.max() < zoo.num_snapshots and not row["is_flow"] and row["novelty"] is None
    x, y = data_lib.load("breast_cancer", "test")
    accs, ens = [], []
    for d in idx:  # the unaligned snapshots: alignment permutes neurons, not functions
        ev = pipeline.evaluate_networks(zoo.select(d), x, y)
        accs += ev["acc"]
        ens.append(ev["ensemble_acc"])
    np.testing.assert_allclose(row["acc"], accs, atol=1e-6)
    assert row["acc_mean"] == pytest.approx(np.mean(accs), abs=1e-6)
    np.testing.assert_allclose(row["ensemble_draws"], ens, atol=1e-6)
    assert row["ensemble_acc"] == pytest.approx(np.mean(ens), abs=1e-6)
    assert f"{evaluators.SNAPSHOT_DRAWS} draws of {flow_num}" in row["note"]
    assert "Random training snapshots (what the flows learn)" in _md(table)


def test_heldout_row_is_new_runs_of_the_zoo_config(bc):
    """One snapshot of every run of a zoo that differs from the table's only in its seed
    (and run count), evaluated like a flow row, novelty included."""
    table, _, kw = bc
    row = next(r for r in table["rows"] if r["key"] == "heldout")
    flow_num = max(r["num"] for r in table["rows"] if r["is_flow"])
    own = zoo_lib.load_zoo(os.path.join(zoo_lib.default_zoo_root(), "breast_cancer_test"))
    held = zoo_lib.load_zoo(row["heldout_zoo"])
    assert held.path != own.path and held.num_runs == flow_num == row["num"]
    offset = evaluators.HELDOUT_SEED_OFFSET
    assert held.meta["config"]["seed"] == own.meta["config"]["seed"] + offset
    for k in ("arch", "num_epochs", "burn_in_epochs", "snapshot_every", "optimizer", "data"):
        assert held.meta["config"][k] == own.meta["config"][k], k
    idx = np.asarray(row["snapshot_indices"])
    np.testing.assert_array_equal(held.run_id[idx], np.arange(flow_num))
    # new runs: no held-out network equals a snapshot of the table's zoo
    w0 = np.asarray(held.params[0][0])[idx].reshape(flow_num, -1)
    own_w0 = np.asarray(own.params[0][0]).reshape(own.num_snapshots, -1)
    assert np.min(np.abs(w0[:, None, :] - own_w0[None]).max(-1)) > 1e-3
    x, y = data_lib.load("breast_cancer", "test")
    ev = pipeline.evaluate_networks(held.select(idx), x, y)
    np.testing.assert_allclose(row["acc"], ev["acc"], atol=1e-6)
    assert row["ensemble_acc"] == pytest.approx(ev["ensemble_acc"], abs=1e-6)
    assert not row["is_flow"] and row["novelty"]["l2_median"] > 0
    assert "l2_spacing_median" in row["novelty"]
    assert "New SGD runs, one random snapshot each" in _md(table)


def test_heldout_zoo_config_is_checked():
    cfg = zoo_lib.zoo_config("breast_cancer", "test")
    cfg.unlock()
    cfg.dir = "/tmp/some_zoo/"
    held = evaluators.heldout_zoo_config(cfg, 7)
    assert held.dir == "/tmp/some_zoo_heldout7" and held.num_runs == 7
    assert held.seed == cfg.seed + evaluators.HELDOUT_SEED_OFFSET and cfg.num_runs != 7
    assert held.optimizer.to_dict() == cfg.optimizer.to_dict()
    with pytest.raises(ValueError, match="num_runs"):
        evaluators.heldout_zoo_config(cfg, 0)
    with pytest.raises(ValueError, match="offset"):
        evaluators.heldout_zoo_config(cfg, 3, offset=0)
    cfg.dir = ""
    with pytest.raises(ValueError, match="empty dir"):
        evaluators.heldout_zoo_config(cfg, 3)


def test_snapshot_draws_are_seeded_distinct_and_checked():
    import jax
    a = evaluators.snapshot_draws(jax.random.key(0), 50, 8, 3)
    assert a.shape == (3, 8) and all(len(set(r)) == 8 for r in a.tolist())
    assert (a < 50).all() and not (a[0] == a[1]).all()
    np.testing.assert_array_equal(a, evaluators.snapshot_draws(jax.random.key(0), 50, 8, 3))
    assert not np.array_equal(a, evaluators.snapshot_draws(jax.random.key(1), 50, 8, 3))
    assert sorted(evaluators.snapshot_draws(jax.random.key(0), 5, 8, 1)[0]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="num_snapshots, num and draws >= 1"):
        evaluators.snapshot_draws(jax.random.key(0), 5, 0, 1)


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
            assert f"= {nov['l2_median'] / nov['l2_spacing_median']:.2f}" in " ".join(cells)
        if nov and "runs_covered" in nov:  # flow, held-out and noise rows
            assert 1 <= nov["runs_covered"] <= min(nov["runs_total"], r["num"])
            assert f"{r['label']} {nov['runs_covered']} (" in md
    covered = [r["key"] for r in saved["rows"] if "runs_covered" in (r.get("novelty") or {})]
    assert covered == ["euclidean_plain", "geometric_aligned_ot", "geometric_aligned_ot_rt",
                       "heldout", "noisy"]
    # A json written before coverage was measured renders without the line.
    assert render.coverage_line([{"label": "x", "novelty": {"l2_median": 1.0}}]) == ""
    target = next(r for r in saved["rows"] if r["key"] == "target")
    ens = next(r for r in saved["rows"] if r["key"] == "ensemble")
    assert ens["acc_mean"] == target["ensemble_acc"]
    # Goals in the md equal the json's, recomputed from the json numbers; the rt row is a
    # comparison row: it has no accuracy goal of its own.
    assert saved["goals"] == tables.table_goals(saved)
    for g in saved["goals"]:
        assert re.search(rf"\| {re.escape(g['goal'])} \|.*\| {re.escape(g['status'])} \|", md), g
    names = [g["goal"] for g in saved["goals"]]
    assert "as good as the trained networks: Geometric (aligned + OT)" in names
    assert not any("as good" in n and "thesis RT" in n for n in names)
    # Re-rendering the saved json gives the same file.
    assert render.render_markdown(saved) == md


def test_rerun_reuses_flows_and_a_changed_config_retrains(bc):
    table, trainer, kw = bc
    wd = trainer.calls[1]
    mtime = os.stat(os.path.join(wd, "eval.json")).st_mtime_ns
    nov_mtime = os.stat(os.path.join(wd, "novelty.json")).st_mtime_ns
    n_calls = len(trainer.calls)
    again = tables.build_table("breast_cancer", **kw)
    assert len(trainer.calls) == n_calls
    assert os.stat(os.path.join(wd, "eval.json")).st_mtime_ns == mtime
    assert os.stat(os.path.join(wd, "novelty.json")).st_mtime_ns == nov_mtime
    flows = [r for r in again["rows"] if r["is_flow"]]
    assert all(r["reused"] for r in flows)
    for a, b in zip(flows, table["rows"]):
        assert a["acc_mean"] == b["acc_mean"] and a["novelty"] == b["novelty"]
    res = tables.build_table("breast_cancer", **dict(kw, rows="euclidean_plain", steps=7,
                                                       write=False))
    assert len(trainer.calls) == n_calls + 1 and not res["rows"][0]["reused"]
    assert res["rows"][0]["train_steps"] == 7


def test_bad_table_rows_and_set_raise_clear_errors(tmp_path):
    kw = dict(size="test", runs_dir=str(tmp_path / "r"), results_dir=str(tmp_path / "o"),
              train_fn=_FakeTrainer(), progress=False)
    with pytest.raises(ValueError, match="unknown table 'cifar'.*breast_cancer, "
                                         "breast_cancer_thesis_split, mnist"):
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
    with pytest.raises(ValueError, match="has no field 'modle'.*model"):
        tables.build_table("breast_cancer", sets=["modle.name=rt"], **kw)
    with pytest.raises(ValueError, match="cannot parse 'abc' as the field's type int"):
        tables.build_table("breast_cancer", sets=["model.rt.width=abc"], **kw)
    with pytest.raises(ValueError, match="is a group"):
        tables.build_table("breast_cancer", sets=["model=3"], **kw)
    with pytest.raises(ValueError, match="--steps must be >= 0"):
        tables.build_table("breast_cancer", steps=-1, **kw)
    assert not os.path.exists(tmp_path / "r") and not os.path.exists(tmp_path / "o")
    # The command line: --table is required and checked, --rows needs one table.
    with pytest.raises(ValueError, match="--table is required; choose one of breast_cancer"):
        tables_cli.table_names(None, "")
    with pytest.raises(ValueError, match="unknown table 'mnsit'"):
        tables_cli.table_names("mnsit", "")
    with pytest.raises(ValueError, match="cannot be combined with --table=all"):
        tables_cli.table_names("all", "target")
    assert tables_cli.table_names("all", "") == list(tables.TABLES)


@pytest.mark.parametrize("size", ["default", "cpu", "test"])
def test_every_declared_flow_has_a_valid_config(size):
    for table in tables.TABLES.values():
        ctx = Context(table, size, [("seed", 0)], "runs/tables", "results", 0, [])
        assert table.goals and table.rows_at(size)
        for r in table.rows_at(size):
            assert r.evaluator in tables.EVALUATORS, (table.name, r.key)
            if r.flow is None:
                continue
            cfg = ctx.config(r.flow)
            wd = ctx.workdir(r.flow)
            assert wd.startswith(os.path.join("runs/tables", f"{table.group}_{size}"))
            if table.dataset:
                assert cfg.zoo.dataset == table.dataset
                assert cfg.zoo.dir.endswith(f"{table.dataset}_{size}")
            if size == "default":  # thesis-sized: the thesis's field, no rt comparison row
                assert cfg.model.name == "rt" and r.key != "geometric_aligned_ot_rt"
            if r.evaluator == "transfer" and size != "default":
                assert cfg.model.name == "neuron_transformer", (table.name, r.key)
                assert wd.endswith("_neuron_transformer")


def test_cpu_declarations_match_the_issue():
    cpu = {n: Context(t, "cpu", [], "r", "o", 0, []) for n, t in tables.TABLES.items()}
    mnist, bc = tables.get_table("mnist"), tables.get_table("breast_cancer")
    geo = cpu["mnist"].config(mnist.row("geometric_aligned_ot").flow)
    rt = cpu["mnist"].config(mnist.row("geometric_aligned_ot_rt").flow)
    assert geo.model.name == "mlp" and rt.model.name == "rt"
    assert geo.sample.num == 64 and geo.eval.ensemble_sizes[-1] == 64
    assert rt.train.steps < geo.train.steps
    assert cpu["breast_cancer"].config(bc.row("geometric_plain").flow).model.name == "mlp"
    # The two transfer tables share their flows.
    fa, ar = tables.get_table("fashion_transfer"), tables.get_table("arch_transfer")
    assert cpu["fashion_transfer"].workdir(fa.row("geometric_guided").flow) == \
        cpu["arch_transfer"].workdir(ar.row("geometric_guided").flow)
    # The thesis split: the same rows as our split, another dataset, zoo and run group.
    ts = tables.get_table("breast_cancer_thesis_split")
    assert [r.key for r in ts.rows] == [r.key for r in bc.rows]
    assert cpu["breast_cancer_thesis_split"].workdir(ts.row("geometric_plain").flow) != \
        cpu["breast_cancer"].workdir(bc.row("geometric_plain").flow)
    with pytest.raises(ValueError, match="declares row.*twice"):
        Table("t", "t", "g", (Row("a", "a", "target"), Row("a", "b", "target")))
    with pytest.raises(ValueError, match="unknown flow kind"):
        FlowSpec("mnist", "hyperbolic")


def test_row_config_variants_and_typed_overrides():
    cfg = tables.row_config("breast_cancer", "euclidean", "plain", "test",
                            [("model.rt.width", "32"), ("flow.time_a", "2"),
                             ("flow.align", "true"), ("eval.ensemble_sizes", "(1, 3)"),
                             ("train.steps", 9), ("flow.canonical_mode", "thesis")])
    assert cfg.flow.kind == "euclidean" and cfg.flow.coupling == "independent"
    assert cfg.flow.align is True  # the override comes after the variant
    assert cfg.model.rt.width == 32 and isinstance(cfg.model.rt.width, int)
    assert cfg.flow.time_a == 2.0 and isinstance(cfg.flow.time_a, float)
    assert cfg.eval.ensemble_sizes == (1, 3) and cfg.train.steps == 9
    plain = tables.row_config("breast_cancer", "geometric", "plain", "test")
    assert plain.flow.align is False and plain.flow.coupling == "independent"
    assert plain.model.rt.width == 8  # the size=test config, untouched by the other call
    with pytest.raises(ValueError, match="unknown variant"):
        tables.row_config("mnist", "geometric", "ot", "test")
    assert tables.row_workdir("r", "mnist", "cpu", "geometric", "aligned_ot") == \
        os.path.join("r", "mnist_cpu", "geometric_aligned_ot")
    assert tables.select_rows("arch_transfer", " geometric_guided , euclidean_unguided") == [
        "euclidean_unguided", "geometric_guided"]
    assert len(tables.select_rows("breast_cancer", None, "cpu")) == 15
    assert "geometric_aligned_ot_rt" not in tables.select_rows("breast_cancer", None, "default")
    assert tables.sweep_steps(64) == [8, 32, 64]
    assert tables.sweep_steps(512) == [8, 32, 128, 512]
    assert tables.sweep_steps(4) == [4]


def _r(key, acc, loss=0.5, ens=0.9, med=None, spacing=2.0, thesis_table="mnist", **kw):
    return dict({"key": key, "label": key, "acc_mean": acc, "acc_std": 0.01,
                 "loss_mean": loss, "loss_std": 0.1, "ensemble_acc": ens,
                 "ensemble_size": 64, "is_flow": key not in ("target", "adam"),
                 "thesis": declarations.THESIS[thesis_table].get(key),
                 "novelty": None if med is None else {"l2_median": med,
                                                      "l2_spacing_median": spacing}}, **kw)


def _status(goals, table):
    return {g["goal"]: g["status"] for g in G.evaluate_goals(goals, table)}


def test_thesis_rows_and_thresholds():
    rows = [_r("geometric_aligned_ot", 0.94, loss=0.29, ens=0.961, med=1.5),
            _r("euclidean_aligned", 0.736),
            _r("normalized_aligned", 0.753, loss=1.6),
            _r("geometric_aligned_ot_rt", 0.1, reference=True,
               thesis=declarations.THESIS["mnist"]["geometric_aligned_ot"]),
            _r("target", 0.935)]
    st = _status(tables.get_table("mnist").goals, {"rows": rows})
    assert st["match or beat the thesis: geometric_aligned_ot"] == "met"
    assert st["match or beat the thesis: euclidean_aligned"] == "missed"  # 0.736 < 0.737
    assert st["match or beat the thesis: normalized_aligned"] == "met"    # tolerance 0
    assert st["match or beat the thesis: target"] == "met"
    assert not any("geometric_aligned_ot_rt" in k and "thesis" in k for k in st)
    assert st["MNIST geometric (aligned + OT) accuracy"] == "met"
    assert st["MNIST geometric (aligned + OT) loss"] == "met"
    assert st["MNIST posterior predictive (geometric, aligned + OT)"] == "met"
    assert st["samples are not copies: geometric_aligned_ot"] == "met"
    close = "normalized within 0.05 of euclidean at the same steps"
    assert st[f"{close}: normalized_aligned"] == "met"        # 0.753 >= 0.736 - 0.05
    assert st[f"{close}: normalized_aligned_ot"] == "not run"  # no rows to compare
    rows[0].update(loss_mean=0.31, ensemble_size=32)
    st = _status(tables.get_table("mnist").goals, {"rows": rows})
    assert st["MNIST geometric (aligned + OT) loss"] == "missed"
    assert st["MNIST posterior predictive (geometric, aligned + OT)"] == "missed"  # 32 < 64
    assert set(_status(tables.get_table("mnist").goals, {"rows": []}).values()) == {"not run"}
    # With loss: the thesis split's breast-cancer goal also bounds the loss.
    bc = [_r("geometric_plain", 0.985, loss=0.018, thesis_table="breast_cancer"),
          _r("geometric_aligned", 0.985, loss=0.05, thesis_table="breast_cancer")]
    st = _status((G.ThesisRows(0.01, loss=True),), {"rows": bc})
    assert st["match or beat the thesis: geometric_plain"] == "met"
    assert st["match or beat the thesis: geometric_aligned"] == "missed"   # 0.05 > 0.018


def test_beat_target_best_of_finetune_and_not_copies():
    rows = [_r("geometric_plain", 0.98, loss=0.05, med=1.5),
            _r("geometric_aligned", 0.98, loss=0.07, med=0.9),
            _r("euclidean_plain", 0.10, loss=2.0, med=5.0),
            _r("target", 0.977, loss=0.06)]
    st = _status((G.BeatTarget(("geometric_plain", "geometric_aligned", "euclidean_plain")),
                  G.NotCopies()), {"rows": rows})
    assert st["as good as the trained networks: geometric_plain"] == "met"
    assert st["as good as the trained networks: geometric_aligned"] == "missed"
    assert st["samples are not copies: geometric_plain"] == "met"          # 1.5 > 1.0
    assert st["samples are not copies: geometric_aligned"] == "missed"     # 0.9 < 1.0
    assert st["samples are not copies: euclidean_plain"].startswith("not meaningful")
    assert _status((G.BeatTarget(("geometric_plain",)),), {"rows": rows[:1]}) == {
        "as good as the trained networks: geometric_plain": "not run"}
    arch = [_r("geometric_unguided", 0.88), _r("geometric_guided", 0.905)]
    goal = G.BestOf(("geometric_unguided", "geometric_guided"), 0.90, "arch")
    assert G.evaluate_goals((goal,), {"rows": arch})[0]["value"] == 0.905
    assert _status((goal,), {"rows": arch}) == {"arch": "met"}
    arch[1]["acc_mean"] = 0.85
    assert _status((goal,), {"rows": arch}) == {"arch": "missed"}
    assert _status((goal,), {"rows": []}) == {"arch": "not run"}
    pair = G.RowsClose((("normalized_aligned", "euclidean_aligned"),), 0.05, "close")
    flows = [_r("euclidean_aligned", 0.90), _r("normalized_aligned", 0.849)]
    assert _status((pair,), {"rows": flows}) == {"close: normalized_aligned": "missed"}
    flows[1]["acc_mean"] = 0.851
    assert _status((pair,), {"rows": flows}) == {"close: normalized_aligned": "met"}
    flows[1]["acc_mean"] = float("nan")
    assert _status((pair,), {"rows": flows}) == {"close: normalized_aligned": "missed"}


def _ft_point(unit, value, unguided, guided, random, ci=0.01):
    return {"unit": unit, "value": value, "unguided samples": {"mean": unguided, "ci95": ci},
            "guided samples": {"mean": guided, "ci95": ci},
            "random init": {"mean": random, "ci95": ci}}


def test_init_curves_and_sgd_check_goals():
    pts = [_ft_point("steps", 16, 0.40, 0.81, 0.405), _ft_point("steps", 64, 0.6, 0.82, 0.62),
           _ft_point("epoch", 1, 0.80, 0.84, 0.80), _ft_point("epoch", 2, 0.83, 0.84, 0.85)]
    ft = {"rows": [], "extras": {"finetune": {"points": pts}}}
    got = {g["goal"]: g for g in G.evaluate_goals((G.InitCurves(),), ft)}
    ung = got["fine-tuning from unguided samples not behind random init"]
    assert ung["status"] == "missed" and "-0.010 at 64 steps" in ung["value"]  # 0.6 < 0.61
    assert got["fine-tuning from guided samples ahead of random init"]["status"] == "met"
    pts[1]["unguided samples"]["mean"] = 0.615
    pts[3]["unguided samples"]["mean"] = 0.845   # within the interval: not behind
    got = {g["goal"]: g["status"] for g in G.evaluate_goals((G.InitCurves(),), ft)}
    assert got["fine-tuning from unguided samples not behind random init"] == "met"
    pts[2]["guided samples"]["mean"] = 0.79      # behind at epoch 1
    assert _status((G.InitCurves(),), ft)[
        "fine-tuning from guided samples ahead of random init"] == "missed"
    assert set(_status((G.InitCurves(),), {"rows": []}).values()) == {"not run"}
    sc = {"row": "geometric_unguided", "samples": {"mean": 0.792},
          "random init": {"mean": 0.80}}
    assert _status((G.SgdCheck(0.01),), {"rows": [], "extras": {"sgd_check": sc}}) == {
        "plain SGD from published unguided samples (geometric_unguided)": "met"}
    sc["samples"]["mean"] = 0.785
    assert _status((G.SgdCheck(0.01),), {"rows": [], "extras": {"sgd_check": sc}}) == {
        "plain SGD from published unguided samples (geometric_unguided)": "missed"}


def test_publish_chooses_float16_only_when_accuracy_is_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    good = [(rng.standard_normal((3, 16, 30)).astype(np.float32),
             rng.standard_normal((3, 16)).astype(np.float32)),
            (rng.standard_normal((3, 2, 16)).astype(np.float32),
             np.zeros((3, 2), np.float32))]
    src = sampling_lib.save_samples_npz(str(tmp_path / "s.npz"), good)
    info = publish.publish_samples(src, str(tmp_path / "out" / "a.npz"), "breast_cancer")
    assert info["dtype"] == "float16" and info["max_acc_change_float16"] <= 1e-3
    # Logits that tie up to float32 precision: float16 rounding flips predictions.
    tie = [(w.copy(), b.copy()) for w, b in good]
    tie[1][0][:, 1] = tie[1][0][:, 0] * (1 + 1e-4)
    src2 = sampling_lib.save_samples_npz(str(tmp_path / "t.npz"), tie)
    info2 = publish.publish_samples(src2, str(tmp_path / "out" / "b.npz"), "breast_cancer")
    assert info2["dtype"] == "float32" and info2["max_acc_change_float16"] > 1e-3
    np.testing.assert_array_equal(sampling_lib.load_samples_npz(info2["file"])[1][0], tie[1][0])
    assert sorted(os.listdir(tmp_path / "out")) == ["a.npz", "b.npz"]  # no temp files left


def test_render_markdown_of_synthetic_table():
    rows = [dict(_r("geometric_aligned_ot", 0.8123, med=1.5), label="Geo OT",
                 diversity=0.001, train_steps=400, wall_seconds=12.0, num=64, model="mlp")]
    table = {"table": "mnist", "title": "t", "size": "cpu", "command": "python -m x",
             "overrides": [["seed", 0]], "table_overrides": {"cpu": [["train.steps", 4]]},
             "seeds": {"config.seed": 0},
             "hardware": {"backend": "cpu", "devices": ["cpu:0"]}, "git_commit": None,
             "date": "today", "wall_seconds": 3.0, "runs_dir": "r", "results_dir": "o",
             "selected_rows": ["geometric_aligned_ot"], "rows": rows,
             "extras": {"steps_sweep": {"workdir": "w", "train_steps": 400, "cap": 64,
                                        "points": [{"steps": 8, "acc_mean": 0.5,
                                                    "acc_std": 0.1, "loss_mean": 1.0,
                                                    "loss_std": 0.2, "ensemble_acc": 0.6,
                                                    "sample_seconds": 2.0}]}},
             "goal_definitions": ["d"]}
    table["goals"] = tables.table_goals(table)
    md = render.render_markdown(table)
    cells = _md_row(md, "Geo OT")
    assert cells[1:6] == ["0.812±0.010", "mlp", "0.786±0.064", "0.500±0.100", "1.443±0.046"]
    assert "0.00100" in cells and "0.00093" in cells and "0.900 (k=64)" in cells
    assert "1.5 / 2 = 0.75" in cells and "400" in cells
    assert "| 8 | 0.500±0.100 | 1.000±0.200 | 0.600 | 2.0 |" in md
    assert "the table's overrides at this size: `train.steps=4`" in md
    # 7 goals: thesis row, 3 thresholds, 2 normalized-vs-euclidean (not run), not copies.
    assert "git commit: `unknown`" in md and "2 of 7 goals met." in md


# A small table with the transfer, fine-tuning and Adam evaluators on breast cancer, so
# that they run on real (size test) flows without the MNIST / Fashion-MNIST data.
_BC_TRANSFER = Table(
    name="bc_transfer_test", group="breast_cancer", title="test",
    rows=(Row("geometric_unguided", "g", "transfer", FlowSpec("breast_cancer", "geometric"),
              options={"task": "breast_cancer", "arch": "30-24-24-2", "guidance": 0.0}),
          Row("geometric_guided", "gg", "transfer", FlowSpec("breast_cancer", "geometric"),
              options={"task": "breast_cancer", "guidance": 0.1}),
          Row("finetune", "ft", "finetune", FlowSpec("breast_cancer", "geometric"), extra=True,
              options={"task": "breast_cancer", "guidance": 0.1,
                       "sgd_check": "geometric_guided"}),
          Row("adam", "Adam", "adam", options={"finetune_row": "finetune"})),
    overrides={"test": (("model.name", "neuron_transformer"),)},
    goals=(G.BestOf(("geometric_guided",), 0.0, "guided"), G.InitCurves(), G.SgdCheck()))


def test_transfer_finetune_and_adam_rows_on_real_flows(tmp_path, monkeypatch):
    monkeypatch.setitem(declarations.TABLES, _BC_TRANSFER.name, _BC_TRANSFER)
    kw = dict(size="test", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "res"),
              progress=False)
    table = tables.build_table(_BC_TRANSFER.name, **kw)
    rows = {r["key"]: r for r in table["rows"]}
    assert list(rows) == ["geometric_unguided", "geometric_guided", "adam"]
    with np.load(rows["geometric_unguided"]["published"]["file"]) as z:
        assert z["W0"].shape[1:] == (24, 30) and z["W1"].shape[1:] == (24, 24)
    assert rows["geometric_guided"]["model"] == "neuron_transformer"
    assert rows["geometric_guided"]["representative"] == "balanced"
    with np.load(rows["geometric_guided"]["published"]["file"]) as z:
        assert str(z["representative"]) == "balanced"
    ft = table["extras"]["finetune"]
    assert ft["seeds"] == [0, 1] and ft["starts"] == list(evaluators.FINETUNE_STARTS)
    assert [(p["unit"], p["value"]) for p in ft["points"]] == [("epoch", 1)]
    n = ft["networks"] * len(ft["seeds"])
    spe = ft["steps_per_epoch"]
    assert ft["curves"]["random init"]["step"] == [0, spe]
    assert np.asarray(ft["curves"]["guided samples"]["step_accuracy"]).shape == (n, 2)
    assert rows["adam"]["num"] == n
    assert rows["adam"]["acc_mean"] == pytest.approx(
        ft["points"][-1]["random init"]["mean"])
    sc = table["extras"]["sgd_check"]
    assert sc["row"] == "geometric_guided" and 0.0 <= sc["samples"]["mean"] <= 1.0
    md = _md(table)
    assert "## Fine-tuning from samples vs random init" in md
    assert "### Wall-clock seconds to reach 0.80" in md
    assert "## Plain SGD from the published unguided samples" in md
    assert {g["goal"] for g in table["goals"]} == {
        "guided", "fine-tuning from unguided samples not behind random init",
        "fine-tuning from guided samples ahead of random init",
        "plain SGD from published unguided samples (geometric_guided)"}
    # Everything is cached: a rerun samples and fine-tunes nothing.
    again = tables.build_table(_BC_TRANSFER.name, **kw)
    assert all(r["reused"] for r in again["rows"])
    assert again["extras"]["finetune"]["reused"]


@pytest.mark.slow
def test_breast_cancer_table_with_real_training(tmp_path):
    """Two flow rows trained for real (size test, ~1.5 min on 2 cores)."""
    kw = dict(size="test", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "res"),
              rows="geometric_aligned_ot,euclidean_plain,target", progress=False)
    table = tables.build_table("breast_cancer", **kw)
    for r in table["rows"][:2]:
        assert r["train_steps"] == 6 and 0.0 <= r["acc_mean"] <= 1.0
        assert r["novelty"]["l2_median"] > 0
    again = tables.build_table("breast_cancer", **kw)
    assert all(r["reused"] for r in again["rows"][:2])


def test_conditioning_tables_declarations():
    for name, task in (("conditioning_breast_cancer", "breast_cancer"),
                       ("conditioning_mnist", "mnist")):
        table = tables.get_table(name)
        cpu = Context(table, "cpu", [], "r", "o", 0, [])
        cond, plain = table.row("geometric_final").flow, table.row("geometric_unconditioned").flow
        c, p = cpu.config(cond), cpu.config(plain)
        assert (c.flow.condition, p.flow.condition) == ("train_loss", "none")
        assert c.sample.condition_weight == declarations.CONDITION_WEIGHT
        assert c.zoo.burn_in_epochs == 0 and c.zoo.dir.endswith(f"{task}_wide")
        assert c.zoo == p.zoo and c.train.steps == p.train.steps
        assert cpu.workdir(cond) != cpu.workdir(plain)
        assert cpu.workdir(cond) == cpu.workdir(table.row("prompts").flow)
        test = Context(table, "test", [], "r", "o", 0, [])
        assert test.config(cond).zoo.dir.endswith(f"{task}_test")  # no preset at test size
        assert any(isinstance(g, G.PromptAlignment) for g in table.goals)


def _prompt_section(achieved_scale=1.0):
    prompts = [0.05, 0.1, 0.2, 0.4]
    pts = [{"where": "range", "prompt": v, "weight": 1.5, "index": i,
            "train_loss": [v * achieved_scale * 0.9, v * achieved_scale * 1.1],
            "train_loss_mean": v * achieved_scale, "train_loss_std": 0.01 * v,
            "acc_mean": 0.9, "acc_std": 0.01, "loss_mean": 0.3, "loss_std": 0.02}
           for i, v in enumerate(prompts)]
    pts.append({"where": "beyond", "prompt": 0.02, "weight": 1.5, "index": 4,
                "train_loss": [0.04], "train_loss_mean": 0.04, "train_loss_std": 0.0,
                "acc_mean": 0.95, "acc_std": 0.0, "loss_mean": 0.2, "loss_std": 0.0})
    from weightflow_jax import evaluation
    align = evaluation.prompt_alignment(prompts, [p["train_loss"] for p in pts[:4]])
    return {"key": "prompts", "label": "Prompt alignment", "workdir": "w", "train_steps": 10,
            "num": 2, "steps": 4, "weights": [1.5], "range": ["p05", "p95"],
            "beyond": [1.0], "points": pts, "alignment": {"1.5": align}, "task": "mnist",
            "zoo": "z", "zoo_prompts": {"p05": 0.05, "p95": 0.4, "best": 0.02,
                                        "final": 0.1}}


def test_prompt_alignment_goal_and_section():
    goal = G.PromptAlignment(0.9, 1.5)
    good = {"rows": [], "extras": {"prompt_alignment": _prompt_section(1.0)}}
    bad = {"rows": [], "extras": {"prompt_alignment": _prompt_section(2.0)}}
    assert _status((goal,), good) == {"prompt alignment": "met"}
    assert _status((goal,), bad) == {"prompt alignment": "missed"}
    assert _status((goal,), {"rows": [], "extras": {}}) == {"prompt alignment": "not run"}
    assert _status((G.PromptAlignment(0.9, 1.0),), good) == {"prompt alignment": "not run"}
    lines = "\n".join(render._prompt_lines(_prompt_section(1.0), "o"))
    assert "| range | 0.1000 | 1.5 | 0.1000±0.0010 |" in lines
    assert "weight 1.5: R² (prompt means, around the identity) **1.000**" in lines
    assert "prompt 0.0200 (w=1.5) achieved 0.0400 (2.00 x the best" in lines


_BC_PROMPTS = Table(
    name="bc_prompts_test", group="bc_prompts",
    title="test", rows=(Row("prompts", "p", "prompt_alignment", FlowSpec(
        "breast_cancer", "geometric", overrides={"all": (("flow.condition", "train_loss"),)}),
        extra=True, options={"num_prompts": 2, "weights": (1.0,), "num": 2, "steps": 2,
                             "beyond": (0.5,)}),),
    goals=(G.PromptAlignment(0.9, 1.0),))


def test_prompt_alignment_section_on_a_real_conditioned_flow(tmp_path, monkeypatch):
    monkeypatch.setitem(declarations.TABLES, _BC_PROMPTS.name, _BC_PROMPTS)
    kw = dict(size="test", runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "res"),
              progress=False)
    table = tables.build_table(_BC_PROMPTS.name, **kw)
    sec = table["extras"]["prompt_alignment"]
    assert [p["where"] for p in sec["points"]] == ["range", "range", "beyond",
                                                   "unconditional"]
    zp = sec["zoo_prompts"]
    assert sec["points"][0]["prompt"] == pytest.approx(zp["p05"])
    assert sec["points"][1]["prompt"] == pytest.approx(zp["p95"])
    assert sec["points"][2]["prompt"] == pytest.approx(0.5 * zp["best"])
    for p in sec["points"]:
        assert len(p["train_loss"]) == 2 and np.isfinite(p["train_loss_mean"])
        with np.load(p["published"]["file"]) as z:
            assert z["W0"].shape == (2, 16, 30)
        got = json.load(open(p["samples_source"][:-4] + ".json"))
        if p["prompt"] is None:
            assert got["condition"] == "none" and got["condition_info"]["value"] is None
        else:
            assert got["condition_info"]["value"] == pytest.approx(p["prompt"])
    assert np.isfinite(sec["alignment"]["1"]["r2_means"])
    assert table["goals"][0]["status"] in ("met", "missed")
    assert any(p.endswith("prompt_alignment.png") for p in table["plots"])
    assert "## p" in _md(table)
    again = tables.build_table(_BC_PROMPTS.name, **kw)
    assert all(p["reused"] for p in again["extras"]["prompt_alignment"]["points"])


def test_flow_version_changes_on_retraining_only(tmp_path):
    from weightflow_jax.tables import context as ctx_lib
    wd = tmp_path / "flow"
    os.makedirs(wd / "checkpoints" / "8")
    atomic.write_json(wd / "eval.json", {"train": {"final_step": 8}})
    v = ctx_lib.flow_version(str(wd))
    atomic.write_json(wd / "eval.json", {"train": {"final_step": 8}, "samples": {}})  # re-sampled
    assert ctx_lib.flow_version(str(wd)) == v
    os.rmdir(wd / "checkpoints" / "8")                     # retrained: a new checkpoint
    os.makedirs(wd / "checkpoints" / "8")
    os.utime(wd / "checkpoints" / "8", ns=(2, 2))
    assert ctx_lib.flow_version(str(wd)) != v
    atomic.write_json(wd / "eval.json", {"train": {"final_step": 16}})  # longer training
    assert ctx_lib.flow_version(str(wd)).startswith("16:")
