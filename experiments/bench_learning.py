"""Benchmark: time to quality of the vector fields, side by side in one run.

Trains each *variant* (a field and its settings, given as config overrides) on the same zoo,
flow and coupling for the same wall-clock budget, and every ``--eval_every`` seconds of
training samples ``--num`` networks with the current (EMA) parameters and evaluates them on
the test split. Sampling and evaluation are not counted as training time. Prints and writes
a table and a PNG plot of the samples' mean test accuracy against training seconds, and the
seconds each variant needs to reach the thesis's accuracy and the zoo's own. Training seconds count
every step but the first (which compiles; its time is reported as ``compile_seconds``),
with the host's coupling and batching work included.

Each variant's cosine schedule is sized to its budget: a short calibration (not counted)
measures its steps per second, and ``train.steps = rate x budget``.

Commands that produced ``docs/learning/`` (2 CPU cores)::

    python -m experiments.bench_learning --task breast_cancer --budget 120 --eval_every 20
    python -m experiments.bench_learning --task mnist --budget 900 --eval_every 150 \\
        --variant "mlp|model.name=mlp" --variant "compact_rt|model.name=compact_rt"
    python -m experiments.bench_learning --throughput --task mnist

A variant is ``"label|key=value|key=value"`` with dotted config keys (any field of
``configs/common.py``), e.g. ``"crt_w32|model.name=compact_rt|model.compact_rt.width=32"``;
the key ``budget`` sets that variant's own training seconds (default ``--budget``).

``--throughput`` times train steps instead (compile excluded) of ``rt`` and ``compact_rt`` at
the thesis's model size (5 layers, width 32, 4 heads, batch 8) and prints the ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time

import jax
import ml_collections
import numpy as np

from configs.common import get_base_config
from weightflow_jax import atomic, evaluation, flows, mlp, pipeline
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax.evaluation import plots

# Thesis accuracies of the geometric aligned + OT rows (../shared/REFERENCE.md).
THESIS_ACC = {"mnist": 0.786, "breast_cancer": 0.991}
DEFAULT_VARIANTS = ("mlp|model.name=mlp", "compact_rt|model.name=compact_rt",
                    "rt|model.name=rt")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="breast_cancer", choices=("breast_cancer", "mnist"))
    p.add_argument("--flow", default="geometric", choices=flows.FLOWS)
    p.add_argument("--size", default="cpu", help="config size the variants start from")
    p.add_argument("--variant", action="append", default=None,
                   help='"label|key=value|..." (repeatable); default: mlp, compact_rt, rt')
    p.add_argument("--budget", type=float, default=120.0, help="training seconds per variant")
    p.add_argument("--eval_every", type=float, default=20.0, help="training seconds between "
                   "evaluations")
    p.add_argument("--num", type=int, default=32, help="networks sampled per evaluation")
    p.add_argument("--sample_steps", type=int, default=0,
                   help="Euler steps per sample (0: the config's sample.steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--zoo_dir", default="", help="zoo directory (default: the config's)")
    p.add_argument("--novelty", action=argparse.BooleanOptionalAction, default=True,
                   help="nearest-checkpoint distance of the last samples vs checkpoint spacing")
    p.add_argument("--out", default="", help="output prefix (default docs/learning/<task>_<flow>)")
    p.add_argument("--transfer_arch", default="",
                   help="also sample and evaluate this hidden architecture (e.g. 784-32-10) "
                   "at every evaluation, for the fields that can (equivariant ones)")
    p.add_argument("--save_runs", default="",
                   help="save each variant's final state as a flow run in <dir>/<label> "
                   "(config.json, field_stats.npz, checkpoint) for experiments.sample")
    p.add_argument("--throughput", action="store_true", help="train-step throughput mode")
    p.add_argument("--batch", type=int, default=8, help="--throughput: networks per step")
    p.add_argument("--steps", type=int, default=5, help="--throughput: timed steps")
    return p.parse_args(argv)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    parts = [s.strip() for s in text.split("|") if s.strip()]
    if not parts:
        raise ValueError(f"empty variant {text!r}; write 'label|key=value|...'")
    overrides = {}
    for kv in parts[1:]:
        if "=" not in kv:
            raise ValueError(f"variant {text!r}: {kv!r} is not key=value")
        k, v = kv.split("=", 1)
        overrides[k.strip()] = v.strip()
    return parts[0], overrides


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]):
    """A copy of ``config`` with dotted ``key=value`` overrides (values parsed by type)."""
    config = copy.deepcopy(config)
    with config.unlocked():
        for key, raw in overrides.items():
            *path, leaf = key.split(".")
            node = config
            for p in path:
                if p not in node:
                    raise ValueError(f"unknown config key {key!r} (no field {p!r})")
                node = node[p]
            if leaf not in node:
                raise ValueError(f"unknown config key {key!r}; fields here: {sorted(node)}")
            old = node[leaf]
            if isinstance(old, bool):
                value = raw.lower() in ("1", "true", "yes")
            elif isinstance(old, int):
                value = int(raw)
            elif isinstance(old, float):
                value = float(raw)
            else:
                value = raw
            node[leaf] = value
    return config


def make_sampler(run: pipeline.FlowRun, num: int, steps: int, space=None):
    """A jitted ``(variables, key) -> plain weights`` for ``num`` networks (compiled once),
    of the run's architecture or of ``space`` (another hidden width)."""
    space, fld = space or run.space, run.field
    cfg = run.config.flow

    @jax.jit
    def draw(variables, key):
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, float(cfg.prior_std)))(
            jax.random.split(key, num))
        x1 = sampling_lib.integrate(space, lambda x, t: fld.apply(variables, x, t), x0,
                                    steps=steps, parameterization=str(cfg.parameterization))
        return space.decode(x1)

    return draw


def _make_step(run, config, ema):
    opt = pipeline.make_optimizer(config)
    decay = pipeline.ema_decay(config) if ema else None
    state = train_lib.create_train_state(run.variables["params"], opt, jax.random.key(1),
                                         ema=decay is not None)
    mesh = train_lib.make_mesh()
    step = train_lib.make_train_step(pipeline.make_loss_fn(run), opt, mesh, ema_decay=decay,
                                     ema_warmup=True)
    return train_lib.replicate(state, mesh), step, mesh


def calibrate(config, space, coords, stats, n: int = 20) -> float:
    """Steps per second of ``config``'s train step (compile excluded)."""
    cal = copy.deepcopy(config)
    with cal.unlocked():
        cal.train.schedule = "constant"
    run = pipeline.build_flow(cal, space, jax.random.key(0), stats)
    state, step, mesh = _make_step(run, cal, ema=False)
    batch_fn = pipeline.make_batch_fn(run, coords, jax.random.key(2))
    state, m = step(state, train_lib.shard_batch(batch_fn(0), mesh))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        state, m = step(state, train_lib.shard_batch(batch_fn(i), mesh))
    jax.block_until_ready(m)
    return n / (time.perf_counter() - t0)


def run_variant(label: str, config, space, coords, ctx, args, budget: float):
    """Trains one variant for ``budget`` seconds, evaluating along the way."""
    stats = pipeline.fit_field_stats(config, coords)
    rate = calibrate(config, space, coords, stats)
    steps = max(int(rate * budget), 50)
    with config.unlocked():
        config.train.steps = steps
    key = jax.random.key(int(config.seed))
    k_init, _, k_data, k_sample = jax.random.split(key, 4)
    run = pipeline.build_flow(config, space, k_init, stats)
    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(run.variables))
    state, step, mesh = _make_step(run, config, ema=True)
    batch_fn = pipeline.make_batch_fn(run, coords, k_data)
    sample_steps = int(args.sample_steps or config.sample.steps)
    draw = make_sampler(run, int(args.num), sample_steps)
    draw_transfer = None
    if args.transfer_arch:
        try:
            t_space = pipeline.flow_space_for(run, args.transfer_arch)
            draw_transfer = make_sampler(run, int(args.num), sample_steps, t_space)
        except ValueError as err:
            print(f"[{label}] no {args.transfer_arch} transfer: {err}", flush=True)
    x_test, y_test = ctx.x_test, ctx.y_test

    points, losses = [], []
    train_s, next_eval, done = 0.0, float(args.eval_every), 0
    print(f"[{label}] {n_params} parameters, calibrated {rate:.2f} steps/s -> {steps} steps "
          f"in {budget:.0f} s", flush=True)

    def evaluate():
        t0 = time.perf_counter()
        variables = pipeline.sampling_variables(state)
        params = [(np.asarray(w), np.asarray(b)) for w, b in draw(variables, k_sample)]
        ev = pipeline.evaluate_networks(params, x_test, y_test, ensemble_max=args.num,
                                        diversity_max=args.num)
        point = {"train_seconds": train_s, "step": done,
                 "train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
                 "acc_mean": ev["acc_mean"], "acc_std": ev["acc_std"],
                 "loss_mean": ev["loss_mean"], "ensemble_acc": ev["ensemble_acc"],
                 "eval_seconds": time.perf_counter() - t0}
        if draw_transfer is not None:
            tparams = [(np.asarray(w), np.asarray(b))
                       for w, b in draw_transfer(variables, k_sample)]
            tev = pipeline.evaluate_networks(tparams, x_test, y_test, ensemble_max=args.num,
                                             diversity_max=args.num)
            point["transfer"] = {k: tev[k] for k in ("acc_mean", "acc_std", "loss_mean",
                                                     "ensemble_acc")}
            transfer_params[:] = [tparams]
            print(f"[{label}] {train_s:7.1f} s {args.transfer_arch}: acc "
                  f"{tev['acc_mean']:.3f} ± {tev['acc_std']:.3f}, loss {tev['loss_mean']:.3f},"
                  f" ensemble {tev['ensemble_acc']:.3f}", flush=True)
        points.append(point)
        print(f"[{label}] {train_s:7.1f} s step {done:6d}: acc {ev['acc_mean']:.3f} ± "
              f"{ev['acc_std']:.3f}, loss {ev['loss_mean']:.3f}, ensemble "
              f"{ev['ensemble_acc']:.3f}, train loss {point['train_loss']:.4f} "
              f"(eval {point['eval_seconds']:.1f} s)", flush=True)
        return params

    params, transfer_params = None, []
    t0 = time.perf_counter()  # the first step compiles: timed apart, not training time
    state, m = step(state, train_lib.shard_batch(batch_fn(0), mesh))
    losses.append(float(m["loss"]))
    compile_s = time.perf_counter() - t0
    done = 1
    t_last = time.perf_counter()
    pending = []
    while done < steps and train_s < budget:
        state, m = step(state, train_lib.shard_batch(batch_fn(done), mesh))
        done += 1
        pending.append(m["loss"])
        if done % 10 == 0 or done == steps:
            losses.extend(float(v) for v in jax.device_get(pending))
            pending.clear()
            now = time.perf_counter()
            train_s += now - t_last
            t_last = now
            if not np.isfinite(losses[-1]):
                print(f"[{label}] non-finite loss at step {done}; stopping", flush=True)
                break
            if train_s >= next_eval and train_s < budget and done < steps:
                params = evaluate()
                next_eval += float(args.eval_every)
                t_last = time.perf_counter()
    params = evaluate()
    result = {"label": label, "model": str(config.model.name), "params": n_params,
              "compile_seconds": compile_s, "budget": budget,
              "calibrated_steps_per_sec": rate, "planned_steps": steps, "steps_done": done,
              "sample_steps": sample_steps, "points": points,
              "overrides": {}, "final": points[-1]}
    if args.novelty and ctx.novelty is not None:
        result["novelty"] = ctx.novelty(params)
    if transfer_params:
        result["transfer_arch"] = args.transfer_arch
        result["transfer_params"] = transfer_params[0]
    if args.save_runs:
        result["run_dir"] = save_run(os.path.join(args.save_runs, label), config, stats,
                                     state, done)
    return result, params


def save_run(workdir: str, config, stats, state, step: int) -> str:
    """Writes a flow run that ``experiments.sample --workdir`` and ``load_flow`` open: the
    variant's config (``train.steps`` = its planned steps), statistics and a checkpoint of
    its state at ``step``."""
    if os.path.exists(os.path.join(workdir, "config.json")):
        raise ValueError(f"{workdir} already holds a run; choose another --save_runs")
    os.makedirs(workdir, exist_ok=True)
    pipeline.save_field_stats(workdir, stats)
    train_lib.save_config(workdir, config)
    with train_lib.CheckpointStore(workdir) as store:
        store.save(step, state)
        store.wait()
    return workdir


def command_line() -> str:
    """This run's command, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", "-m", "experiments.bench_learning"] + sys.argv[1:])


def first_time(points, threshold: float) -> float | None:
    for p in points:
        if p["acc_mean"] >= threshold:
            return p["train_seconds"]
    return None


class _Ctx:
    pass


def build_context(config, args):
    from weightflow_jax.tables import context as tables  # zoo/novelty context of the tables

    ctx = _Ctx()
    space, coords, zoo, pre = pipeline.prepare_data(config)
    ctx.space, ctx.coords = space, coords
    ctx.x_test, ctx.y_test = pipeline.data_lib.load(str(config.zoo.dataset), "test")
    target = pipeline.evaluate_networks(zoo.select(zoo.final_indices()), ctx.x_test,
                                        ctx.y_test, ensemble_max=args.num)
    ctx.target = {k: v for k, v in target.items() if k not in ("acc", "loss")}
    ctx.novelty = None
    if args.novelty:
        zctx = tables.zoo_context(config, seed=args.seed, progress=False)

        def novelty(params):
            nov = tables.novelty(zctx, params)
            return {k: nov[k] for k in ("l2_median", "l2_spacing_median", "l2_mean",
                                        "l2_spacing_mean", "geodesic_median",
                                        "geodesic_spacing_median") if k in nov}
        ctx.novelty = novelty
    return ctx


def render(task: str, flow: str, results: list[dict], ctx, args, wall: float) -> str:
    thesis = THESIS_ACC[task]
    zoo_acc = ctx.target["acc_mean"]
    arch = args.transfer_arch
    tr_head = f" {arch} samples (final): acc, loss, ensemble |" if arch else ""

    def tr_cell(p) -> str:
        if not arch:
            return ""
        tr = p.get("transfer")
        if tr is None:
            return " — (field not equivariant) |"
        return (f" {tr['acc_mean']:.3f} ± {tr['acc_std']:.3f}, {tr['loss_mean']:.3f}, "
                f"{tr['ensemble_acc']:.3f} |")

    lines = [
        f"# Time to quality: {task}, {flow} flow (aligned + exact OT), `{args.size}` zoo", "",
        f"Command: `{command_line()}`", "",
        f"Budget {args.budget:.0f} training seconds per variant (unless the variant sets its "
        f"own) on {os.cpu_count()} CPU cores "
        f"(jax {jax.__version__}); {args.num} samples per evaluation, every "
        f"{args.eval_every:.0f} s of training (sampling not counted); total wall time "
        f"{wall:.0f} s. Zoo's final snapshots: {zoo_acc:.3f} ± {ctx.target['acc_std']:.3f} "
        f"accuracy, loss {ctx.target['loss_mean']:.3f}, ensemble {ctx.target['ensemble_acc']:.3f}"
        f"; thesis (geometric aligned + OT): {thesis:.3f}.", "",
        "| variant | field | params | steps/s | steps | final acc | final loss | ensemble | "
        f"s to thesis {thesis:.3f} | s to zoo {zoo_acc:.3f} | best acc (at s) | novelty L2 "
        f"median / spacing |{tr_head}",
        "|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * bool(tr_head),
    ]
    for r in results:
        f = r["final"]
        best = max(r["points"], key=lambda p: p["acc_mean"])
        tt = first_time(r["points"], thesis)
        tz = first_time(r["points"], zoo_acc)
        nov = r.get("novelty")
        nov_s = (f"{nov['l2_median']:.3f} / {nov['l2_spacing_median']:.3f}"
                 if nov and "l2_spacing_median" in nov else "—")
        lines.append(
            f"| {r['label']} | `{r['model']}` | {r['params']:,} | "
            f"{r['calibrated_steps_per_sec']:.1f} | {r['steps_done']} | {f['acc_mean']:.3f} ± "
            f"{f['acc_std']:.3f} | {f['loss_mean']:.3f} | {f['ensemble_acc']:.3f} | "
            f"{'—' if tt is None else f'{tt:.0f}'} | {'—' if tz is None else f'{tz:.0f}'} | "
            f"{best['acc_mean']:.3f} ({best['train_seconds']:.0f}) | {nov_s} |{tr_cell(f)}")
    lines += ["", "Variants (config overrides on top of "
              f"`configs/{task}_{flow}.py:{args.size}`):", ""]
    for r in results:
        lines.append(f"- {r['label']}: `{' '.join(f'{k}={v}' for k, v in r['overrides'].items())}`")
    lines += ["", "Every evaluation:", "",
              "| variant | train s | step | train loss | acc | loss | ensemble |" + (
                  f" {arch}: acc, loss, ensemble |" if arch else ""),
              "|---|---|---|---|---|---|---|" + "---|" * bool(arch)]
    for r in results:
        for p in r["points"]:
            lines.append(f"| {r['label']} | {p['train_seconds']:.0f} | {p['step']} | "
                         f"{p['train_loss']:.4f} | {p['acc_mean']:.3f} ± {p['acc_std']:.3f} | "
                         f"{p['loss_mean']:.3f} | {p['ensemble_acc']:.3f} |{tr_cell(p)}")
    return "\n".join(lines) + "\n"


def throughput(args) -> None:
    """rt vs compact_rt train-step throughput at the thesis's model size."""
    config = get_base_config(args.task, args.flow, "default")
    space = pipeline._flow_space(config)
    x1 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(
        jax.random.split(jax.random.key(3), args.batch))
    x1 = jax.vmap(space.retract)(x1)
    rows = []
    for name in ("rt", "compact_rt"):
        cfg = copy.deepcopy(config)
        with cfg.unlocked():
            cfg.model.name = name
            cfg.model[name].update(dict(num_layers=5, width=32, num_heads=4))
            cfg.train.batch_size = args.batch
        run = pipeline.build_flow(cfg, space, jax.random.key(0))
        state, step, mesh = _make_step(run, cfg, ema=False)
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(
            jax.random.split(jax.random.key(4), args.batch))
        batch = train_lib.shard_batch({"x0": x0, "x1": x1}, mesh)
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, m = step(state, batch)
        jax.block_until_ready(m)
        sec = (time.perf_counter() - t0) / args.steps
        n_params = sum(int(np.size(a)) for a in jax.tree.leaves(run.variables))
        rows.append({"model": name, "params": n_params, "seconds_per_step": sec,
                     "networks_per_sec": args.batch / sec, "compile_seconds": compile_s})
        print(json.dumps(rows[-1]), flush=True)
    ratio = rows[0]["seconds_per_step"] / rows[1]["seconds_per_step"]
    print(f"compact_rt / rt train-step throughput ({mlp.format_arch(space.sizes)}, 5 layers x "
          f"width 32, batch {args.batch}): {ratio:.1f}x")
    out = args.out or os.path.join("docs", "learning", f"throughput_{args.task}")
    atomic.write_json(out + ".json", {"rows": rows, "ratio": ratio, "batch": args.batch,
                                      "arch": mlp.format_arch(space.sizes),
                                      "command": command_line()})


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.throughput:
        throughput(args)
        return
    t_start = time.perf_counter()
    base = get_base_config(args.task, args.flow, args.size)
    with base.unlocked():
        base.seed = args.seed
        if args.zoo_dir:
            base.zoo.dir = args.zoo_dir
    variants = [parse_variant(v) for v in (args.variant or DEFAULT_VARIANTS)]
    configs = []
    for label, ov in variants:
        cfg = apply_overrides(base, {k: v for k, v in ov.items() if k != "budget"})
        configs.append((label, ov, cfg, float(ov.get("budget", args.budget))))
    if args.save_runs:
        taken = [label for label, *_ in configs
                 if os.path.exists(os.path.join(args.save_runs, label, "config.json"))]
        if taken:
            raise SystemExit(f"error: --save_runs {args.save_runs} already holds runs "
                             f"{taken}; choose another directory")
    ctx = build_context(base, args)
    results = []
    out = args.out or os.path.join("docs", "learning", f"{args.task}_{args.flow}")
    for label, ov, config, budget in configs:
        result, params = run_variant(label, config, ctx.space, ctx.coords, ctx, args, budget)
        result["overrides"] = ov
        results.append(result)
        sampling_lib.save_samples_npz(f"{out}_samples_{label}.npz", params)
        if result.get("transfer_params"):
            sampling_lib.save_samples_npz(
                f"{out}_samples_{label}_{args.transfer_arch}.npz",
                result.pop("transfer_params"))
        payload = {"task": args.task, "flow": args.flow, "size": args.size,
                   "budget": args.budget, "eval_every": args.eval_every, "num": args.num,
                   "thesis_acc": THESIS_ACC[args.task], "target": ctx.target,
                   "results": results, "command": command_line(),
                   "hardware": pipeline._hardware()}
        atomic.write_json(out + ".json", payload)
    wall = time.perf_counter() - t_start
    text = render(args.task, args.flow, results, ctx, args, wall)
    atomic.write_text(out + ".md", text)
    curves = {r["label"]: ([p["train_seconds"] for p in r["points"]],
                           [p["acc_mean"] for p in r["points"]],
                           [p["acc_std"] for p in r["points"]]) for r in results}
    for r in results:
        pts = [p for p in r["points"] if p.get("transfer")]
        if pts:
            curves[f"{r['label']} ({args.transfer_arch})"] = (
                [p["train_seconds"] for p in pts], [p["transfer"]["acc_mean"] for p in pts],
                [p["transfer"]["acc_std"] for p in pts])
    plots.plot_accuracy_vs_time(
        out + ".png", curves,
        hlines={f"thesis {THESIS_ACC[args.task]:.3f}": THESIS_ACC[args.task],
                f"zoo {ctx.target['acc_mean']:.3f}": ctx.target["acc_mean"]},
        title=f"{args.task} {args.flow}: samples' accuracy vs training time")
    print(text)
    print(f"wrote {out}.md, {out}.json, {out}.png")


if __name__ == "__main__":
    main()
