"""The table evaluators, by name: each turns one declared row into a row dict (or, for the
``extra`` rows, a section of the table).

An evaluator is a function ``(ctx, row, rows_so_far) -> (row dict | None, extras dict)``
registered in :data:`EVALUATORS`; rows run in table order, so a baseline calibrated to the
flows (``noisy``) comes after them. Every sampled row records ``samples_source``, the
``.npz`` its networks came from (published by :mod:`weightflow_jax.tables.publish`).

* ``flow`` — train (or reuse) the row's flow, its samples' numbers and novelty;
* ``target`` — the zoo's final snapshots; ``ensemble`` — their posterior predictive;
* ``noisy`` — checkpoints + Gaussian noise at the best flow row's nearest distance;
* ``steps_sweep`` — a flow re-sampled with several Euler step counts (extra section);
* ``transfer`` — a flow sampled for another task / hidden width, optionally guided;
* ``finetune`` — fine-tuning from guided samples vs random init, several seeds (extra
  section); ``adam`` — the random-init networks after the last epoch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from weightflow_jax import atomic, data as data_lib, evaluation, mlp, pipeline
from weightflow_jax import sampling as sampling_lib
from weightflow_jax.tables import context as ctx_lib
from weightflow_jax.tables.spec import Row

__all__ = ["EVALUATORS", "EULER_SWEEP", "FINETUNE", "FINETUNE_BATCH", "FINETUNE_LR",
           "sweep_steps", "stats_row", "cached_samples", "register"]

EULER_SWEEP = (8, 32, 128, 512)
# Fine-tuning settings per size: epochs, networks per initialization and seed, seeds.
FINETUNE = {"default": dict(epochs=20, networks=16, seeds=(0, 1, 2)),
            "cpu": dict(epochs=5, networks=8, seeds=(0, 1, 2)),
            "test": dict(epochs=1, networks=2, seeds=(0, 1))}
FINETUNE_BATCH = 128
FINETUNE_LR = 1e-3

Evaluator = Callable[[ctx_lib.Context, Row, list], tuple[dict | None, dict]]
EVALUATORS: dict[str, Evaluator] = {}


def register(name: str) -> Callable[[Evaluator], Evaluator]:
    def deco(fn: Evaluator) -> Evaluator:
        EVALUATORS[name] = fn
        return fn
    return deco


def stats_row(row: Row, ev: Mapping[str, Any], **extra) -> dict[str, Any]:
    """A row dict from an :func:`pipeline.evaluate_networks` dict."""
    sizes = ev.get("ensemble_sizes") or [ev.get("num", 0)]
    out = {
        "key": row.key, "label": row.label, "evaluator": row.evaluator,
        "is_flow": row.is_flow, "num": int(ev["num"]),
        "acc_mean": float(ev["acc_mean"]), "acc_std": float(ev["acc_std"]),
        "loss_mean": float(ev["loss_mean"]), "loss_std": float(ev["loss_std"]),
        "diversity": float(ev["diversity_jsd"]), "ensemble_acc": float(ev["ensemble_acc"]),
        "ensemble_size": int(sizes[-1]),
        "ensemble_sizes": [int(s) for s in ev.get("ensemble_sizes", [])],
        "ensemble_curve": [float(a) for a in ev.get("ensemble_curve", [])],
        "acc": [float(a) for a in ev.get("acc", [])],
        "thesis": None if row.thesis is None else dict(row.thesis),
        "reference": bool(row.options.get("reference", False)),
        "model": None, "novelty": None, "train_steps": None, "wall_seconds": None,
        "row_seconds": None, "workdir": None, "reused": None, "note": "",
        "samples_source": None, "samples_task": None,
    }
    out.update(extra)
    return out


def _print_row(table: str, row: Mapping[str, Any]) -> None:
    how = "reused" if row.get("reused") else "computed"
    if row.get("row_seconds") is not None:
        how += f", {row['row_seconds']:.1f} s"
    loss = "–" if row["loss_mean"] is None else f"{row['loss_mean']:.3f}"
    print(f"[{table}] {row['key']:<26s} {row['label']}: acc {row['acc_mean']:.3f}"
          f"±{row['acc_std'] or 0:.3f} loss {loss} ({how})", flush=True)


@register("flow")
def flow_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    ev = ctx.flow(row.flow)
    cfg = ctx.config(row.flow)
    note = row.options.get("note", "")
    out = stats_row(row, ev["samples"], train_steps=int(ev["train"]["final_step"]),
                    wall_seconds=float(ev.get("wall_seconds", float("nan"))),
                    train_seconds=float(ev["train"].get("wall_time_s", float("nan"))),
                    row_seconds=float(ev["row_seconds"]), workdir=ev["workdir"],
                    reused=ev["reused"], model=str(cfg.model.name), note=note,
                    samples_source=os.path.join(ev["workdir"], "samples.npz"),
                    samples_task=str(cfg.zoo.dataset))
    out["novelty"] = ctx_lib.row_novelty(ctx.zoo(), ev["workdir"])
    _print_row(ctx.table.name, out)
    return out, {"novelty_settings": ctx.zoo().settings()}


def _target_eval(ctx: ctx_lib.Context) -> tuple[dict, float]:
    if "target_eval" not in ctx.cache:
        t0 = time.time()
        z = ctx.zoo()
        ev = pipeline.evaluate_networks(z.zoo.select(z.zoo.final_indices()), z.x_test,
                                        z.y_test)
        ctx.cache["target_eval"] = (ev, time.time() - t0)
    return ctx.cache["target_eval"]


@register("target")
def target_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    ev, secs = _target_eval(ctx)
    out = stats_row(row, ev, row_seconds=secs, note=f"final snapshot of each of the zoo's "
                                                    f"{ctx.zoo().zoo.num_runs} runs")
    _print_row(ctx.table.name, out)
    return out, {}


@register("ensemble")
def ensemble_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    ev, secs = _target_eval(ctx)
    k = ev["ensemble_sizes"][-1]
    out = stats_row(row, ev, row_seconds=secs,
                    note=f"posterior predictive of the {k} final snapshots")
    out.update(acc_mean=float(ev["ensemble_acc"]), acc_std=None, loss_mean=None,
               loss_std=None, diversity=None, acc=[], ensemble_sizes=[], ensemble_curve=[])
    print(f"[{ctx.table.name}] ensemble: acc {out['acc_mean']:.3f}", flush=True)
    return out, {}


@register("noisy")
def noisy_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    """Checkpoints + Gaussian noise matched to the best flow row's median nearest distance."""
    t0 = time.time()
    z = ctx.zoo()
    flows = [r for r in rows if r.get("is_flow") and r.get("novelty")
             and "l2_median" in r["novelty"] and r["novelty"]["l2_median"] > 0]
    if not flows:
        raise ValueError("the noisy baseline needs a flow row with finite samples to match "
                         "its nearest-checkpoint distance; none of the selected flow rows has")
    best = max(flows, key=lambda r: r["acc_mean"])
    target = float(best["novelty"]["l2_median"])
    num = int(best["num"])
    noisy, info = evaluation.noisy_checkpoints(jax.random.key(ctx.seed), z.checkpoints, num,
                                               target)
    ev = pipeline.evaluate_networks(noisy, z.x_test, z.y_test)
    d = np.asarray(info["distances"], np.float64)
    sp = z.spacing["l2"][np.isfinite(z.spacing["l2"])]
    nov = {"l2_mean": float(d.mean()), "l2_median": float(np.median(d)),
           "l2_min": float(d.min()), "num_checkpoints": int(len(z.subset))}
    if sp.size:
        nov["l2_spacing_median"] = float(np.median(sp))
        nov["l2_spacing_mean"] = float(sp.mean())
    note = (f"σ={info['sigma']:.4g} per weight, calibrated so the mean L2 distance to the "
            f"nearest checkpoint is {info['mean_distance']:.4g} = the median of "
            f"'{best['label']}' (the flow row with the best accuracy)")
    out = stats_row(row, ev, novelty=nov, row_seconds=time.time() - t0, note=note,
                    matched_row=best["key"], sigma=float(info["sigma"]),
                    target_distance=target)
    _print_row(ctx.table.name, out)
    return out, {}


def sweep_steps(cap: int) -> list[int]:
    """The Euler step counts of the sweep: :data:`EULER_SWEEP` below ``cap``, and ``cap``."""
    return sorted({s for s in EULER_SWEEP if s < cap} | {int(cap)})


def cached_samples(ctx: ctx_lib.Context, workdir: str, tag: str, *, num: int, steps: int,
                   arch: str | None = None, task: str | None = None, guidance: float = 0.0,
                   guidance_batch: int = 256, chunk: int = 50, seed: int | None = None
                   ) -> tuple[dict, bool]:
    """:func:`pipeline.sample_and_evaluate` of the flow in ``workdir``, cached under
    ``workdir/table_<tag>.{npz,json}`` (re-sampled when the flow was retrained)."""
    seed = ctx.seed if seed is None else int(seed)
    prefix = os.path.join(workdir, f"table_{tag}")
    key = {"flow": ctx_lib.flow_version(workdir), "num": num, "steps": steps, "arch": arch,
           "task": task, "guidance": guidance, "guidance_batch": guidance_batch,
           "seed": seed}
    got = ctx_lib.read_json(prefix + ".json")
    if got and got.get("cache_key") == key and os.path.exists(prefix + ".npz"):
        return got, True
    run = pipeline.load_flow(workdir)
    res = pipeline.sample_and_evaluate(run, prefix, num=num, steps=steps, seed=seed,
                                       arch=arch, task=task, guidance=guidance,
                                       guidance_batch=guidance_batch, chunk=chunk)
    res["cache_key"] = key
    atomic.write_json(prefix + ".json", res)
    return res, False


@register("steps_sweep")
def steps_sweep(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[None, dict]:
    """Re-samples the row's flow with several Euler step counts."""
    ev = ctx.flow(row.flow)
    cfg = ctx.config(row.flow)
    out = []
    for s in sweep_steps(int(cfg.sample.steps)):
        t0 = time.time()
        if s == int(cfg.sample.steps):  # the flow's own samples (run_flow checked the config)
            res, hit = {"samples": ev["samples"], "sample_seconds": ev.get(
                "sample_seconds", float("nan"))}, True
        else:
            res, hit = cached_samples(ctx, ev["workdir"], f"sweep_s{s}",
                                      num=int(cfg.sample.num), steps=s,
                                      chunk=int(cfg.sample.chunk))
        sm = res["samples"]
        out.append({"steps": s, "acc_mean": sm["acc_mean"], "acc_std": sm["acc_std"],
                    "loss_mean": sm["loss_mean"], "loss_std": sm["loss_std"],
                    "ensemble_acc": sm["ensemble_acc"], "num": sm["num"],
                    "sample_seconds": res["sample_seconds"], "reused": hit})
        print(f"[{ctx.table.name}] steps_sweep {s:>4d} Euler steps: acc {sm['acc_mean']:.3f}"
              f"±{sm['acc_std']:.3f} ({'reused' if hit else 'sampled'}, "
              f"{time.time() - t0:.1f} s)", flush=True)
    return None, {"steps_sweep": {"workdir": ev["workdir"], "label": row.label,
                                  "train_steps": int(ev["train"]["final_step"]),
                                  "points": out, "cap": int(cfg.sample.steps)}}


def _transfer_tag(task: str, arch: str | None, guidance: float, steps: int) -> str:
    return f"{task}_{(arch or 'same').replace('-', 'x')}_g{guidance:g}_s{steps}"


def _transfer(ctx: ctx_lib.Context, row: Row, *, num: int | None = None,
              seed: int | None = None) -> tuple[dict, dict, bool, str]:
    """Samples ``row.flow`` for ``row.options`` (task, arch, guidance); cached."""
    ev = ctx.flow(row.flow)
    cfg = ctx.config(row.flow)
    task = str(row.options.get("task") or cfg.zoo.dataset)
    arch = row.options.get("arch")
    guidance = float(row.options.get("guidance", 0.0))
    steps = int(cfg.sample.steps)
    tag = _transfer_tag(task, arch, guidance, steps)
    if num is not None or seed is not None:
        tag += f"_n{num}_seed{seed}"
    res, hit = cached_samples(ctx, ev["workdir"], tag, num=int(num or cfg.sample.num),
                              steps=steps, arch=arch, task=task, guidance=guidance,
                              guidance_batch=int(cfg.sample.guidance_batch),
                              chunk=int(cfg.sample.chunk), seed=seed)
    return ev, res, hit, os.path.join(ev["workdir"], f"table_{tag}.npz")


@register("transfer")
def transfer_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    t0 = time.time()
    ev, res, hit, npz = _transfer(ctx, row)
    cfg = ctx.config(row.flow)
    guidance = float(row.options.get("guidance", 0.0))
    out = stats_row(row, res["samples"], train_steps=int(ev["train"]["final_step"]),
                    wall_seconds=float(res["sample_seconds"]), row_seconds=time.time() - t0,
                    workdir=ev["workdir"], reused=bool(ev["reused"] and hit),
                    model=str(cfg.model.name), samples_source=npz,
                    samples_task=str(res["task"]),
                    note=f"{res['arch']} on {res['task']}, {res['steps']} Euler steps, "
                         f"guidance {guidance:g}")
    _print_row(ctx.table.name, out)
    return out, {}


def _finetune(ctx: ctx_lib.Context, row: Row) -> dict[str, Any]:
    """Fine-tuning curves on the row's task: guided samples vs random init, per seed.

    Per seed ``s``: ``networks`` guided samples drawn with sampling seed ``s``, as many
    random N(0, 0.1²) initialisations from key ``s + 1``, both trained with the same
    minibatch order (key ``s``).
    """
    if "finetune" in ctx.cache:
        return ctx.cache["finetune"]
    t0 = time.time()
    st = FINETUNE[ctx.size]
    task = str(row.options["task"])
    seeds = tuple(int(s) for s in row.options.get("seeds", st["seeds"]))
    n = int(st["networks"])
    data = {}
    per_seed, any_miss = [], False
    for s in seeds:
        _, res, hit, npz = _transfer(ctx, row, num=n, seed=s)
        sampled = sampling_lib.load_samples_npz(npz)
        stat = os.stat(npz)
        key = {"samples": [npz, stat.st_mtime_ns, stat.st_size], "n": n, "seed": s,
               "epochs": st["epochs"], "batch": FINETUNE_BATCH, "lr": FINETUNE_LR}
        cache = os.path.join(os.path.dirname(npz), f"finetune_{task}_seed{s}.json")

        def compute(sampled=sampled, s=s):
            if "data" not in data:
                data["data"] = (data_lib.load(task, "train"), data_lib.load(task, "test"))
            (x_tr, y_tr), (x_te, y_te) = data["data"]
            inits = {"sampled": sampled,
                     "random init": evaluation.random_init(
                         jax.random.key(s + 1), mlp.layer_sizes(sampled), n, w_std=0.1)}
            curves = evaluation.compare_inits(
                inits, x_tr, y_tr, x_te, y_te, key=jax.random.key(s), epochs=st["epochs"],
                batch_size=FINETUNE_BATCH, optimizer="adam", learning_rate=FINETUNE_LR)
            return {name: {k: np.asarray(v).tolist() for k, v in cv.items()}
                    for name, cv in curves.items()}

        curves, hit_ft = ctx_lib.cached(cache, key, compute)
        any_miss |= not (hit and hit_ft)
        per_seed.append({"seed": s, "samples": npz, "curves": curves})
        print(f"[{ctx.table.name}] finetune seed {s} ({'reused' if hit_ft else 'computed'})",
              flush=True)
    names = ("sampled", "random init")
    epochs = per_seed[0]["curves"]["sampled"]["epoch"]
    stacked = {nm: {m: np.concatenate([np.asarray(p["curves"][nm][m]) for p in per_seed])
                    for m in ("test_accuracy", "test_loss")} for nm in names}
    per_epoch = []
    for i, e in enumerate(epochs):
        seed_means = {nm: [float(np.mean(np.asarray(p["curves"][nm]["test_accuracy"])[:, i]))
                           for p in per_seed] for nm in names}
        a_s = stacked["sampled"]["test_accuracy"][:, i]
        a_r = stacked["random init"]["test_accuracy"][:, i]
        per_epoch.append({
            "epoch": int(e), "sampled_mean": float(a_s.mean()), "sampled_std": float(a_s.std()),
            "random_mean": float(a_r.mean()), "random_std": float(a_r.std()),
            "sampled_seed_means": seed_means["sampled"],
            "random_seed_means": seed_means["random init"],
            "seeds_ahead": int(sum(a > b for a, b in zip(seed_means["sampled"],
                                                          seed_means["random init"])))})
    out = {"label": row.label, "task": task, "epochs": int(st["epochs"]), "networks": n,
           "seeds": list(seeds), "per_seed": per_seed, "per_epoch": per_epoch,
           "curves": {nm: {"epoch": list(epochs),
                           "test_accuracy": stacked[nm]["test_accuracy"].tolist(),
                           "test_loss": stacked[nm]["test_loss"].tolist()} for nm in names},
           "batch": FINETUNE_BATCH, "lr": FINETUNE_LR, "seconds": time.time() - t0,
           "reused": not any_miss}
    ctx.cache["finetune"] = out
    return out


@register("finetune")
def finetune_extra(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[None, dict]:
    return None, {"finetune": _finetune(ctx, row)}


@register("adam")
def adam_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    """The random-init networks of the fine-tuning run after its last epoch."""
    src = ctx.table.row(str(row.options["finetune_row"]))
    ft = _finetune(ctx, src)
    r = ft["curves"]["random init"]
    acc = np.asarray(r["test_accuracy"])[:, -1]
    loss = np.asarray(r["test_loss"])[:, -1]
    ev = {"num": len(acc), "acc_mean": acc.mean(), "acc_std": acc.std(),
          "loss_mean": loss.mean(), "loss_std": loss.std(), "diversity_jsd": float("nan"),
          "ensemble_acc": float("nan"), "ensemble_sizes": [], "acc": acc.tolist()}
    out = stats_row(row, ev, row_seconds=ft["seconds"], reused=ft["reused"],
                    note=f"N(0, 0.1²) init, {ft['epochs']} epoch(s) Adam lr {FINETUNE_LR:g}, "
                         f"batch {FINETUNE_BATCH}, {ft['networks']} networks x seeds "
                         f"{', '.join(map(str, ft['seeds']))}")
    out.update(diversity=None, ensemble_acc=None)
    _print_row(ctx.table.name, out)
    return out, {}  # the curves section belongs to the finetune row (when selected)


def run_rows(ctx: ctx_lib.Context, rows: Sequence[Row]) -> tuple[list[dict], dict]:
    """Runs ``rows`` in order; returns the row dicts and the merged extra sections."""
    out: list[dict] = []
    extras: dict[str, Any] = {}
    for row in rows:
        if row.evaluator not in EVALUATORS:
            raise ValueError(f"row {row.key!r}: unknown evaluator {row.evaluator!r}; known: "
                             f"{', '.join(sorted(EVALUATORS))}")
        got, ex = EVALUATORS[row.evaluator](ctx, row, out)
        if got is not None:
            out.append(got)
        extras.update(ex)
    return out, extras
