"""Rendering a table dict: ``<table>.md`` (our numbers next to the thesis's, goals, header
with command, overrides, seeds, hardware, packages, commit, date), ``<table>.json`` and PNG
plots in ``<table>/``. Pure text from the dict, so a saved JSON re-renders the same file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from weightflow_jax import atomic, evaluation

__all__ = ["render_markdown", "plot_table", "write_results", "results_table"]


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    return f"{v:.{digits}f}" if np.isfinite(v) else "–"


def _ms(mean: Any, std: Any, digits: int = 3) -> str:
    if mean is None or not np.isfinite(float(mean)):
        return "–"
    return _f(mean, digits) if std is None else evaluation.format_mean_std(mean, std, digits)


def _novelty_cell(nov: Mapping[str, Any] | None) -> str:
    if not nov:
        return "–"
    if "error" in nov:
        return "error"
    med, sp = nov.get("l2_median"), nov.get("l2_spacing_median")
    if med is None:
        return "–"
    if sp is None:
        return f"{med:.3g}"
    return f"{med:.3g} / {sp:.3g} = {med / sp:.2f}"


def _row_cells(r: Mapping[str, Any]) -> dict[str, str]:
    th = r.get("thesis") or {}
    acc, loss = th.get("acc"), th.get("loss")
    ens = r.get("ensemble_acc")
    return {
        "model": r.get("model") or "–",
        "accuracy": _ms(r.get("acc_mean"), r.get("acc_std")),
        "thesis accuracy": "–" if acc is None else _ms(acc[0], acc[1]),
        "loss": _ms(r.get("loss_mean"), r.get("loss_std")),
        "thesis loss": "–" if loss is None or loss[0] is None else _ms(loss[0], loss[1]),
        "diversity (JSD)": _f(r.get("diversity"), 5),
        "thesis diversity": _f(th.get("diversity"), 5),
        "ensemble accuracy (k)": ("–" if ens is None or not np.isfinite(float(ens))
                                  else f"{float(ens):.3f} (k={r.get('ensemble_size')})"),
        "thesis ensemble": _f(th.get("ensemble")),
        "nearest L2 / spacing": _novelty_cell(r.get("novelty")),
        "train steps": "–" if r.get("train_steps") is None else str(int(r["train_steps"])),
        "train s": _f(r.get("train_seconds"), 0),
        "wall s": _f(r.get("wall_seconds"), 0),
    }


def results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The main markdown table: one line per row; all-empty columns dropped."""
    cells = [_row_cells(r) for r in rows]
    columns = list(cells[0]) if cells else []
    keep = [col for col in columns if col in ("accuracy",)
            or any(cell[col] != "–" for cell in cells)]
    # The label column, then accuracy first so that the table reads like the thesis's.
    if "model" in keep:
        keep.remove("model")
        keep.insert(1, "model")
    body = [[r["label"]] + [cell[col] for col in keep] for r, cell in zip(rows, cells)]
    return evaluation.markdown_table(["method"] + keep, body)


def _lock_line(lock: Mapping[str, Any] | None) -> str:
    if not lock:
        return "no lock file found (not run from a source checkout)"
    drift = lock.get("mismatches") or []
    state = ("installed versions match it" if not drift else
             f"{len(drift)} installed version(s) differ: {'; '.join(drift[:5])}")
    return f"`{lock['name']}` (sha256 `{lock['sha256']}`), {state}"


def _header(table: Mapping[str, Any]) -> list[str]:
    hw = table["hardware"]
    ov = table["overrides"]
    tov = table.get("table_overrides") or {}
    size_ov = [kv for s in ("all", table["size"]) for kv in tov.get(s, [])]
    lines = [
        f"# {table['title']} (size `{table['size']}`)", "",
        f"- command: `{table['command']}`",
        f"- size: `{table['size']}`; rows: {', '.join(table['selected_rows'])}",
        "- the table's overrides at this size: " + (
            ", ".join(f"`{k}={v}`" for k, v in size_ov) if size_ov else "none"),
        "- command-line overrides: " + (", ".join(f"`{k}={v}`" for k, v in ov) if ov else
                                         "none"),
        "- seeds: " + ", ".join(f"{k} = {v}" for k, v in sorted(table["seeds"].items())),
        f"- hardware: backend `{hw.get('backend')}`, {len(hw.get('devices', []))} device(s) "
        f"{', '.join(hw.get('devices', []))}; {hw.get('cpu_count')} CPUs; "
        f"{hw.get('platform')}; Python {hw.get('python')}, JAX {hw.get('jax')}",
        "- packages: " + _lock_line(hw.get("lock_file")),
        f"- git commit: `{table.get('git_commit') or 'unknown'}`",
        f"- date: {table['date']}; total wall time of this command: "
        f"{table.get('wall_seconds', float('nan')):.0f} s (rows reused from earlier runs "
        "count only their loading; each row's own time is in the table)",
        f"- runs dir: `{table['runs_dir']}`; all numbers: `{table['table']}.json`; sampled "
        f"networks: `{table['table']}/samples/<row>.npz`",
    ]
    if table.get("description"):
        lines += ["", table["description"]]
    return lines


def _ci(p: Mapping[str, Any]) -> str:
    return f"{p['mean']:.3f} ± {p['ci95']:.3f}"


def _secs(v: Any) -> str:
    return "not reached" if v is None else f"{v:.1f}"


def _finetune_lines(ft: Mapping[str, Any]) -> list[str]:
    names = ft["starts"]
    body = [[f"{p['value']} {'steps' if p['unit'] == 'steps' else 'epoch'}"
             f"{'' if p['unit'] == 'steps' else 's' if p['value'] > 1 else ''}"]
            + [_ci(p[nm]) for nm in names] for p in ft["points"]]
    lines = ["## Fine-tuning from samples vs random init", "",
             f"{ft['label']}: per seed (seeds {', '.join(map(str, ft['seeds']))}), "
             f"{ft['networks']} networks of each start, all trained with Adam lr {ft['lr']:g}, "
             f"batch {ft['batch']} on the same minibatch order ({ft['steps_per_epoch']} steps "
             "an epoch). Starts: He-initialized networks; unguided samples (balanced form, "
             "unit last-layer norm) and the same samples in the exact form (unit rows, all "
             "scale in the last layer); guided samples (the `finetune` row's guidance); the "
             "final networks of the flow's zoo (a reference: trained on the flow's task). Test accuracy: mean ± 95% t-interval "
             "of the mean over all networks of all seeds.", "",
             evaluation.markdown_table(["after"] + list(names), body), ""]
    r = ft.get("reach")
    if r:
        rb = [[nm, _secs(r["per_start"][nm]["mean_seconds"]),
               ", ".join(_secs(v) for v in r["per_start"][nm]["seconds"])] for nm in names]
        g_total = r["guided_total_seconds"]
        lines += [f"### Wall-clock seconds to reach {r['threshold']:.2f} on `{ft['task']}`", "",
                  f"Training seconds (2 CPU cores, the {ft['networks']} networks of a seed "
                  "trained together, compilation excluded) until their mean test accuracy "
                  f"first reaches {r['threshold']:.2f}, interpolated between evaluations "
                  "every 16 steps; mean over seeds and per seed.", "",
                  evaluation.markdown_table(["start", "mean s", "per seed s"], rb), "",
                  f"Guided sampling of {ft['networks']} networks took "
                  f"{', '.join(f'{v:.1f}' for v in r['guided_sampling_seconds'])} s per seed "
                  f"(mean sample accuracy {', '.join(f'{v:.3f}' for v in r['guided_sample_acc'])}"
                  f"); with the fine-tuning still needed, guided sampling reaches "
                  f"{r['threshold']:.2f} after {', '.join(_secs(v) for v in g_total)} s.", ""]
        rand = r["per_start"].get("random init", {}).get("mean_seconds")
        gmean = (None if any(v is None for v in g_total) else float(np.mean(g_total)))
        if rand is not None and gmean is not None:
            cheaper = "Adam from random init" if rand < gmean else "guided sampling"
            lines += [f"Cheaper way to a {r['threshold']:.2f} network here: **{cheaper}** "
                      f"({rand:.1f} s vs {gmean:.1f} s).", ""]
    return lines


def _guidance_sweep_lines(sw: Mapping[str, Any]) -> list[str]:
    body = [[p["label"], p["options"].get("guidance_mode"), p["options"].get("flow_velocity"),
             p["options"].get("output_scale"), p.get("guidance_batch"),
             _ms(p["acc_mean"], p["acc_std"]), _f(p["loss_mean"]), _f(p["ensemble_acc"]),
             _f(p["sample_seconds"], 1)] for p in sw["points"]]
    return [f"## {sw['label']}", "",
            f"{sw['num']} guided samples per point on `{sw['task']}` (test split; guidance on "
            "the training split). λ·dt is the learning rate per Euler step on the balanced "
            f"network; the chosen point (λ={sw['chosen'][0]:g}, {sw['chosen'][1]} steps) is "
            "the guided rows' setting, and the last rows change one thing of it.", "",
            evaluation.markdown_table(["setting", "mode", "flow velocity", "output scale",
                                       "batch", "accuracy", "loss", "ensemble", "sampling s"],
                                      body), ""]


def _sgd_check_lines(sc: Mapping[str, Any]) -> list[str]:
    return ["## Plain SGD from the published unguided samples", "",
            f"`{sc['file']}` ({sc['networks']} networks, row `{sc['row']}`) and as many He "
            f"initializations per seed, SGD lr {sc['lr']:g} (no momentum), batch {sc['batch']}, "
            f"{sc['steps']} steps, seeds {', '.join(map(str, sc['seeds']))} (minibatch order): "
            f"test accuracy {sc['samples']['mean']:.3f} from the samples vs "
            f"{sc['random init']['mean']:.3f} from random init.", ""]


def _prompt_lines(sec: Mapping[str, Any], base: str) -> list[str]:
    zp = sec["zoo_prompts"]
    lines = [f"## {sec['label']}", "",
             f"The loss-conditioned flow (`{sec['workdir']}`, {sec['train_steps']} steps) "
             f"sampled {sec['num']} networks per prompt with {sec['steps']} Euler steps. "
             f"Prompts: {sum(p['where'] == 'range' and p['weight'] == sec['weights'][0] for p in sec['points'])} "
             f"training losses evenly spaced in log-loss between the zoo's "
             f"{sec['range'][0]} ({zoo_f(zp[sec['range'][0]])}) and {sec['range'][1]} "
             f"({zoo_f(zp[sec['range'][1]])}) of recorded training losses (zoo `{sec['zoo']}`), "
             f"then beyond the range: the zoo's best loss ({zoo_f(zp['best'])}) times "
             f"{', '.join(f'{f:g}' for f in sec['beyond'])}; the last line samples with the null "
             f"condition. Achieved train loss: mean ± std over the networks of the loss on "
             f"the whole training split; the zoo's final snapshots average "
             f"{zoo_f(zp['final'])}.", ""]
    body = []
    for p in sec["points"]:
        pub = p.get("published")
        link = (f"[{os.path.basename(pub['file'])}]({os.path.relpath(pub['file'], base)})"
                if pub else "–")
        body.append([p["where"], "–" if p["prompt"] is None else zoo_f(p["prompt"]),
                     "–" if p["weight"] is None else f"{p['weight']:g}",
                     _ms(p["train_loss_mean"], p["train_loss_std"], 4),
                     _ms(p["acc_mean"], p["acc_std"]), _ms(p["loss_mean"], p["loss_std"]),
                     link])
    lines += [evaluation.markdown_table(["prompt range", "prompted train loss", "weight",
                                         "achieved train loss", "test accuracy", "test loss",
                                         "samples"], body), ""]
    for w, a in sec["alignment"].items():
        lines.append(f"- weight {w}: R² (prompt means, around the identity) "
                     f"**{a['r2_means']:.3f}**, R² (single networks) {a['r2_networks']:.3f}, "
                     f"slope {a['slope']:.3f}, intercept {a['intercept']:.4f}, Spearman "
                     f"{a['spearman']:.3f}")
    beyond = [p for p in sec["points"] if p["where"] == "beyond"]
    if beyond:
        best = zp["best"]
        lines.append("- beyond the best recorded loss: " + "; ".join(
            f"prompt {p['prompt']:.4f} (w={p['weight']:g}) achieved "
            f"{p['train_loss_mean']:.4f} ({p['train_loss_mean'] / best:.2f} x the best, "
            f"test accuracy {p['acc_mean']:.3f})" for p in beyond))
    return lines + [""]


def zoo_f(v: Any) -> str:
    """A loss value with 4 digits."""
    return _f(v, 4)


def coverage_line(rows: list[Mapping[str, Any]]) -> str:
    """One sentence: how many zoo runs each row's networks land near, against random
    checkpoints (:func:`weightflow_jax.evaluation.run_coverage`); ``""`` when no row has it
    (e.g. a table rendered from a json written before it was measured)."""
    have = [r for r in rows if (r.get("novelty") or {}).get("runs_covered") is not None]
    if not have:
        return ""
    total = have[0]["novelty"]["runs_total"]
    parts = [f"{r['label']} {r['novelty']['runs_covered']} "
             f"({r['novelty']['runs_covered_uniform']:.1f}; at most "
             f"{r['novelty']['max_run_share']:.0%} at one run)" for r in have]
    return (f"Runs covered: of the zoo's {total} training runs, how many hold the nearest "
            f"checkpoint of at least one of a row's networks (in brackets: the number "
            f"expected if each network were a training checkpoint drawn at random): "
            + "; ".join(parts) + ".")


def render_markdown(table: Mapping[str, Any]) -> str:
    """The ``results/<table>.md`` text of a table dict (see ``runner.build_table``)."""
    lines = _header(table) + [
        "", "## Results", "",
        "Accuracy / loss: mean ± std over the networks of a row on the test split. Model: "
        "the vector field. Diversity: mean pairwise Jensen-Shannon divergence of predictions "
        "(nats). Ensemble: accuracy of the averaged predictions of the first k networks. "
        "Nearest L2 / spacing: median L2 distance of the samples to the nearest training "
        "checkpoint / median distance of a checkpoint to the nearest checkpoint of another "
        "run, both up to permutation (each network aligned by weight matching to the "
        "nearest checkpoint of every run in turn). Train steps / train s / wall "
        "s: flow training steps, the training loop's seconds (with compilation; summed over "
        "the runs of a resumed or re-sampled flow) and the train + sample + evaluate run's "
        "seconds (transfer rows: sampling time). Thesis "
        "columns: Erdogan 2025 (arXiv 2504.03710).", "",
        results_table(table["rows"]),
    ]
    notes = [r for r in table["rows"] if r.get("note")]
    if notes:
        lines += ["Notes:", ""] + [f"- {r['label']}: {r['note']}" for r in notes] + [""]
    ex = table.get("extras", {})
    if "novelty_settings" in ex:
        ns = ex["novelty_settings"]
        lines += [f"Novelty uses {ns['num_checkpoints']} of the zoo's {ns['num_snapshots']} "
                  f"snapshots (aligned, random subset, seed {ns['seed']}); spacing measured "
                  f"for {ns['spacing_queries']} of them. Zoo: `{ns['zoo']}`.", ""]
        cov = coverage_line(table["rows"])
        if cov:
            lines += [cov, ""]
    if "steps_sweep" in ex:
        sw = ex["steps_sweep"]
        body = [[p["steps"], _ms(p["acc_mean"], p["acc_std"]),
                 _ms(p["loss_mean"], p["loss_std"]), _f(p["ensemble_acc"]),
                 _f(p["sample_seconds"], 1)] for p in sw["points"]]
        lines += [f"## {sw.get('label', 'Euler steps vs accuracy')}", "",
                  f"The same trained flow (`{sw['workdir']}`, {sw['train_steps']} steps) "
                  f"re-sampled; step counts capped by the config's {sw['cap']}.", "",
                  evaluation.markdown_table(["Euler steps", "accuracy", "loss",
                                             "ensemble accuracy", "sampling s"], body)]
    if "guidance_sweep" in ex:
        lines += _guidance_sweep_lines(ex["guidance_sweep"])
    if "finetune" in ex:
        lines += _finetune_lines(ex["finetune"])
    if "sgd_check" in ex:
        lines += _sgd_check_lines(ex["sgd_check"])
    if "prompt_alignment" in ex:
        lines += _prompt_lines(ex["prompt_alignment"], table["results_dir"])
    pub = [r for r in table["rows"] if r.get("published")]
    if pub:
        base = table["results_dir"]
        body = [[r["key"], f"[{os.path.relpath(r['published']['file'], base)}]"
                           f"({os.path.relpath(r['published']['file'], base)})",
                 r["published"]["num"], r["published"].get("representative") or "exact",
                 r["published"]["dtype"],
                 f"{r['published']['max_acc_change_float16']:.4f}",
                 f"{r['published']['bytes'] / 1024:.0f}"] for r in pub]
        lines += ["## Published samples", "",
                  "Every sampled row's networks as numpy `W0, b0, W1, b1, ...` (`W{i}` shaped "
                  "(n, out, in)) in the form the column says (balanced: per hidden neuron the "
                  "incoming weights and bias have the outgoing weights' norm; exact: the "
                  "flow's decoding; the file's `representative` entry says it too); float16 where rounding to it changes no network's test "
                  "accuracy by more than 0.001 (largest change shown), else float32. "
                  "Re-evaluate with `weightflow_jax.sampling.load_samples_npz` + "
                  "`weightflow_jax.evaluation.accuracy_and_loss`.", "",
                  evaluation.markdown_table(["row", "file", "networks", "form", "dtype",
                                             "max accuracy change (float16)", "KiB"], body)]
    lines += ["## Goals", "", "Definitions:", ""]
    lines += [f"- {d}" for d in table["goal_definitions"]] + [""]
    gbody = [[g["goal"], g["value"] if not isinstance(g["value"], float) else _f(g["value"]),
              g["target"], g["status"]] for g in table["goals"]]
    lines += [evaluation.markdown_table(["goal", "ours", "target", "status"], gbody)]
    met = sum(g["status"] == "met" for g in table["goals"])
    lines += [f"{met} of {len(table['goals'])} goals met.", "", "## Rows", ""]
    rbody = [[r["key"], r.get("workdir") or "–",
              "–" if r.get("reused") is None else ("yes" if r["reused"] else "no"),
              _f(r.get("row_seconds"), 1)] for r in table["rows"]]
    lines += [evaluation.markdown_table(["row", "workdir", "reused", "this command s"], rbody)]
    if table.get("plots"):
        lines += ["## Plots", ""]
        base = table["results_dir"]
        lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, base)})"
                  for p in table["plots"]] + [""]
    return "\n".join(lines)


_SHORT = {"target": "target", "snapshots": "training snapshots", "heldout": "new SGD runs",
          "noisy": "checkpoints + noise", "adam": "Adam-trained"}


def _short(row: Mapping[str, Any]) -> str:
    return _SHORT.get(row["key"], row["label"])


def plot_table(table: Mapping[str, Any]) -> list[str]:
    """Writes the table's PNGs into ``<results_dir>/<table>/``; returns their paths."""
    out_dir = os.path.join(table["results_dir"], table["table"])
    paths = []
    accs = {_short(r): r["acc"] for r in table["rows"] if r.get("acc")}
    if accs:
        paths.append(evaluation.plot_accuracy_histograms(
            os.path.join(out_dir, "accuracy_histograms.png"), accs,
            title=f"{table['table']}: test accuracy per network"))
    curves = {_short(r): (r["ensemble_sizes"], r["ensemble_curve"]) for r in table["rows"]
              if r.get("ensemble_curve")}
    if curves:
        hl = {}
        for r in table["rows"]:
            th = (r.get("thesis") or {}).get("ensemble")
            if th is not None and not r.get("reference"):
                hl[f"thesis {_short(r)}: {th:.2f}"] = th
        paths.append(evaluation.plot_ensemble_curve(
            os.path.join(out_dir, "ensemble_curve.png"), curves, hlines=hl))
    ex = table.get("extras", {})
    if ex.get("steps_sweep", {}).get("points"):
        pts = ex["steps_sweep"]["points"]
        paths.append(evaluation.plot_steps_vs_accuracy(
            os.path.join(out_dir, "euler_steps_vs_accuracy.png"),
            {"geometric (aligned + OT)": ([p["steps"] for p in pts],
                                          [p["acc_mean"] for p in pts],
                                          [p["acc_std"] for p in pts])}))
    if ex.get("prompt_alignment", {}).get("points"):
        sec = ex["prompt_alignment"]
        series = {}
        for w in sec["weights"]:
            pts = [p for p in sec["points"] if p["weight"] == w]
            series[f"weight {w:g}"] = ([p["prompt"] for p in pts],
                                       [p["train_loss_mean"] for p in pts],
                                       [p["train_loss_std"] for p in pts])
        zp = sec["zoo_prompts"]
        paths.append(evaluation.plot_prompt_alignment(
            os.path.join(out_dir, "prompt_alignment.png"), series,
            title=f"{table['table']}: prompted vs achieved training loss",
            markers={"zoo p05": zp["p05"], "zoo p95": zp["p95"], "zoo best": zp["best"]}))
    if "finetune" in ex:
        paths.append(evaluation.plot_finetune_curves(
            os.path.join(out_dir, "finetune_curves.png"), ex["finetune"]["curves"],
            title=f"{ex['finetune']['task']}: fine-tuning (Adam) from each start"))
    return paths


def write_results(table: Mapping[str, Any]) -> tuple[str, str]:
    """Writes ``<results_dir>/<table>.md`` and ``.json`` atomically; returns their paths."""
    base = os.path.join(table["results_dir"], table["table"])
    atomic.write_text(base + ".md", render_markdown(table))
    atomic.write_json(base + ".json", table)
    return base + ".md", base + ".json"
