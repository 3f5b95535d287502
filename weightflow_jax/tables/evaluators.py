"""The table evaluators, by name: each turns one declared row into a row dict (or, for the
``extra`` rows, a section of the table).

An evaluator is a function ``(ctx, row, rows_so_far) -> (row dict | None, extras dict)``
registered in :data:`EVALUATORS`; rows run in table order, so a baseline calibrated to the
flows (``noisy``) comes after them. Every sampled row records ``samples_source``, the
``.npz`` its networks came from (published by :mod:`weightflow_jax.tables.publish`).

* ``flow`` — train (or reuse) the row's flow, its samples' numbers and novelty;
* ``target`` — the zoo's final snapshots; ``ensemble`` — their posterior predictive;
* ``snapshots`` — random training snapshots, the distribution every flow row learns,
  drawn as many at a time as a flow row samples (:data:`SNAPSHOT_DRAWS` draws);
* ``heldout`` — one random snapshot of each of as many *new* SGD runs (a zoo of the same
  config and another seed) as a flow row samples, with their novelty against the table's
  zoo: what a flow that generalised perfectly across runs would give;
* ``noisy`` — checkpoints + Gaussian noise at the best flow row's nearest distance;
* ``steps_sweep`` — a flow re-sampled with several Euler step counts (extra section);
* ``transfer`` — a flow sampled for another task / hidden width, optionally guided;
* ``finetune`` — fine-tuning (Adam, the same batches) from random init, unguided samples
  (balanced and exact form), guided samples and the zoo's final networks, several seeds,
  with the seconds each start needs to reach :data:`REACH`, and the plain-SGD check of a
  row's samples (extra sections); ``adam`` — the random-init networks after the last epoch;
* ``guidance_sweep`` — guided samples over a lambda x Euler-steps grid plus ablations of
  the chosen point (extra section);
* ``prompt_alignment`` — a loss-conditioned flow prompted across the zoo's range of training
  losses and beyond it: achieved training loss per prompt and R^2 (extra section).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from weightflow_jax import atomic, data as data_lib, evaluation, mlp, pipeline
from weightflow_jax import zoo as zoo_lib
from weightflow_jax import sampling as sampling_lib
from weightflow_jax.tables import context as ctx_lib
from weightflow_jax.tables.spec import Row

__all__ = ["EVALUATORS", "EULER_SWEEP", "FINETUNE", "FINETUNE_BATCH", "FINETUNE_LR",
           "FINETUNE_STEPS", "FINETUNE_EPOCHS", "FINETUNE_STARTS", "REACH", "SGD_CHECK",
           "sweep_steps", "stats_row", "cached_samples", "transfer_settings", "register",
           "PROMPT_RANGE", "PROMPT_BEYOND", "SNAPSHOT_DRAWS", "snapshot_draws",
           "HELDOUT_SEED_OFFSET", "heldout_zoo_config"]

EULER_SWEEP = (8, 32, 128, 512)
# Fine-tuning settings per size: epochs, networks per initialization and seed, seeds.
FINETUNE = {"default": dict(epochs=20, networks=16, seeds=(0, 1, 2)),
            "cpu": dict(epochs=5, networks=8, seeds=(0, 1, 2)),
            "test": dict(epochs=1, networks=2, seeds=(0, 1))}
FINETUNE_BATCH = 128
FINETUNE_LR = 1e-3
# The `snapshots` row: independent draws of random training snapshots.
SNAPSHOT_DRAWS = 8
# The `heldout` row's zoo: the table's zoo config with this added to its seed, so that its
# runs (keys fold_in(key(seed), run)) share none of the table zoo's initialisations or orders.
HELDOUT_SEED_OFFSET = 1000

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
    train_s = pipeline.recorded_train_seconds(ev["train"])  # over all the flow's runs
    out = stats_row(row, ev["samples"], train_steps=int(ev["train"]["final_step"]),
                    wall_seconds=float(ev.get("wall_seconds", float("nan"))),
                    train_seconds=float("nan") if train_s is None else train_s,
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
    # Calibrated with the fast reference-aligned search; reported like the flow rows (up to
    # permutation), so the column compares like with like.
    nov = ctx_lib.novelty(z, noisy)
    note = (f"σ={info['sigma']:.4g} per weight, calibrated so the mean L2 distance to the "
            f"nearest checkpoint (reference-aligned search) is {info['mean_distance']:.4g} = "
            f"the median of '{best['label']}' (the flow row with the best accuracy); its "
            f"column is measured like the flows' (up to permutation)")
    out = stats_row(row, ev, novelty=nov, row_seconds=time.time() - t0, note=note,
                    matched_row=best["key"], sigma=float(info["sigma"]),
                    target_distance=target, calibrated_distance=float(info["mean_distance"]))
    _print_row(ctx.table.name, out)
    return out, {}


def snapshot_draws(key: jax.Array, num_snapshots: int, num: int, draws: int) -> np.ndarray:
    """``(draws, min(num, num_snapshots))`` snapshot indices: each row ``num`` distinct
    random snapshots, the draws independent (``fold_in(key, d)``)."""
    if num_snapshots < 1 or num < 1 or draws < 1:
        raise ValueError(f"snapshot_draws needs num_snapshots, num and draws >= 1; got "
                         f"{num_snapshots}, {num}, {draws}")
    k = min(int(num), int(num_snapshots))
    return np.stack([np.asarray(jax.random.permutation(jax.random.fold_in(key, d),
                                                       int(num_snapshots)))[:k]
                     for d in range(int(draws))])


def _flow_num(ctx: ctx_lib.Context, rows: list) -> int:
    """Networks per flow row: the evaluated flow rows' (the largest), else the config's."""
    nums = [int(r["num"]) for r in rows if r.get("is_flow")]
    return max(nums) if nums else int(ctx.config(ctx.reference_flow()).sample.num)


@register("snapshots")
def snapshots_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    """Random training snapshots: what a flow that learned its data perfectly would give.

    Every flow row trains on the zoo's snapshots (all of them, after the zoo's burn-in), so
    ``num`` of them drawn at random (``num`` = a flow row's sample count) are the reference
    for the flow rows, where the ``target`` row (final snapshots only) is not. Drawn
    :data:`SNAPSHOT_DRAWS` times: accuracy and loss pool the draws' networks; diversity,
    the ensemble curve and its last point are the draws' means (each draw's ensemble
    accuracy is in ``ensemble_draws``, its snapshot indices in ``snapshot_indices``).
    """
    t0 = time.time()
    z = ctx.zoo()
    num = _flow_num(ctx, rows)
    draws = int(row.options.get("draws", SNAPSHOT_DRAWS))
    idx = snapshot_draws(jax.random.key(ctx.seed), len(z.subset), num, draws)
    evs = [pipeline.evaluate_networks([(w[i], b[i]) for w, b in z.checkpoints],
                                      z.x_test, z.y_test) for i in idx]
    acc = np.concatenate([e["acc"] for e in evs])
    loss = np.concatenate([e["loss"] for e in evs])
    curve = np.mean([e["ensemble_curve"] for e in evs], axis=0)
    ens = np.array([e["ensemble_acc"] for e in evs])
    pooled = {"num": int(idx.shape[1]), "acc_mean": float(acc.mean()),
              "acc_std": float(acc.std()), "loss_mean": float(loss.mean()),
              "loss_std": float(loss.std()),
              "diversity_jsd": float(np.mean([e["diversity_jsd"] for e in evs])),
              "ensemble_acc": float(curve[-1]), "ensemble_sizes": evs[0]["ensemble_sizes"],
              "ensemble_curve": [float(c) for c in curve], "acc": [float(a) for a in acc]}
    n_zoo = z.zoo.num_snapshots
    whose = (f"the zoo's {n_zoo} snapshots" if len(z.subset) == n_zoo else
             f"a random {len(z.subset)} of the zoo's {n_zoo} snapshots")
    note = (f"{draws} draws of {idx.shape[1]} random snapshots from {whose} (what every flow "
            f"row learns): accuracy and loss over all {acc.size} networks, diversity and "
            f"ensemble the draws' mean (ensemble of {pooled['ensemble_sizes'][-1]}: "
            f"{ens.min():.4f}-{ens.max():.4f} over the draws)")
    out = stats_row(row, pooled, row_seconds=time.time() - t0, note=note, draws=draws,
                    ensemble_draws=[float(e) for e in ens],
                    snapshot_indices=np.asarray(z.subset)[idx].tolist())
    _print_row(ctx.table.name, out)
    return out, {}


def heldout_zoo_config(zoo: ml_collections.ConfigDict, num_runs: int,
                       offset: int = HELDOUT_SEED_OFFSET) -> ml_collections.ConfigDict:
    """The config of a zoo of ``num_runs`` new runs: ``zoo`` with its seed moved by
    ``offset`` and its own directory (``<zoo.dir>_heldout<num_runs>``); data, architecture,
    optimizer and snapshot schedule are the same."""
    if int(num_runs) < 1:
        raise ValueError(f"a held-out zoo needs num_runs >= 1, got {num_runs}")
    if not str(zoo.dir):
        raise ValueError("the table's zoo config has an empty dir; set zoo.dir")
    if int(offset) == 0:
        raise ValueError("offset=0 would rebuild the table's own runs; use a nonzero offset")
    out = ml_collections.ConfigDict(zoo.to_dict())
    out.seed = int(zoo.seed) + int(offset)
    out.num_runs = int(num_runs)
    out.dir = f"{str(zoo.dir).rstrip(os.sep)}_heldout{int(num_runs)}"
    return out


@register("heldout")
def heldout_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    """New SGD runs: what a flow that generalised perfectly across runs would give.

    A zoo of the table's config with another seed (:func:`heldout_zoo_config`) and as many
    runs as a flow row samples, built once and cached beside the table's zoo; one random
    snapshot of every run (:func:`evaluation.random_checkpoint_per_run`), evaluated like a
    flow row's networks, novelty included (aligned to the table zoo's reference, against
    its checkpoints and spacing). Where the ``snapshots`` row shows the accuracy a perfect flow
    would reach, this row shows how far from the zoo's checkpoints, and how diverse, networks
    of that distribution that are *not* the zoo's own are.
    """
    t0 = time.time()
    z = ctx.zoo()
    num = _flow_num(ctx, rows)
    cfg = heldout_zoo_config(ctx.config(ctx.reference_flow()).zoo, num)
    held = zoo_lib.load_zoo(zoo_lib.build_zoo(cfg, progress=ctx.progress))
    idx = evaluation.random_checkpoint_per_run(held.run_id, ctx.seed)
    params = held.select(idx)
    ev = pipeline.evaluate_networks(params, z.x_test, z.y_test)
    nov = ctx_lib.novelty(z, params)
    note = (f"one random snapshot of each of {len(idx)} new SGD runs (the zoo's config, seed "
            f"{int(cfg.seed)}: none of its runs is in the table's zoo), evaluated like a flow "
            "row, novelty against the table's zoo")
    out = stats_row(row, ev, novelty=nov, row_seconds=time.time() - t0, note=note,
                    heldout_zoo=held.path, heldout_seed=int(cfg.seed),
                    snapshot_indices=idx.tolist())
    _print_row(ctx.table.name, out)
    return out, {}


def sweep_steps(cap: int) -> list[int]:
    """The Euler step counts of the sweep: :data:`EULER_SWEEP` below ``cap``, and ``cap``."""
    return sorted({s for s in EULER_SWEEP if s < cap} | {int(cap)})


def cached_samples(ctx: ctx_lib.Context, workdir: str, tag: str, *, num: int, steps: int,
                   arch: str | None = None, task: str | None = None, guidance: float = 0.0,
                   guidance_batch: int = 256, chunk: int = 50, seed: int | None = None,
                   options: Mapping[str, Any] | None = None) -> tuple[dict, bool]:
    """:func:`pipeline.sample_and_evaluate` of the flow in ``workdir``, cached under
    ``workdir/table_<tag>.{npz,json}`` (re-sampled when the flow was retrained or any
    sampling setting changed). ``options``: overrides of the decoding/guidance options
    (:func:`pipeline.sampling_options`) on top of the flow's ``config.sample``."""
    seed = ctx.seed if seed is None else int(seed)
    prefix = os.path.join(workdir, f"table_{tag}")
    opts = dict(options or {})
    key = {"flow": ctx_lib.flow_version(workdir), "num": num, "steps": steps, "arch": arch,
           "task": task, "guidance": guidance, "guidance_batch": guidance_batch,
           "seed": seed, "options": {k: opts[k] for k in sorted(opts)}}
    got = ctx_lib.read_json(prefix + ".json")
    if got and got.get("cache_key") == key and os.path.exists(prefix + ".npz"):
        return got, True
    run = pipeline.load_flow(workdir)
    res = pipeline.sample_and_evaluate(
        run, prefix, num=num, steps=steps, seed=seed, arch=arch, task=task, guidance=guidance,
        guidance_batch=guidance_batch, chunk=chunk,
        options=pipeline.sampling_options(run.config.sample, **opts))
    res.pop("params")  # the networks are in the .npz
    res["cache_key"] = key
    atomic.write_json(prefix + ".json", res)
    return res, False


def _sweep_point(ctx: ctx_lib.Context, what: str, res: Mapping[str, Any], hit: bool,
                 t0: float, **fields: Any) -> dict[str, Any]:
    """One point of a sweep section from a :func:`cached_samples` result (printed)."""
    sm = res["samples"]
    print(f"[{ctx.table.name}] {what}: acc {sm['acc_mean']:.3f}±{sm['acc_std']:.3f} "
          f"({'reused' if hit else 'sampled'}, {time.time() - t0:.1f} s)", flush=True)
    return {**fields, "acc_mean": sm["acc_mean"], "acc_std": sm["acc_std"],
            "loss_mean": sm["loss_mean"], "loss_std": sm["loss_std"],
            "ensemble_acc": sm["ensemble_acc"], "num": sm["num"],
            "sample_seconds": res["sample_seconds"], "reused": hit}


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
        out.append(_sweep_point(ctx, f"steps_sweep {s:>4d} Euler steps", res, hit, t0,
                                steps=s))
    return None, {"steps_sweep": {"workdir": ev["workdir"], "label": row.label,
                                  "train_steps": int(ev["train"]["final_step"]),
                                  "points": out, "cap": int(cfg.sample.steps)}}


# Row options that are sampling options (pipeline.SAMPLE_DEFAULTS) rather than row settings.
_SAMPLING_OPTION_KEYS = tuple(pipeline.SAMPLE_DEFAULTS)


def _transfer_tag(task: str, arch: str | None, guidance: float, steps: int) -> str:
    return f"{task}_{(arch or 'same').replace('-', 'x')}_g{guidance:g}_s{steps}"


def transfer_settings(cfg, options: Mapping[str, Any]) -> dict[str, Any]:
    """What a transfer row samples with: ``task``, ``arch``, ``guidance``, ``steps``,
    ``guidance_batch`` (row options over the flow's ``config.sample``) and the sampling-option
    overrides (``options``)."""
    return {"task": str(options.get("task") or cfg.zoo.dataset), "arch": options.get("arch"),
            "guidance": float(options.get("guidance", 0.0)),
            "steps": int(options.get("steps", cfg.sample.steps)),
            "guidance_batch": int(options.get("guidance_batch", cfg.sample.guidance_batch)),
            "options": {k: options[k] for k in _SAMPLING_OPTION_KEYS if k in options}}


def _transfer(ctx: ctx_lib.Context, row: Row, *, num: int | None = None,
              seed: int | None = None, spec: Mapping[str, Any] | None = None,
              tag_suffix: str = "") -> tuple[dict, dict, bool, str]:
    """Samples ``row.flow`` for ``row.options`` (task, arch, guidance, steps, ...), or for
    ``spec`` (row options to use instead); cached."""
    ev = ctx.flow(row.flow)
    cfg = ctx.config(row.flow)
    st = transfer_settings(cfg, row.options if spec is None else spec)
    tag = _transfer_tag(st["task"], st["arch"], st["guidance"], st["steps"]) + (
        f"_b{st['guidance_batch']}" if st["guidance"] else "") + tag_suffix
    if num is not None or seed is not None:
        tag += f"_n{num}_seed{seed}"
    res, hit = cached_samples(ctx, ev["workdir"], tag, num=int(num or cfg.sample.num),
                              steps=st["steps"], arch=st["arch"], task=st["task"],
                              guidance=st["guidance"], guidance_batch=st["guidance_batch"],
                              chunk=int(cfg.sample.chunk), seed=seed, options=st["options"])
    return ev, res, hit, os.path.join(ev["workdir"], f"table_{tag}.npz")


@register("transfer")
def transfer_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    t0 = time.time()
    ev, res, hit, npz = _transfer(ctx, row)
    cfg = ctx.config(row.flow)
    guidance = float(row.options.get("guidance", 0.0))
    how = (f"guidance λ={guidance:g} ({res.get('guidance_mode')}, "
           f"{res.get('guidance_schedule')}, batch {res.get('guidance_batch')}), "
           f"{res.get('flow_velocity')} velocity" if guidance else "unguided")
    out = stats_row(row, res["samples"], train_steps=int(ev["train"]["final_step"]),
                    wall_seconds=float(res["sample_seconds"]), row_seconds=time.time() - t0,
                    workdir=ev["workdir"], reused=bool(ev["reused"] and hit),
                    model=str(cfg.model.name), samples_source=npz,
                    samples_task=str(res["task"]),
                    representative=res.get("representative"),
                    note=f"{res['arch']} on {res['task']}, {res['steps']} Euler steps, {how}, "
                         f"output scale {res.get('output_scale')}, "
                         f"{res.get('representative')} form")
    _print_row(ctx.table.name, out)
    return out, {}


# Where fine-tuning curves are compared: after these optimizer steps and epochs.
FINETUNE_STEPS = (16, 64, 256)
FINETUNE_EPOCHS = (1, 2, 3, 5)
# Extra evaluation points (every 16 steps over the first 512) for the time-to-accuracy reading.
_FINE_GRID = tuple(range(16, 513, 16))
REACH = 0.80  # the accuracy whose time-to-reach the table reports
# The plain-SGD check of the published unguided samples (issue 18): lr 0.1, batch 128.
SGD_CHECK = dict(lr=0.1, batch=128, steps=512)
FINETUNE_STARTS = ("random init", "unguided samples", "unguided samples (exact form)",
                   "guided samples", "zoo networks")


def _interval(v: np.ndarray) -> tuple[float, float]:
    """Mean and 95% t-interval half-width of the mean over the entries of ``v``."""
    v = np.asarray(v, np.float64).reshape(-1)
    return float(v.mean()), float(evaluation.ci95_half_width(v))


def _finetune_inits(ctx: ctx_lib.Context, row: Row, s: int, n: int, task: str
                    ) -> tuple[dict[str, mlp.Params], dict[str, Any]]:
    """The starts of seed ``s``: name -> networks, and what the sampled ones cost."""
    unguided = {"task": task, "guidance": 0.0}
    _, r_u, _, npz_u = _transfer(ctx, row, num=n, seed=s, spec=unguided)
    _, r_e, _, npz_e = _transfer(ctx, row, num=n, seed=s, tag_suffix="_exact",
                                 spec={**unguided, "representative": "exact"})
    _, r_g, _, npz_g = _transfer(ctx, row, num=n, seed=s)
    z = ctx.zoo().zoo
    final = np.asarray(z.final_indices())
    pick = final[(np.arange(n) + s * n) % len(final)]
    sampled = sampling_lib.load_samples_npz(npz_g)
    inits = {"random init": evaluation.random_init(jax.random.key(s + 1),
                                                   mlp.layer_sizes(sampled), n, w_std=None),
             "unguided samples": sampling_lib.load_samples_npz(npz_u),
             "unguided samples (exact form)": sampling_lib.load_samples_npz(npz_e),
             "guided samples": sampled,
             "zoo networks": [(np.asarray(w), np.asarray(b))
                                    for w, b in z.select(pick)]}
    cost = {"guided": {"npz": npz_g, "sample_seconds": float(r_g["sample_seconds"]),
                       "acc_mean": float(r_g["samples"]["acc_mean"])},
            "unguided": {"npz": npz_u, "sample_seconds": float(r_u["sample_seconds"])},
            "files": [npz_u, npz_e, npz_g]}
    return inits, cost


def _finetune(ctx: ctx_lib.Context, row: Row) -> dict[str, Any]:
    """Fine-tuning curves on the row's task from every start of :data:`FINETUNE_STARTS`.

    Per seed ``s``: ``networks`` unguided and guided samples (sampling seed ``s``; the
    unguided ones also decoded in the exact form), as many He-initialized networks (key
    ``s + 1``) and final networks of the flow's zoo (a reference), all trained with Adam (lr :data:`FINETUNE_LR`, batch
    :data:`FINETUNE_BATCH`) on the same minibatch order (key ``s``); test metrics after
    every 16 steps up to 512, at :data:`FINETUNE_STEPS` and at every epoch end, with the
    training seconds spent so far.
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
        inits, cost = _finetune_inits(ctx, row, s, n, task)
        stamp = [[f, os.stat(f).st_mtime_ns, os.stat(f).st_size] for f in cost["files"]]
        key = {"samples": stamp, "n": n, "seed": s, "epochs": st["epochs"],
               "batch": FINETUNE_BATCH, "lr": FINETUNE_LR, "starts": list(inits),
               "grid": [list(_FINE_GRID), list(FINETUNE_STEPS)], "version": 2}
        cache = os.path.join(os.path.dirname(cost["guided"]["npz"]),
                             f"finetune_{task}_seed{s}.json")

        def compute(inits=inits, s=s):
            if "data" not in data:
                data["data"] = (data_lib.load(task, "train"), data_lib.load(task, "test"))
            (x_tr, y_tr), (x_te, y_te) = data["data"]
            curves = evaluation.compare_inits(
                inits, x_tr, y_tr, x_te, y_te, key=jax.random.key(s), epochs=st["epochs"],
                batch_size=FINETUNE_BATCH, optimizer="adam", learning_rate=FINETUNE_LR,
                eval_steps=_FINE_GRID + FINETUNE_STEPS)
            return {name: {k: np.asarray(v).tolist() for k, v in cv.items()}
                    for name, cv in curves.items()}

        curves, hit_ft = ctx_lib.cached(cache, key, compute)
        any_miss |= not hit_ft
        per_seed.append({"seed": s, "curves": curves, "cost": cost})
        print(f"[{ctx.table.name}] finetune seed {s} ({'reused' if hit_ft else 'computed'})",
              flush=True)
    names = list(per_seed[0]["curves"])
    first = per_seed[0]["curves"][names[0]]
    spe = int(first["steps_per_epoch"])
    steps_axis = [int(v) for v in first["step"]]
    points = [("steps", k, k) for k in FINETUNE_STEPS if k < spe] + [
        ("epoch", e, e * spe) for e in FINETUNE_EPOCHS if e <= st["epochs"]]
    stacked = {nm: np.concatenate([np.asarray(p["curves"][nm]["step_accuracy"])
                                   for p in per_seed]) for nm in names}
    table_points = []
    for unit, k, step in points:
        i = steps_axis.index(step)
        entry = {"unit": unit, "value": k, "step": step}
        for nm in names:
            m, h = _interval(stacked[nm][:, i])
            entry[nm] = {"mean": m, "ci95": h}
        table_points.append(entry)
    reach = {}
    for nm in names:
        secs = [evaluation.seconds_to_reach(p["curves"][nm], REACH) for p in per_seed]
        reach[nm] = {"seconds": [None if v is None else float(v) for v in secs],
                     "mean_seconds": (float(np.mean(secs)) if all(v is not None for v in secs)
                                      else None)}
    g_secs = [p["cost"]["guided"]["sample_seconds"] for p in per_seed]
    g_acc = [p["cost"]["guided"]["acc_mean"] for p in per_seed]
    g_ft = reach.get("guided samples", {}).get("seconds", [None] * len(per_seed))
    guided_reach = [None if f is None else a + f for a, f in zip(g_secs, g_ft)]
    out = {"label": row.label, "task": task, "epochs": int(st["epochs"]), "networks": n,
           "seeds": list(seeds), "starts": names, "steps_per_epoch": spe,
           "points": table_points, "reach": {"threshold": REACH, "per_start": reach,
                                             "guided_sampling_seconds": g_secs,
                                             "guided_sample_acc": g_acc,
                                             "guided_total_seconds": guided_reach},
           "curves": {nm: {"step": steps_axis, "steps_per_epoch": spe,
                           "step_accuracy": stacked[nm].tolist()} for nm in names},
           "batch": FINETUNE_BATCH, "lr": FINETUNE_LR, "seconds": time.time() - t0,
           "reused": not any_miss}
    ctx.cache["finetune"] = out
    return out


def _sgd_check(ctx: ctx_lib.Context, row: Row, rows: list) -> dict[str, Any] | None:
    """Plain SGD (:data:`SGD_CHECK`) from the ``sgd_check`` row's samples vs He init."""
    src = row.options.get("sgd_check")
    got = next((r for r in rows if r["key"] == src), None) if src else None
    if not got or not got.get("samples_source"):
        return None
    npz = got["samples_source"]
    task = str(got.get("samples_task") or row.options["task"])
    sampled = sampling_lib.load_samples_npz(npz)
    n = len(sampled[0][0])
    seeds = tuple(int(s) for s in row.options.get("seeds", FINETUNE[ctx.size]["seeds"]))
    stat = os.stat(npz)
    key = {"samples": [npz, stat.st_mtime_ns, stat.st_size], "seeds": list(seeds),
           **SGD_CHECK}
    cache = os.path.join(os.path.dirname(npz), f"sgd_check_{task}.json")

    def compute():
        (x_tr, y_tr), (x_te, y_te) = data_lib.load(task, "train"), data_lib.load(task, "test")
        spe = len(y_tr) // SGD_CHECK["batch"]
        epochs = -(-SGD_CHECK["steps"] // spe)
        acc = {"samples": [], "random init": []}
        for s in seeds:
            inits = {"samples": sampled,
                     "random init": evaluation.random_init(
                         jax.random.key(100 + s), mlp.layer_sizes(sampled), n, w_std=None)}
            curves = evaluation.compare_inits(
                inits, x_tr, y_tr, x_te, y_te, key=jax.random.key(s), epochs=epochs,
                batch_size=SGD_CHECK["batch"], optimizer="sgd",
                learning_rate=SGD_CHECK["lr"], momentum=0.0,
                eval_steps=(SGD_CHECK["steps"],))
            for nm, cv in curves.items():
                i = list(np.asarray(cv["step"])).index(SGD_CHECK["steps"])
                acc[nm] += np.asarray(cv["step_accuracy"])[:, i].tolist()
        return {nm: {"mean": float(np.mean(v)), "acc": v} for nm, v in acc.items()}

    value, _ = ctx_lib.cached(cache, key, compute)
    print(f"[{ctx.table.name}] sgd check from {src}: {value['samples']['mean']:.3f} vs random "
          f"init {value['random init']['mean']:.3f}", flush=True)
    return {"row": src, "file": npz, "task": task, "networks": n, "seeds": list(seeds),
            **SGD_CHECK, **value}


@register("finetune")
def finetune_extra(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[None, dict]:
    out = {"finetune": _finetune(ctx, row)}
    check = _sgd_check(ctx, row, rows)
    if check is not None:
        out["sgd_check"] = check
    return None, out


@register("adam")
def adam_row(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[dict, dict]:
    """The random-init networks of the fine-tuning run after its last epoch."""
    src = ctx.table.row(str(row.options["finetune_row"]))
    ft = _finetune(ctx, src)
    acc = np.asarray(ft["curves"]["random init"]["step_accuracy"])[:, -1]
    ev = {"num": len(acc), "acc_mean": acc.mean(), "acc_std": acc.std(),
          "loss_mean": float("nan"), "loss_std": float("nan"), "diversity_jsd": float("nan"),
          "ensemble_acc": float("nan"), "ensemble_sizes": [], "acc": acc.tolist()}
    out = stats_row(row, ev, row_seconds=ft["seconds"], reused=ft["reused"],
                    note=f"He init, {ft['epochs']} epoch(s) Adam lr {FINETUNE_LR:g}, "
                         f"batch {FINETUNE_BATCH}, {ft['networks']} networks x seeds "
                         f"{', '.join(map(str, ft['seeds']))}")
    out.update(diversity=None, ensemble_acc=None, loss_mean=None, loss_std=None)
    _print_row(ctx.table.name, out)
    return out, {}  # the curves section belongs to the finetune row (when selected)


@register("guidance_sweep")
def guidance_sweep(ctx: ctx_lib.Context, row: Row, rows: list) -> tuple[None, dict]:
    """Guided samples of ``row.flow`` over ``lambdas`` x ``steps`` (and ablations of the
    chosen point: each a dict of row options on top of it), ``num`` networks each."""
    o = row.options
    num = int(o.get("num", 16))
    base = {"task": o["task"], "guidance_batch": o.get("guidance_batch")}
    base = {k: v for k, v in base.items() if v is not None}
    specs = [({**base, "guidance": float(lam), "steps": int(k)}, f"λ={lam:g}, {k} steps")
             for lam in o["lambdas"] for k in o["steps"]]
    chosen = {**base, "guidance": float(o["chosen"][0]), "steps": int(o["chosen"][1])}
    specs += [({**chosen, **ab}, label) for label, ab in o.get("ablations", ())]
    points = []
    for spec, label in specs:
        t0 = time.time()
        extra = "_".join(f"{k}-{spec[k]}" for k in sorted(spec)
                         if k in _SAMPLING_OPTION_KEYS)
        _, res, hit, _ = _transfer(ctx, row, num=num, seed=ctx.seed, spec=spec,
                                   tag_suffix=f"_sweep{('_' + extra) if extra else ''}")
        points.append(_sweep_point(
            ctx, f"guidance_sweep {label}", res, hit, t0, label=label,
            guidance=spec["guidance"], steps=spec["steps"],
            options={k: res.get(k) for k in _SAMPLING_OPTION_KEYS},
            guidance_batch=res.get("guidance_batch")))
    return None, {"guidance_sweep": {"label": row.label, "task": o["task"], "num": num,
                                     "chosen": list(o["chosen"]), "points": points}}


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


# Prompt alignment (issue 19): prompts evenly spaced in log-loss between these percentiles of
# the zoo's recorded training losses, plus prompts beyond the best recorded loss.
PROMPT_RANGE = ("p05", "p95")
PROMPT_BEYOND = (1.0, 0.5)  # x the zoo's best training loss


@register("prompt_alignment")
def prompt_alignment_section(ctx: ctx_lib.Context, row: Row, rows: list
                             ) -> tuple[None, dict]:
    """A loss-conditioned flow prompted with ``num_prompts`` training losses spanning the zoo's
    5th-95th percentile, the best loss times each factor of ``beyond`` (default
    :data:`PROMPT_BEYOND`), and unconditionally; for each
    classifier-free weight in ``weights``, the achieved training loss (the whole training
    split) and test accuracy of the samples per prompt, and R^2 of achieved vs prompted."""
    ev = ctx.flow(row.flow)
    cfg = ctx.config(row.flow)
    workdir = ev["workdir"]
    run = pipeline.load_flow(workdir)
    cond = run.conditioner
    if cond is None or cond.kind != "train_loss":
        raise ValueError(f"row {row.key!r}: prompt alignment needs a flow conditioned on "
                         "train_loss (flow.condition=train_loss in the row's flow overrides)")
    o = row.options
    num = int(o.get("num", cfg.sample.num))
    steps = int(o.get("steps", cfg.sample.steps))
    weights = tuple(float(w) for w in o.get("weights", (1.0,)))
    grid = evaluation.prompt_grid(cond.prompts[PROMPT_RANGE[0]], cond.prompts[PROMPT_RANGE[1]],
                                  int(o.get("num_prompts", 8)))
    beyond = tuple(float(f) for f in o.get("beyond", PROMPT_BEYOND))
    plan = [("range", v) for v in grid] + [
        ("beyond", cond.prompts["best"] * f) for f in beyond] + [("unconditional", None)]
    x_train, y_train = data_lib.load(str(cfg.zoo.dataset), "train")
    points = []
    for w in weights:
        for i, (where, value) in enumerate(plan):
            if where == "unconditional" and w != weights[0]:
                continue  # the weight does not apply
            t0 = time.time()
            tag = f"prompt_w{w:g}_{i}" if value is not None else "prompt_uncond"
            opts = {"condition": "none" if value is None else float(value),
                    "condition_weight": w}
            res, hit = cached_samples(ctx, workdir, tag, num=num, steps=steps,
                                      chunk=int(cfg.sample.chunk), options=opts)
            npz = os.path.join(workdir, f"table_{tag}.npz")
            _, tl = evaluation.accuracy_and_loss(sampling_lib.load_samples_npz(npz), x_train,
                                                 y_train)
            tl = np.asarray(tl, np.float64)
            what = "unconditional" if value is None else f"prompt {value:.4f} (w={w:g})"
            pt = _sweep_point(ctx, f"{row.key} {what}", res, hit, t0, prompt=value,
                              where=where, weight=w if value is not None else None,
                              index=i)
            pt.update(train_loss=[float(v) for v in tl], train_loss_mean=float(tl.mean()),
                      train_loss_std=float(tl.std()), samples_source=npz,
                      samples_task=str(cfg.zoo.dataset),
                      publish_key=f"{row.key}_{tag}")
            print(f"[{ctx.table.name}]   achieved train loss {tl.mean():.4f} ± {tl.std():.4f}",
                  flush=True)
            points.append(pt)
    alignment = {}
    for w in weights:
        pts = [p for p in points if p["where"] == "range" and p["weight"] == w]
        alignment[f"{w:g}"] = evaluation.prompt_alignment(
            [p["prompt"] for p in pts], [p["train_loss"] for p in pts])
        print(f"[{ctx.table.name}] {row.key} w={w:g}: R^2 (prompt means) "
              f"{alignment[f'{w:g}']['r2_means']:.3f}", flush=True)
    section = {"key": row.key, "label": row.label, "workdir": workdir,
               "train_steps": int(ev["train"]["final_step"]), "num": num, "steps": steps,
               "weights": list(weights), "zoo_prompts": dict(cond.prompts),
               "range": list(PROMPT_RANGE), "beyond": list(beyond),
               "points": points, "alignment": alignment, "task": str(cfg.zoo.dataset),
               "zoo": str(cfg.zoo.dir)}
    return None, {"prompt_alignment": section}
