"""End-to-end run: zoo -> alignment/canonical form -> flow training -> sampling -> report.

:func:`train_and_evaluate` is what ``python -m experiments.train --config=...`` calls; it is
importable and runs with a shrunken config in the tests. :func:`load_flow` reopens a
finished (or checkpointed) run for sampling. This module is the story only: the training
recipe it calls (the field, optimizer + schedule + EMA, CFM loss, coupled batches, the
field's statistics) is :mod:`weightflow_jax.train.recipe`.

A workdir holds: ``config.json``, orbax checkpoints, ``metrics.jsonl`` + TensorBoard event
files, ``samples.npz`` (plain weights ``W0, b0, ...``) with ``samples.json`` (their evaluation),
``target.json`` (the zoo's final snapshots evaluated alike), ``eval.json`` (everything) and
``report.md``.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import os
from pathlib import Path
import platform
import time
from collections.abc import Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from weightflow_jax import data as data_lib
from weightflow_jax import atomic, evaluation, flows, mlp, zoo as zoo_lib
from weightflow_jax import models as models_lib
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax import symmetry
from weightflow_jax.symmetry import Canonical
from weightflow_jax.train.recipe import (CONDITION_FILE, STATS_FILE, FlowRun, build_flow,
                                         condition_kind, ema_decay, fit_conditioner,
                                         fit_field_stats, flow_space, load_conditioner,
                                         load_field_stats, make_batch_fn, make_optimizer,
                                         make_training, sampling_variables, save_conditioner,
                                         save_field_stats)

__all__ = ["default_workdir", "prepare_data", "train_flow", "train_and_evaluate", "load_flow",
           "flow_space_for", "sample_networks", "evaluate_networks", "sample_and_evaluate",
           "SAMPLE_DEFAULTS", "sampling_options", "resolve_sampling", "resolve_condition",
           "condition_record", "achieved_train_loss", "total_train_seconds",
           "recorded_train_seconds",
           "upgrade_config", "lock_file_info", "LOCK_FILE"]


def default_workdir(config: ml_collections.ConfigDict) -> str:
    """``config.workdir`` or ``runs/<name>_<size>``."""
    return str(config.workdir) or os.path.join("runs", f"{config.name}_{config.size}")


def prepare_data(config: ml_collections.ConfigDict, *, progress: bool = True):
    """Builds or reuses the zoo and returns ``(space, coords, zoo, preprocessed)``.

    ``coords`` is a host :class:`Canonical` with a leading snapshot axis: aligned raw weights
    for the euclidean flow, canonical coordinates for the others.
    """
    space = flow_space(config)
    path = zoo_lib.build_zoo(config.zoo, progress=progress)
    zoo = zoo_lib.load_zoo(path)
    if zoo.layer_sizes != space.sizes:
        raise ValueError(
            f"the zoo at {path} holds {mlp.format_arch(zoo.layer_sizes)} networks but the flow "
            f"config is for {mlp.format_arch(space.sizes)}; set --config.zoo.arch or use a "
            "matching zoo directory (--config.zoo.dir)")
    mode = "none" if space.kind == "euclidean" else space.canonical_mode
    iters = int(train_lib.config_field(config, "flow.template_iters") or 0)
    if iters < 0:
        raise ValueError(f"flow.template_iters must be >= 0 (0: align to run 0's final "
                         f"network, K: to an iterated template), got {iters}")
    scope = str(train_lib.config_field(config, "flow.align_scope"))
    if scope not in zoo_lib.ALIGN_SCOPES:
        raise ValueError(f"flow.align_scope must be one of {zoo_lib.ALIGN_SCOPES}, got "
                         f"{scope!r}")
    align = bool(config.flow.align)
    pre = zoo_lib.preprocess(zoo, mode, align=align, progress=progress,
                             reference="template" if iters and align else None,
                             template_iters=max(iters, 1),
                             scope=scope if align else "snapshot")
    if space.kind == "euclidean":
        coords = Canonical([(np.asarray(w), np.asarray(b)) for w, b in pre.params], None)
    else:
        coords = pre.canonical
    return space, coords, zoo, pre


def flow_space_for(run: FlowRun, arch: str | None = None) -> flows.FlowSpace:
    """The run's flow space, or the same flow on another hidden architecture ``arch``.

    Raises:
      ValueError: ``arch`` changes the input or output width, or the depth beyond what the
        model's positional embeddings cover.
    """
    if not arch:
        return run.space
    sizes = mlp.parse_arch(arch)
    base = run.space.sizes
    if sizes[0] != base[0] or sizes[-1] != base[-1]:
        raise ValueError(
            f"--arch {mlp.format_arch(sizes)} has input/output widths {sizes[0]}/{sizes[-1]} "
            f"but the flow was trained on {mlp.format_arch(base)} ({base[0]}/{base[-1]}); "
            "only hidden widths can change")
    run.field.check_sizes(sizes)
    return run.space.with_sizes(sizes)


SAMPLE_DEFAULTS = dict(guidance_mode="balanced", guidance_schedule="constant",
                       flow_velocity="auto", output_scale="auto",
                       representative=symmetry.DEFAULT_REPRESENTATIVE,
                       condition="final", condition_weight=1.0)


def sampling_options(sample_config: Any, **overrides: Any) -> dict[str, Any]:
    """The decoding/guidance options of a ``config.sample`` block (older configs lack them:
    :data:`SAMPLE_DEFAULTS` fill in), with ``overrides`` (``None`` values ignored)."""
    get = sample_config.get if hasattr(sample_config, "get") else dict(sample_config).get
    out = {k: get(k, v) for k, v in SAMPLE_DEFAULTS.items()}
    out.update({k: v for k, v in overrides.items() if v is not None})
    return out


def resolve_sampling(options: Mapping[str, Any], *, guided: bool, own_task: bool
                     ) -> dict[str, Any]:
    """Turns ``"auto"`` options into concrete ones.

    * ``flow_velocity="auto"``: ``"displacement"`` when guided (the field's conditional
      velocity pulls every state back to the endpoint it predicts and undoes the guidance,
      see :mod:`weightflow_jax.sampling.solvers`), else ``"conditional"``.
    * ``output_scale="auto"``: ``"flow"`` on the flow's own task; on another task the flow's
      output scale is that of its training task's logits (MNIST flows: a last-layer norm of
      ~57, Fashion-MNIST cross-entropy ~18), so ``"learn"`` when guided (the guidance sets
      it) and ``1.0`` (the thesis's canonical form) when not.
    """
    out = dict(options)
    out.setdefault("condition", SAMPLE_DEFAULTS["condition"])
    out.setdefault("condition_weight", SAMPLE_DEFAULTS["condition_weight"])
    if out["flow_velocity"] == "auto":
        out["flow_velocity"] = "displacement" if guided else "conditional"
    if out["output_scale"] == "auto":
        out["output_scale"] = "flow" if own_task else ("learn" if guided else 1.0)
    else:
        out["output_scale"] = sampling_lib.check_output_scale(out["output_scale"])
    return out


def sample_networks(run: FlowRun, key: jax.Array, num: int, *, steps: int,
                    space: flows.FlowSpace | None = None, guidance: float = 0.0,
                    task: tuple[np.ndarray, np.ndarray] | None = None,
                    guidance_batch: int | None = 256, solver: str = "euler",
                    chunk: int = 50, guidance_mode: str = "balanced",
                    guidance_schedule: str = "constant", flow_velocity: str = "conditional",
                    output_scale: str | float = "flow",
                    representative: str = symmetry.DEFAULT_REPRESENTATIVE,
                    condition: Any = "final", condition_weight: float = 1.0) -> mlp.Params:
    """Samples ``num`` networks (plain host weights) with :func:`weightflow_jax.sampling.sample`.

    Args:
      space: another architecture of the same flow (see :func:`flow_space_for`).
      guidance: ``lambda`` of task-loss guidance (needs ``task = (x, y)``, the guidance
        task's *training* split); a fresh random minibatch of ``guidance_batch`` examples
        is drawn at every step.
      guidance_mode, guidance_schedule: see :mod:`weightflow_jax.sampling.guidance`.
      flow_velocity, output_scale: see :mod:`weightflow_jax.sampling.solvers` (concrete
        values; :func:`resolve_sampling` turns ``"auto"`` into them).
      representative: the decoded form (``"balanced"`` or ``"exact"``).
      condition: a conditioned flow's prompt: ``"final"`` (the zoo's final snapshots' mean
        train loss/accuracy), ``"best"``, ``"p05"``/``"p50"``/``"p95"``, a number, or
        ``None``/``"none"`` (unconditional); ignored by an unconditioned flow.
      condition_weight: classifier-free guidance weight (``1`` = the conditional field).
    """
    space = space or run.space
    value = resolve_condition(run, condition)
    guide = None
    if guidance:
        if task is None:
            raise ValueError("guidance needs task data (x, y); pass task=(x, y)")
        guide = sampling_lib.make_guidance(space, task[0], task[1], guidance,
                                           batch_size=guidance_batch, mode=guidance_mode,
                                           schedule=guidance_schedule)
    predict = run.predict_fn(space, condition=value, condition_weight=condition_weight)
    return sampling_lib.sample(
        space, predict, key, num, steps=steps, solver=solver, guidance=guide,
        batch_size=chunk, parameterization=str(run.config.flow.parameterization),
        prior_std=float(run.config.flow.prior_std), flow_velocity=flow_velocity,
        output_scale=output_scale, representative=representative)


def resolve_condition(run: FlowRun, condition: Any) -> float | None:
    """A prompt as a raw value for ``run`` (``None``: unconditional / unconditioned flow).

    Raises:
      ValueError: an unknown prompt name or an invalid value (see
        :meth:`weightflow_jax.models.Conditioner.resolve`).
    """
    if run.conditioner is None or condition is None or str(condition) == "none":
        return None
    return run.conditioner.resolve(condition)


def condition_record(run: FlowRun, options: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the samples' JSON says of the condition: metric, prompt, value, weight."""
    if run.conditioner is None:
        return None
    prompt = options.get("condition", SAMPLE_DEFAULTS["condition"])
    value = resolve_condition(run, prompt)
    return {"kind": run.conditioner.kind, "prompt": None if prompt is None else str(prompt),
            "value": value, "weight": float(options.get("condition_weight", 1.0)),
            "zoo_prompts": dict(run.conditioner.prompts)}


def evaluate_networks(params: mlp.Params, x: np.ndarray, y: np.ndarray, *,
                      ensemble_max: int = 64, diversity_max: int = 64) -> dict[str, Any]:
    """Per-network test accuracy/loss, the posterior-predictive curve and diversity."""
    acc, loss = evaluation.accuracy_and_loss(params, x, y)
    curve = evaluation.ensemble_curve(params, x, y, max_size=ensemble_max)
    div = evaluation.diversity(params, x, max_networks=diversity_max)
    return {
        "num": int(len(acc)),
        "acc_mean": float(np.mean(acc)), "acc_std": float(np.std(acc)),
        "loss_mean": float(np.mean(loss)), "loss_std": float(np.std(loss)),
        "ensemble_acc": float(curve["accuracy"][-1]),
        "ensemble_sizes": [int(v) for v in curve["sizes"]],
        "ensemble_curve": [float(v) for v in curve["accuracy"]],
        "diversity_jsd": float(div["mean"]),
        "acc": [float(a) for a in acc], "loss": [float(v) for v in loss],
    }


def sample_and_evaluate(run: FlowRun, out_prefix: str, *, num: int, steps: int,
                        seed: int = 0, arch: str | None = None, task: str | None = None,
                        guidance: float = 0.0, guidance_batch: int | None = 256,
                        solver: str = "euler", chunk: int = 50,
                        options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Samples, evaluates on ``task``'s test split and writes ``<out_prefix>.npz``/``.json``.

    Guidance uses ``task``'s training split. ``options`` are the decoding/guidance options
    (:func:`sampling_options`; default: the run's ``config.sample``), resolved by
    :func:`resolve_sampling` and recorded in the JSON (``representative`` is also stored in
    the ``.npz``).

    Everything is checked before anything is written: another input/output width (``arch``)
    or a task whose input size differs from the networks' raise ``ValueError``.

    Returns:
      What the JSON holds, plus ``params``: the sampled networks (not in the JSON).
    """
    space = flow_space_for(run, arch)
    own = str(run.config.zoo.dataset)
    task = task or own
    info = data_lib.info(task)
    if info.input_dim != space.sizes[0] or info.num_classes != space.sizes[-1]:
        raise ValueError(
            f"task {task!r} has {info.input_dim} inputs and {info.num_classes} classes but the "
            f"networks are {mlp.format_arch(space.sizes)}")
    opts = resolve_sampling(options if options is not None else sampling_options(
        run.config.sample), guided=bool(guidance), own_task=task == own)
    cond_info = condition_record(run, opts)  # checks the prompt before sampling
    x_test, y_test = data_lib.load(task, "test")
    train = data_lib.load(task, "train") if guidance else None
    t0 = time.time()
    params = sample_networks(run, jax.random.key(seed), num, steps=steps, space=space,
                             guidance=guidance, task=train, guidance_batch=guidance_batch,
                             solver=solver, chunk=chunk, **opts)
    seconds = time.time() - t0
    result = {
        "arch": mlp.format_arch(space.sizes), "task": task, "num": num, "steps": steps,
        "solver": solver, "guidance": guidance, "guidance_batch": guidance_batch,
        "seed": seed, "sample_seconds": seconds,
        **opts, "condition_info": cond_info,
        "samples": evaluate_networks(params, x_test, y_test),
    }
    sampling_lib.save_samples_npz(out_prefix + ".npz", params,
                                  representative=opts["representative"])
    atomic.write_json(out_prefix + ".json", result)
    return {**result, "params": params}


# Fields that may change when a run is resumed (what is trained stays the same).
SAFE_TO_CHANGE_ON_RESUME = train_lib.DEFAULT_SAFE_FIELDS | {
    "train.steps", "train.log_every", "train.checkpoint_every", "workdir", "sample.num",
    "sample.steps", "sample.guidance", "sample.guidance_batch", "sample.chunk",
    "sample.guidance_mode", "sample.guidance_schedule", "sample.flow_velocity",
    "sample.output_scale", "sample.representative", "sample.condition",
    "sample.condition_weight", "sample.solver", "eval.ensemble_sizes"}


def train_flow(config: ml_collections.ConfigDict, workdir: str, space: flows.FlowSpace,
               coords: Canonical, *, zoo: zoo_lib.Zoo | None = None, progress: bool = True,
               hooks=()):
    """Trains (or resumes training) the flow of ``config`` on ``coords`` in ``workdir``.

    A conditioned flow (``flow.condition != 'none'``) needs the ``zoo`` the coords came from
    (:func:`prepare_data`): its recorded training-split metric of every snapshot is the
    condition; the fitted :class:`~weightflow_jax.models.Conditioner` is stored in
    ``workdir/condition.json``.

    Returns:
      ``(run, summary)``: the :class:`FlowRun` with the trained variables and the loop's
      :class:`~weightflow_jax.train.TrainSummary`.
    """
    key = jax.random.key(int(config.seed))
    k_init, k_state, k_data, _ = jax.random.split(key, 4)
    stats = fit_field_stats(config, coords)
    stored = load_field_stats(workdir)
    if stored is not None and not stored.equals(stats):
        raise ValueError(
            f"{workdir}/{STATS_FILE} holds standardization statistics of other training "
            "coordinates (another zoo or preprocessing); use a fresh --workdir")
    conditioner, conditions = None, None
    if condition_kind(config) != "none":
        if zoo is None:
            raise ValueError(f"flow.condition={condition_kind(config)!r} needs the zoo's "
                             "recorded metrics: pass train_flow(..., zoo=zoo)")
        conditioner = fit_conditioner(config, zoo)
        conditions = np.asarray(zoo.metrics[conditioner.kind], np.float32)
        stored_c = load_conditioner(workdir)
        if stored_c is not None and stored_c.to_dict() != conditioner.to_dict():
            raise ValueError(f"{workdir}/{CONDITION_FILE} was fitted on another zoo; use a "
                             "fresh --workdir")
    os.makedirs(workdir, exist_ok=True)
    save_field_stats(workdir, stats)
    save_conditioner(workdir, conditioner)
    run = build_flow(config, space, k_init, stats, conditioner)
    state, step, mesh = make_training(run, k_state)
    batch_fn = make_batch_fn(run, coords, k_data, conditions)
    t = config.train
    state, summary = train_lib.train_loop(
        state, step, batch_fn, num_steps=int(t.steps), workdir=workdir,
        checkpoint_every=int(t.checkpoint_every), log_every=int(t.log_every), config=config,
        mesh=mesh, progress=progress, safe_config_fields=SAFE_TO_CHANGE_ON_RESUME,
        hooks=hooks)
    run.variables = sampling_variables(state)
    return run, summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | None = None, *,
                       progress: bool = True) -> dict[str, Any]:
    """Builds/reuses the zoo, trains the flow (resuming), samples, evaluates, reports.

    Returns:
      A summary dictionary (also written to ``workdir/eval.json``).
    """
    train_lib.maybe_initialize_distributed()
    workdir = workdir or default_workdir(config)
    os.makedirs(workdir, exist_ok=True)
    t_start = time.time()
    previous = atomic.read_json(os.path.join(workdir, "eval.json"))
    space, coords, zoo, pre = prepare_data(config, progress=progress)
    run, summary = train_flow(config, workdir, space, coords, zoo=zoo, progress=progress)
    train_record = summary.as_dict()
    train_record["total_wall_time_s"] = total_train_seconds(summary, previous)
    n_params = sum(int(np.size(a)) for a in jax.tree.leaves(run.variables))

    sc = config.sample
    sampled = sample_and_evaluate(
        run, os.path.join(workdir, "samples"), num=int(sc.num), steps=int(sc.steps),
        seed=int(config.seed), guidance=float(sc.guidance),
        guidance_batch=int(sc.guidance_batch), chunk=int(sc.chunk),
        solver=str(sc.get("solver", "euler")))
    ev, sample_seconds = sampled["samples"], sampled["sample_seconds"]
    if run.conditioner is not None:  # achieved training-split loss of the samples
        ev["train_loss_mean"] = achieved_train_loss(sampled["params"], config)
    x_test, y_test = data_lib.load(str(config.zoo.dataset), "test")
    final = zoo.final_indices()
    target = evaluate_networks(zoo.select(final), x_test, y_test)
    atomic.write_json(os.path.join(workdir, "target.json"), target)
    result = {
        "config_name": str(config.name), "size": str(config.size), "workdir": workdir,
        "flow": config.flow.to_dict(), "arch": mlp.format_arch(space.sizes),
        "model": str(config.model.name), "ema_decay": float(config.train.ema_decay),
        "equivariant": bool(run.field.equivariant),
        "num_training_snapshots": int(coords.layers[0][0].shape[0]),
        "model_params": n_params, "train": train_record,
        "sample_seconds": sample_seconds, "samples": ev, "target_final_snapshots": target,
        "sample_options": {k: sampled.get(k) for k in SAMPLE_DEFAULTS},
        "condition": sampled.get("condition_info"),
        "wall_seconds": time.time() - t_start, "hardware": _hardware(),
    }
    atomic.write_json(os.path.join(workdir, "eval.json"), result)
    atomic.write_text(os.path.join(workdir, "report.md"), _report(config, result))
    return result


def total_train_seconds(summary: Any, previous: Mapping[str, Any] | None) -> float | None:
    """Training seconds of the flow over all calls: this call's loop time plus, when it
    resumed from the step a previous ``eval.json`` recorded, that record's total (a
    re-sample of a finished run adds ~0). ``None`` when it resumed from a checkpoint no
    record covers (a run interrupted before its evaluation): the total is unknown."""
    here = float(summary.wall_time_s)
    if int(summary.start_step) == 0:
        return here
    train = (previous or {}).get("train") or {}
    before = recorded_train_seconds(train)
    if before is None or int(train.get("final_step", -1)) != int(summary.start_step):
        return None
    return before + here


def recorded_train_seconds(train: Mapping[str, Any]) -> float | None:
    """A flow's training seconds from its ``eval.json`` ``train`` record: the total over
    all its runs, or the loop time of records written before totals were kept; ``None``
    when unknown."""
    total = train.get("total_wall_time_s", train.get("wall_time_s"))
    return None if total is None else float(total)


def achieved_train_loss(params: mlp.Params, config: ml_collections.ConfigDict) -> float:
    """Mean training-split loss of ``params`` on ``config.zoo.dataset`` (what a
    ``train_loss`` prompt asks for)."""
    x, y = data_lib.load(str(config.zoo.dataset), "train")
    _, loss = evaluation.accuracy_and_loss(params, x, y)
    return float(np.mean(loss))


LOCK_FILE = "requirements-lock.txt"


def _locked_versions(text: str) -> dict[str, str]:
    """``name -> version`` of the ``name==version`` lines of a pip requirements text."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and not line.startswith("-"):
            name, version = line.split("==", 1)
            out[name.strip()] = version.split(";", 1)[0].strip()
    return out


def lock_file_info(root: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The package lock file results were produced with: its name, sha256 and drift.

    Args:
      root: directory holding :data:`LOCK_FILE`; default the source checkout this package
        is imported from (the directory above ``weightflow_jax/``).
    Returns:
      ``{"name": "requirements-lock.txt", "sha256": <hex of its bytes>, "mismatches":
      [...]}``, where ``mismatches`` lists ``"name: locked X, installed Y"`` for every
      locked package whose installed version differs (``installed`` is ``None`` when it
      is missing); an empty list means this environment is the locked one. ``None`` when
      the file is absent or unreadable (e.g. an installed wheel, which carries no lock
      file).
    """
    base = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    try:
        data = (base / LOCK_FILE).read_bytes()
    except OSError:
        return None
    mismatches = []
    for name, locked in sorted(_locked_versions(data.decode("utf-8", "replace")).items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed != locked:
            mismatches.append(f"{name}: locked {locked}, installed {installed}")
    return {"name": LOCK_FILE, "sha256": hashlib.sha256(data).hexdigest(),
            "mismatches": mismatches}


def _hardware() -> dict[str, Any]:
    """Where results were produced; ``lock_file`` names the package lock (see
    :func:`lock_file_info`; ``None`` outside a source checkout)."""
    return {"platform": platform.platform(), "python": platform.python_version(),
            "jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
            "lock_file": lock_file_info()}


def _report(config, r) -> str:
    ev, tg, tr = r["samples"], r["target_final_snapshots"], r["train"]
    lines = [
        f"# {r['config_name']} ({r['size']})", "",
        f"- architecture {r['arch']}, flow `{config.flow.kind}`, coupling "
        f"`{config.flow.coupling}`, aligned {config.flow.align}, canonical mode "
        f"`{config.flow.canonical_mode}`, parameterization `{config.flow.parameterization}`",
        f"- {r['num_training_snapshots']} training snapshots; field `{r['model']}` with "
        f"{r['model_params']} "
        f"parameters; {tr['final_step']} steps at {tr['steps_per_sec']:.2f} steps/s; "
        f"peak RSS {tr['peak_rss_mb']:.0f} MB",
        f"- {ev['num']} samples, {config.sample.steps} Euler steps, guidance "
        f"{config.sample.guidance}, sampling took {r['sample_seconds']:.1f} s", "",
        "| networks | test accuracy | test loss | ensemble accuracy | diversity (JSD) |",
        "|---|---|---|---|---|",
        f"| flow samples | {ev['acc_mean']:.3f} ± {ev['acc_std']:.3f} | "
        f"{ev['loss_mean']:.3f} ± {ev['loss_std']:.3f} | {ev['ensemble_acc']:.3f} | "
        f"{ev['diversity_jsd']:.5f} |",
        f"| target (final snapshot of each zoo run) | {tg['acc_mean']:.3f} ± {tg['acc_std']:.3f}"
        f" | {tg['loss_mean']:.3f} ± {tg['loss_std']:.3f} | {tg['ensemble_acc']:.3f} | "
        f"{tg['diversity_jsd']:.5f} |", "",
        f"Total wall time {r['wall_seconds']:.0f} s on {r['hardware']['backend']} "
        f"({len(r['hardware']['devices'])} device(s)).", "",
    ]
    if str(config.flow.get("pair_alignment", "none")) != "none" and not r["equivariant"]:
        lines += [
            f"Note: pair alignment (`{config.flow.pair_alignment}`) cannot make the "
            f"non-equivariant field `{r['model']}` learn the symmetrised distribution an "
            "equivariant field learns: it only moves each target away from the reference "
            "alignment this field relies on.", ""]
    return "\n".join(lines)


def upgrade_config(cfg: dict) -> tuple[dict, list[str]]:
    """Brings the stored config of a run from before fields-by-name up to date.

    Such runs trained the full-graph RT with flat ``model.{num_layers, width, ...}`` fields,
    no standardization, no EMA and a constant schedule: exactly ``model.name = "rt"`` with
    ``standardize="none"``, ``fourier_features=0``, ``train.ema_decay=0``. Returns the new
    dict and a list of what was filled in.
    """
    cfg = copy.deepcopy(cfg)
    notes = []
    model = cfg.get("model", {})
    if "name" not in model:
        block = models_lib.get_module("rt").default_config().to_dict()
        block.update({"standardize": "none", "fourier_features": 0})
        unknown = sorted(set(model) - set(block))
        if unknown:
            raise ValueError(f"the run's config.model has fields {unknown} that no known field "
                             "uses; it was written by another version of weightflow_jax")
        block.update(model)
        new_model = models_lib.default_model_config("rt").to_dict()
        new_model["rt"] = block
        cfg["model"] = new_model
        notes.append("model.name=rt (full-graph RT, unstandardized; run predates fields by name)")
    flow = cfg.setdefault("flow", {})
    if "pair_alignment" not in flow:
        flow["pair_alignment"] = "none"
        notes.append("flow.pair_alignment='none'")
    for k, v in (("condition", "none"), ("condition_dropout", 0.1)):
        if k not in flow:
            flow[k] = v
            notes.append(f"flow.{k}={v!r}")
    train = cfg.setdefault("train", {})
    for k, v in (("ema_decay", 0.0), ("schedule", "constant"), ("min_lr_ratio", 0.0)):
        if k not in train:
            train[k] = v
            notes.append(f"train.{k}={v!r}")
    sample = cfg.setdefault("sample", {})
    for k, v in list(SAMPLE_DEFAULTS.items()) + [("solver", "euler")]:
        if k not in sample:
            sample[k] = v
            notes.append(f"sample.{k}={v!r}")
    return cfg, notes


def load_flow(workdir: str) -> FlowRun:
    """Reopens a run's config, statistics and latest checkpoint for sampling.

    The field is rebuilt from the run's own ``config.json`` (its name and settings) with the
    standardization statistics stored beside it (``field_stats.npz``); sampling uses the EMA
    parameters when the run kept them. Runs from before fields-by-name load as ``rt``.

    Raises:
      ValueError: the workdir has no ``config.json``, no checkpoint, or (for a field that
        standardizes) no ``field_stats.npz``; or its checkpoint does not match its config.
    """
    cfg_path = os.path.join(workdir, "config.json")
    if not os.path.exists(cfg_path):
        raise ValueError(f"{workdir} holds no trained flow (no config.json); train one with "
                         "python -m experiments.train --config=... --workdir=" + workdir)
    cfg_dict, _ = upgrade_config(train_lib.load_config(workdir))
    config = ml_collections.ConfigDict(cfg_dict)
    space = flow_space(config)
    stats = load_field_stats(workdir)
    mode = models_lib.stats_mode(config.model)
    if stats is None:
        if mode != "none":
            raise ValueError(
                f"{workdir} trained field {str(config.model.name)!r} with {mode!r} "
                f"standardization but has no {STATS_FILE}; the run is incomplete — retrain it")
        stats = models_lib.Standardizer.identity(space.sizes)
    conditioner = load_conditioner(workdir)
    if condition_kind(config) != "none" and conditioner is None:
        raise ValueError(f"{workdir} trained a flow conditioned on "
                         f"{condition_kind(config)!r} but has no {CONDITION_FILE}; the run is "
                         "incomplete — retrain it")
    run = build_flow(config, space, jax.random.key(0), stats, conditioner)
    optimizer = make_optimizer(config)
    state = train_lib.create_train_state(run.variables["params"], optimizer, jax.random.key(0),
                                         ema=ema_decay(config) is not None)
    with train_lib.CheckpointStore(workdir) as store:
        if store.latest_step() is None:
            raise ValueError(f"{workdir} has a config but no checkpoint; the run never saved "
                             "a step — train it first")
        try:
            state = store.restore(state)
        except Exception as err:  # orbax/flax raise many types on a structure mismatch
            raise ValueError(
                f"the checkpoint in {workdir} does not match the field its config.json "
                f"describes (model {str(config.model.name)!r}); it was written by another "
                f"version or config: {type(err).__name__}: {str(err)[:300]}") from err
    run.variables = sampling_variables(state)
    return run
