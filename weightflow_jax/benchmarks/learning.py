"""Benchmark: time to quality of the vector fields, side by side in one run.

The library behind ``python -m experiments.bench_learning`` (its flags are the fields of
:class:`Settings`; :func:`run` does the work).

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

The commands that produced ``docs/learning/``: ``experiments/bench_learning.py`` and
``docs/LEARNING.md``.

A variant is ``"label|key=value|key=value"`` with dotted config keys (any field of
``configs/common.py``), e.g. ``"crt_w32|model.name=compact_rt|model.compact_rt.width=32"``,
parsed and applied by :mod:`weightflow_jax.tables.overrides` (values take the field's type);
the key ``budget`` sets that variant's own training seconds (default ``--budget``). Each
variant's train step is the flow's own recipe (:mod:`weightflow_jax.train.recipe`).

``--throughput`` times train steps instead (compile excluded) of ``rt`` and ``compact_rt`` at
the thesis's model size (5 layers, width 32, 4 heads, batch 8) and prints the ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import time

import jax
import numpy as np

from configs.common import get_base_config
from weightflow_jax import atomic, data as data_lib, flows, mlp, pipeline, symmetry
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax import evaluation
from weightflow_jax.evaluation import plots
from weightflow_jax.tables import context as tables_context  # zoo/novelty context of the tables
from weightflow_jax.tables import overrides as overrides_lib
from weightflow_jax.train import recipe

__all__ = ["Settings", "run", "throughput", "run_variant", "calibrate", "make_sampler",
           "data_key", "DATA_FIELDS",
           "save_run", "render", "THESIS_ACC", "DEFAULT_VARIANTS"]

# Thesis accuracies of the geometric aligned + OT rows (../shared/REFERENCE.md).
THESIS_ACC = {"mnist": 0.786, "breast_cancer": 0.991}
DEFAULT_VARIANTS = ("mlp|model.name=mlp", "compact_rt|model.name=compact_rt",
                    "rt|model.name=rt")


@dataclasses.dataclass
class Settings:
    """One benchmark run; the fields are ``experiments.bench_learning``'s flags.

    Attributes:
      task, flow, size: the config the variants start from (``configs/<task>_<flow>.py:size``).
      variant: ``"label|key=value|..."`` strings; ``None``: :data:`DEFAULT_VARIANTS`.
      budget: training seconds per variant; eval_every: training seconds between evaluations.
      num: networks sampled per evaluation; sample_steps: Euler steps (0: the config's).
      seed, zoo_dir: the config's seed and zoo directory (``""``: the config's).
      novelty: nearest-checkpoint distance of the last samples vs checkpoint spacing.
      out: output prefix (``""``: ``docs/learning/<task>_<flow>``, throughput
        ``docs/learning/throughput_<task>``).
      transfer_arch: also sample and evaluate this hidden architecture at every evaluation
        (the fields that can).
      save_runs: save each variant's final state as a flow run in ``<dir>/<label>``.
      zoo_size: a zoo preset (``wide``: no burn-in) instead of the config's zoo.
      prompts: conditioned variants (``flow.condition=train_loss``) are prompted with this
        many training losses at the last evaluation: R^2 of achieved vs prompted.
      throughput, batch, steps: train-step throughput mode, its batch and timed steps.
      command: the command recorded in the outputs.
    """

    task: str = "breast_cancer"
    flow: str = "geometric"
    size: str = "cpu"
    variant: list[str] | None = None
    budget: float = 120.0
    eval_every: float = 20.0
    num: int = 32
    sample_steps: int = 0
    seed: int = 0
    zoo_dir: str = ""
    novelty: bool = True
    out: str = ""
    transfer_arch: str = ""
    save_runs: str = ""
    zoo_size: str = ""
    prompts: int = 0
    throughput: bool = False
    batch: int = 8
    steps: int = 5
    command: str = ""


def _training(run: recipe.FlowRun, *, ema: bool):
    """The recipe's replicated state, step and mesh for ``run`` (state key 1)."""
    state, step, mesh = recipe.make_training(run, jax.random.key(1), ema=ema)
    return train_lib.replicate(state, mesh), step, mesh


class _Ctx:
    """What every variant shares (see :func:`build_context`)."""


def make_sampler(run: recipe.FlowRun, num: int, steps: int, space=None):
    """A jitted ``(variables, key) -> plain weights`` for ``num`` networks (compiled once),
    of the run's architecture or of ``space`` (another hidden width).

    The run's ``config.sample.solver`` integrates (``euler`` or ``midpoint``); a conditioned
    flow is prompted with ``config.sample.condition`` at weight
    ``config.sample.condition_weight``."""
    space, fld = space or run.space, run.field
    cfg, sc = run.config.flow, run.config.sample
    solver = str(sc.get("solver", "euler"))
    sampling_lib.check_solver(space, solver)
    value = pipeline.resolve_condition(run, sc.get("condition", "final"))
    default = np.float32(np.nan if value is None else value)
    weight = float(sc.get("condition_weight", 1.0))
    conditioned = run.conditioner is not None
    representative = str(sc.get("representative", symmetry.DEFAULT_REPRESENTATIVE))
    symmetry.check_representative(representative)

    @jax.jit
    def draw_with(variables, key, cond):
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, float(cfg.prior_std)))(
            jax.random.split(key, num))
        predict = recipe.conditioned_predict_fn(fld, variables, cond if conditioned else None,
                                                weight)
        x1 = sampling_lib.integrate(space, predict, x0, steps=steps, solver=solver,
                                    parameterization=str(cfg.parameterization))
        # The form experiments.sample writes (and the tables' novelty measures): the same
        # functions, but the L2 novelty of the exact form (unit first-layer rows, all scale
        # in the last layer) against raw checkpoints measured mostly that scale.
        return symmetry.represent(space.decode(x1), representative)

    def draw(variables, key, condition: float | None = None):
        """``condition``: a raw prompt (default: the config's ``sample.condition``)."""
        c = default if condition is None else np.float32(condition)
        return draw_with(variables, key, c)

    return draw


def _conditions(config, zoo):
    """``(conditioner, per-snapshot values)`` of ``config.flow.condition`` on ``zoo``
    (``(None, None)`` for an unconditioned flow)."""
    cond = recipe.fit_conditioner(config, zoo) if zoo is not None else None
    return cond, (None if cond is None else np.asarray(zoo.metrics[cond.kind], np.float32))


def calibrate(config, space, coords, stats, n: int = 20, zoo=None) -> float:
    """Steps per second of ``config``'s train step (compile excluded)."""
    cal = copy.deepcopy(config)
    with cal.unlocked():
        cal.train.schedule = "constant"
    cond, values = _conditions(cal, zoo)
    run = recipe.build_flow(cal, space, jax.random.key(0), stats, cond)
    state, step, mesh = _training(run, ema=False)
    batch_fn = recipe.make_batch_fn(run, coords, jax.random.key(2), values)
    state, m = step(state, train_lib.shard_batch(batch_fn(0), mesh))
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        state, m = step(state, train_lib.shard_batch(batch_fn(i), mesh))
    jax.block_until_ready(m)
    return n / (time.perf_counter() - t0)


def run_variant(label: str, config, space, coords, ctx, settings: Settings, budget: float):
    """Trains one variant for ``budget`` seconds, evaluating along the way.

    Returns:
      ``(result, params)``: the variant's result dict (its evaluations under ``points``)
      and the networks of its last evaluation.
    """
    stats = recipe.fit_field_stats(config, coords)
    zoo = getattr(ctx, "zoo", None)
    rate = calibrate(config, space, coords, stats, zoo=zoo)
    steps = max(int(rate * budget), 50)
    with config.unlocked():
        config.train.steps = steps
    key = jax.random.key(int(config.seed))
    k_init, _, k_data, k_sample = jax.random.split(key, 4)
    cond, values = _conditions(config, zoo)
    run = recipe.build_flow(config, space, k_init, stats, cond)
    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(run.variables))
    state, step, mesh = _training(run, ema=True)
    batch_fn = recipe.make_batch_fn(run, coords, k_data, values)
    sample_steps = int(settings.sample_steps or config.sample.steps)
    draw = make_sampler(run, int(settings.num), sample_steps)
    draw_transfer = None
    if settings.transfer_arch:
        try:
            t_space = pipeline.flow_space_for(run, settings.transfer_arch)
            draw_transfer = make_sampler(run, int(settings.num), sample_steps, t_space)
        except ValueError as err:
            print(f"[{label}] no {settings.transfer_arch} transfer: {err}", flush=True)
    x_test, y_test = ctx.x_test, ctx.y_test

    points, losses = [], []
    train_s, next_eval, done = 0.0, float(settings.eval_every), 0
    print(f"[{label}] {n_params} parameters, calibrated {rate:.2f} steps/s -> {steps} steps "
          f"in {budget:.0f} s", flush=True)

    def evaluate():
        t0 = time.perf_counter()
        variables = recipe.sampling_variables(state)
        params = [(np.asarray(w), np.asarray(b)) for w, b in draw(variables, k_sample)]
        ev = pipeline.evaluate_networks(params, x_test, y_test, ensemble_max=settings.num,
                                        diversity_max=settings.num)
        point = {"train_seconds": train_s, "step": done,
                 "train_loss": float(np.mean(losses[-50:])) if losses else float("nan"),
                 "acc_mean": ev["acc_mean"], "acc_std": ev["acc_std"],
                 "loss_mean": ev["loss_mean"], "ensemble_acc": ev["ensemble_acc"],
                 "eval_seconds": time.perf_counter() - t0}
        if draw_transfer is not None:
            tparams = [(np.asarray(w), np.asarray(b))
                       for w, b in draw_transfer(variables, k_sample)]
            tev = pipeline.evaluate_networks(tparams, x_test, y_test, ensemble_max=settings.num,
                                             diversity_max=settings.num)
            point["transfer"] = {k: tev[k] for k in ("acc_mean", "acc_std", "loss_mean",
                                                     "ensemble_acc")}
            transfer_params[:] = [tparams]
            print(f"[{label}] {train_s:7.1f} s {settings.transfer_arch}: acc "
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
                next_eval += float(settings.eval_every)
                t_last = time.perf_counter()
    params = evaluate()
    prompts = None
    if settings.prompts and cond is not None:
        prompts = prompt_alignment(draw, recipe.sampling_variables(state), k_sample, cond,
                                   int(settings.prompts), ctx)
        points[-1]["achieved_train_loss"] = prompts["default_train_loss"]
        print(f"[{label}] prompt alignment over {settings.prompts} prompts: R^2 "
              f"{prompts['r2_means']:.3f}, slope {prompts['slope']:.3f}", flush=True)
    result = {"label": label, "model": str(config.model.name), "params": n_params,
              "compile_seconds": compile_s, "budget": budget,
              "calibrated_steps_per_sec": rate, "planned_steps": steps, "steps_done": done,
              "sample_steps": sample_steps, "points": points,
              "overrides": {}, "final": points[-1], "prompt_alignment": prompts}
    if settings.novelty and ctx.novelty is not None:
        result["novelty"] = ctx.novelty(params)
    if transfer_params:
        result["transfer_arch"] = settings.transfer_arch
        result["transfer_params"] = transfer_params[0]
    if settings.save_runs:
        result["run_dir"] = save_run(os.path.join(settings.save_runs, label), config, stats,
                                     state, done, cond)
    return result, params


def prompt_alignment(draw, variables, key, cond, num_prompts: int, ctx) -> dict:
    """A conditioned variant prompted with ``num_prompts`` training losses evenly spaced in
    log-loss over the zoo's 5th-95th percentile: each prompt's samples' mean achieved loss
    on the training split, and R^2 of achieved vs prompted (:mod:`weightflow_jax.evaluation.
    prompts`); also the achieved loss at the config's own prompt."""
    grid = evaluation.prompt_grid(cond.prompts["p05"], cond.prompts["p95"], num_prompts)
    achieved = []
    for p in grid:
        params = [(np.asarray(w), np.asarray(b)) for w, b in draw(variables, key, p)]
        _, tl = evaluation.accuracy_and_loss(params, ctx.x_train, ctx.y_train)
        achieved.append([float(v) for v in tl])
    own = [(np.asarray(w), np.asarray(b)) for w, b in draw(variables, key)]
    _, tl = evaluation.accuracy_and_loss(own, ctx.x_train, ctx.y_train)
    out = evaluation.prompt_alignment(grid, achieved)
    out.update(prompts=grid, achieved_means=[float(np.mean(a)) for a in achieved],
               default_train_loss=float(np.mean(tl)))
    return out


def save_run(workdir: str, config, stats, state, step: int, condition=None) -> str:
    """Writes a flow run that ``experiments.sample --workdir`` and ``load_flow`` open: the
    variant's config (``train.steps`` = its planned steps), statistics and a checkpoint of
    its state at ``step``."""
    if os.path.exists(os.path.join(workdir, "config.json")):
        raise ValueError(f"{workdir} already holds a run; choose another --save_runs")
    os.makedirs(workdir, exist_ok=True)
    recipe.save_field_stats(workdir, stats)
    recipe.save_conditioner(workdir, condition)
    train_lib.save_config(workdir, config)
    with train_lib.CheckpointStore(workdir) as store:
        store.save(step, state)
        store.wait()
    return workdir


def first_time(points, threshold: float) -> float | None:
    """Training seconds of the first evaluation whose mean accuracy reaches ``threshold``."""
    for p in points:
        if p["acc_mean"] >= threshold:
            return p["train_seconds"]
    return None


# Flow fields that change the training coordinates (with the zoo): a variant overriding one
# gets its own prepared data instead of the base config's.
DATA_FIELDS = ("kind", "align", "canonical_mode", "template_iters", "align_scope")


def data_key(config) -> str:
    """What the training coordinates of ``config`` depend on, as a string."""
    return json.dumps({"zoo": config.zoo.to_dict(),
                       "flow": {k: config.flow.get(k) for k in DATA_FIELDS}},
                      sort_keys=True, default=str)


def build_context(config, settings: Settings) -> _Ctx:
    """The zoo's training coordinates, test split, final snapshots' evaluation and (with
    ``settings.novelty``) the novelty function every variant is measured with."""
    ctx = _Ctx()
    space, coords, zoo, pre = pipeline.prepare_data(config)
    ctx.space, ctx.coords, ctx.zoo = space, coords, zoo
    ctx.x_test, ctx.y_test = data_lib.load(str(config.zoo.dataset), "test")
    ctx.x_train, ctx.y_train = data_lib.load(str(config.zoo.dataset), "train")
    target = pipeline.evaluate_networks(zoo.select(zoo.final_indices()), ctx.x_test,
                                        ctx.y_test, ensemble_max=settings.num)
    ctx.target = {k: v for k, v in target.items() if k not in ("acc", "loss")}
    ctx.novelty = None
    if settings.novelty:
        zctx = tables_context.zoo_context(config, seed=settings.seed, progress=False)

        def novelty(params):
            nov = tables_context.novelty(zctx, params)
            return {k: nov[k] for k in ("l2_median", "l2_spacing_median", "l2_mean",
                                        "l2_spacing_mean", "geodesic_median",
                                        "geodesic_spacing_median") if k in nov}
        ctx.novelty = novelty
    return ctx


def render(task: str, flow: str, results: list[dict], ctx, settings: Settings,
           wall: float) -> str:
    """The markdown report: one row per variant, the variants' overrides, every evaluation."""
    thesis = THESIS_ACC[task]
    zoo_acc = ctx.target["acc_mean"]
    arch = settings.transfer_arch
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
        f"# Time to quality: {task}, {flow} flow (aligned + exact OT), "
        f"`{settings.zoo_size or settings.size}` zoo", "",
        f"Command: `{settings.command}`", "",
        f"Budget {settings.budget:.0f} training seconds per variant (unless the variant sets its "
        f"own) on {os.cpu_count()} CPU cores "
        f"(jax {jax.__version__}); {settings.num} samples per evaluation, every "
        f"{settings.eval_every:.0f} s of training (sampling not counted); total wall time "
        f"{wall:.0f} s. Zoo's final snapshots: {zoo_acc:.3f} ± {ctx.target['acc_std']:.3f} "
        f"accuracy, loss {ctx.target['loss_mean']:.3f}, ensemble {ctx.target['ensemble_acc']:.3f}"
        f"; thesis (geometric aligned + OT): {thesis:.3f}.", "",
        "| variant | field | params | steps/s | steps | final acc | final loss | ensemble | "
        f"s to thesis {thesis:.3f} | s to zoo {zoo_acc:.3f} | best acc (at s) | novelty L2 "
        f"median / spacing | prompt R² (slope) |{tr_head}",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * bool(tr_head),
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
            f"{best['acc_mean']:.3f} ({best['train_seconds']:.0f}) | {nov_s} | "
            f"{_prompt_cell(r.get('prompt_alignment'))} |{tr_cell(f)}")
    lines += ["", "Variants (config overrides on top of "
              f"`configs/{task}_{flow}.py:{settings.size}`):", ""]
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


def _prompt_cell(pa: dict | None) -> str:
    if not pa:
        return "—"
    return f"{pa['r2_means']:.3f} ({pa['slope']:.2f})"


def throughput(settings: Settings) -> None:
    """rt vs compact_rt train-step throughput at the thesis's model size."""
    config = get_base_config(settings.task, settings.flow, "default")
    space = recipe.flow_space(config)
    x1 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(
        jax.random.split(jax.random.key(3), settings.batch))
    x1 = jax.vmap(space.retract)(x1)
    rows = []
    for name in ("rt", "compact_rt"):
        cfg = copy.deepcopy(config)
        with cfg.unlocked():
            cfg.model.name = name
            cfg.model[name].update(dict(num_layers=5, width=32, num_heads=4))
            cfg.train.batch_size = settings.batch
        run = recipe.build_flow(cfg, space, jax.random.key(0))
        state, step, mesh = _training(run, ema=False)
        x0 = jax.vmap(lambda k: flows.sample_prior(k, space, 0.1))(
            jax.random.split(jax.random.key(4), settings.batch))
        batch = train_lib.shard_batch({"x0": x0, "x1": x1}, mesh)
        t0 = time.perf_counter()
        state, m = step(state, batch)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(settings.steps):
            state, m = step(state, batch)
        jax.block_until_ready(m)
        sec = (time.perf_counter() - t0) / settings.steps
        n_params = sum(int(np.size(a)) for a in jax.tree.leaves(run.variables))
        rows.append({"model": name, "params": n_params, "seconds_per_step": sec,
                     "networks_per_sec": settings.batch / sec, "compile_seconds": compile_s})
        print(json.dumps(rows[-1]), flush=True)
    ratio = rows[0]["seconds_per_step"] / rows[1]["seconds_per_step"]
    print(f"compact_rt / rt train-step throughput ({mlp.format_arch(space.sizes)}, 5 layers x "
          f"width 32, batch {settings.batch}): {ratio:.1f}x")
    out = settings.out or os.path.join("docs", "learning", f"throughput_{settings.task}")
    atomic.write_json(out + ".json", {"rows": rows, "ratio": ratio, "batch": settings.batch,
                                      "arch": mlp.format_arch(space.sizes),
                                      "command": settings.command})


def run(settings: Settings) -> list[dict]:
    """Runs the benchmark of ``settings`` (``throughput`` mode or time to quality) and writes
    ``<out>.md``, ``<out>.json``, ``<out>.png`` and every variant's last samples.

    Returns:
      The variants' results (as in ``<out>.json``; empty in ``throughput`` mode).

    Raises:
      ValueError: a malformed variant or an unknown config key in one.
      FileExistsError: ``save_runs`` already holds a run of one of the variants.
    """
    if settings.throughput:
        throughput(settings)
        return []
    t_start = time.perf_counter()
    base = get_base_config(settings.task, settings.flow, settings.size)
    if settings.zoo_size:
        base = overrides_lib.apply_overrides(
            base, tables_context.zoo_preset_overrides(settings.task, settings.zoo_size),
            source="--zoo_size")
    with base.unlocked():
        base.seed = settings.seed
        if settings.zoo_dir:
            base.zoo.dir = settings.zoo_dir
    variants = [overrides_lib.parse_variant(v) for v in (settings.variant or DEFAULT_VARIANTS)]
    configs = []
    for label, items in variants:
        ov = dict(items)
        cfg = overrides_lib.apply_overrides(
            base, [(k, v) for k, v in items if k != "budget"], source="--variant")
        configs.append((label, ov, cfg, float(ov.get("budget", settings.budget))))
    if settings.save_runs:
        taken = [label for label, *_ in configs
                 if os.path.exists(os.path.join(settings.save_runs, label, "config.json"))]
        if taken:
            raise FileExistsError(f"--save_runs {settings.save_runs} already holds runs {taken}; "
                                  "choose another directory")
    ctx = build_context(base, settings)
    contexts = {data_key(base): ctx}
    results = []
    out = settings.out or os.path.join("docs", "learning", f"{settings.task}_{settings.flow}")
    for label, ov, config, budget in configs:
        key = data_key(config)
        if key not in contexts:  # the variant changes the zoo or its symmetry removal
            contexts[key] = build_context(config, settings)
        vctx = contexts[key]
        result, params = run_variant(label, config, vctx.space, vctx.coords, vctx, settings,
                                     budget)
        result["overrides"] = ov
        results.append(result)
        sampling_lib.save_samples_npz(f"{out}_samples_{label}.npz", params)
        if result.get("transfer_params"):
            sampling_lib.save_samples_npz(
                f"{out}_samples_{label}_{settings.transfer_arch}.npz",
                result.pop("transfer_params"))
        payload = {"task": settings.task, "flow": settings.flow, "size": settings.size,
                   "budget": settings.budget, "eval_every": settings.eval_every,
                   "num": settings.num,
                   "thesis_acc": THESIS_ACC[settings.task], "target": ctx.target,
                   "results": results, "command": settings.command,
                   "hardware": pipeline._hardware()}
        atomic.write_json(out + ".json", payload)
    wall = time.perf_counter() - t_start
    text = render(settings.task, settings.flow, results, ctx, settings, wall)
    atomic.write_text(out + ".md", text)
    curves = {r["label"]: ([p["train_seconds"] for p in r["points"]],
                           [p["acc_mean"] for p in r["points"]],
                           [p["acc_std"] for p in r["points"]]) for r in results}
    for r in results:
        pts = [p for p in r["points"] if p.get("transfer")]
        if pts:
            curves[f"{r['label']} ({settings.transfer_arch})"] = (
                [p["train_seconds"] for p in pts], [p["transfer"]["acc_mean"] for p in pts],
                [p["transfer"]["acc_std"] for p in pts])
    plots.plot_accuracy_vs_time(
        out + ".png", curves,
        hlines={f"thesis {THESIS_ACC[settings.task]:.3f}": THESIS_ACC[settings.task],
                f"zoo {ctx.target['acc_mean']:.3f}": ctx.target["acc_mean"]},
        title=f"{settings.task} {settings.flow}: samples' accuracy vs training time")
    print(text)
    print(f"wrote {out}.md, {out}.json, {out}.png")
    return results
