"""Regenerates the thesis's results tables: one command per table.

    python -m experiments.tables --table=breast_cancer --size=cpu
    python -m experiments.tables --table=mnist --size=cpu
    python -m experiments.tables --table=fashion_transfer --size=cpu
    python -m experiments.tables --table=arch_transfer --size=cpu
    python -m experiments.tables --table=all --size=cpu --rows=... --set=model.compact_rt.width=32

Each writes ``<results_dir>/<table>.md`` (the table next to the thesis's numbers, a goals
section computed from the numbers, the command, overrides, seeds, hardware, commit, date and
wall time), ``<results_dir>/<table>.json`` (every number) and PNG plots in
``<results_dir>/<table>/``.

Rows. A flow row trains (or resumes) ``configs/<task>_<kind>.py`` at ``--size`` with the
row's variant (``plain``: ``flow.align=False, flow.coupling="independent"``; ``aligned``:
``align=True, "independent"``; ``aligned_ot``: ``align=True, "exact"``), then the overrides
(``--steps``, ``--num``, ``--sample_steps``, ``--seed``, then every ``--set``, in that order),
in ``<runs_dir>/<task>_<size>/<kind>_<variant>``. A workdir whose ``eval.json`` was made by
the same config (all fields but logging intervals, see :func:`_reusable`) and the same number
of train steps is reused without training, so rerunning a table is cheap; otherwise
:func:`weightflow_jax.pipeline.train_and_evaluate` runs (it resumes from checkpoints).
The MNIST-based tables share the three MNIST ``aligned_ot`` workdirs. Everything sampled from
a trained flow (Euler-steps sweep, transfer samples), the novelty numbers and the
fine-tuning curves are cached next to their inputs, keyed by what they depend on.

Definitions (also written into every md):

* accuracy / loss: mean ± std (population) over the sampled networks on the test split;
* diversity: mean pairwise Jensen-Shannon divergence of the networks' predictions (nats);
* ensemble: posterior-predictive accuracy of the average prediction of the first ``k``
  networks, ``k = min(64, number of networks)``;
* novelty: median L2 distance of a row's samples (aligned to the zoo's reference network)
  to their nearest aligned training checkpoint, divided by the median distance of a
  checkpoint to its nearest checkpoint of *another* training run ("spacing"); both on the
  same random subset of at most ``MAX_CHECKPOINTS`` checkpoints;
* goals: see :data:`GOAL_DEFINITIONS` and :func:`goals`.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from weightflow_jax import atomic, data as data_lib, evaluation, mlp, pipeline
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax import zoo as zoo_lib

__all__ = [
    "TABLES", "KINDS", "VARIANTS", "THESIS", "THESIS_TOLERANCE", "NOT_COPY_FRACTION",
    "GOAL_DEFINITIONS", "TABLE_GOALS", "table_rows", "select_rows", "parse_set",
    "apply_overrides", "row_config", "row_workdir", "table_overrides", "TABLE_MODEL",
    "run_row", "zoo_context", "build_table",
    "render_markdown", "goals", "plot_table", "write_results", "main",
]

TABLES = ("breast_cancer", "mnist", "fashion_transfer", "arch_transfer")
KINDS = ("euclidean", "normalized", "geometric")
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"flow.align": False, "flow.coupling": "independent"},
    "aligned": {"flow.align": True, "flow.coupling": "independent"},
    "aligned_ot": {"flow.align": True, "flow.coupling": "exact"},
}
_VARIANT_LABEL = {"plain": "", "aligned": " (aligned)", "aligned_ot": " (aligned + OT)"}

TITLES = {
    "breast_cancer": "Breast cancer, MLP 30-16-16-2: flows vs. the thesis",
    "mnist": "MNIST, MLP 784-10-10: flows vs. the thesis",
    "fashion_transfer": "Fashion-MNIST with the MNIST flows (aligned + OT)",
    "arch_transfer": "Architecture transfer: 784-32-10 sampled from the 784-10-10 MNIST flows",
}

# Thesis numbers (/work/shared/REFERENCE.md, "Results to beat"): accuracy / loss as
# (mean, std), diversity (mean pairwise JSD), ensemble = posterior-predictive accuracy.
THESIS: dict[str, dict[str, dict[str, Any]]] = {
    "breast_cancer": {
        "euclidean_plain": {"acc": (0.998, 0.006), "loss": (0.101, 0.050)},
        "euclidean_aligned": {"acc": (0.998, 0.006), "loss": (0.070, 0.040)},
        "euclidean_aligned_ot": {"acc": (0.993, 0.010), "loss": (0.053, 0.028)},
        "normalized_plain": {"acc": (0.993, 0.009), "loss": (0.027, 0.014)},
        "normalized_aligned": {"acc": (0.989, 0.011), "loss": (0.030, 0.015)},
        "normalized_aligned_ot": {"acc": (0.988, 0.018), "loss": (0.044, 0.047)},
        "geometric_plain": {"acc": (0.992, 0.011), "loss": (0.019, 0.009)},
        "geometric_aligned": {"acc": (0.993, 0.001), "loss": (0.018, 0.001)},
        "geometric_aligned_ot": {"acc": (0.991, 0.011), "loss": (0.020, 0.012)},
        "target": {"acc": (0.992, 0.010), "loss": (0.048, 0.032)},
    },
    "mnist": {
        "euclidean_aligned": {"acc": (0.737, 0.085), "loss": (0.814, 0.286),
                              "diversity": 0.00102},
        "euclidean_aligned_ot": {"acc": (0.757, 0.077), "loss": (0.753, 0.245),
                                 "diversity": 0.00085},
        "normalized_aligned": {"acc": (0.753, 0.074), "loss": (1.537, 0.046),
                               "diversity": 0.00086},
        "normalized_aligned_ot": {"acc": (0.706, 0.078), "loss": (1.608, 0.047),
                                  "diversity": 0.00117},
        "geometric_aligned": {"acc": (0.737, 0.070), "loss": (1.457, 0.040),
                              "diversity": 0.00073},
        "geometric_aligned_ot": {"acc": (0.786, 0.064), "loss": (1.443, 0.046),
                                 "diversity": 0.00093, "ensemble": 0.94},
        "target": {"acc": (0.933, 0.009), "loss": (0.231, 0.027), "diversity": 0.00002,
                   "ensemble": 0.96},
    },
    # Guided: lambda 0.1, 512 steps. The thesis gives one unguided number for all flows.
    "fashion_transfer": {
        "euclidean_guided": {"acc": (0.754, None)},
        "normalized_guided": {"acc": (0.724, None)},
        "geometric_guided": {"acc": (0.730, None)},
        "euclidean_unguided": {"acc": (0.080, None), "goal": False},
        "normalized_unguided": {"acc": (0.080, None), "goal": False},
        "geometric_unguided": {"acc": (0.080, None), "goal": False},
        "adam": {"acc": (0.908, None)},
    },
    "arch_transfer": {
        "euclidean_unguided": {"acc": (0.826, None)},
        "euclidean_guided": {"acc": (0.842, None)},
        "geometric_unguided": {"acc": (0.890, None)},
        "geometric_guided": {"acc": (0.886, None)},
        "normalized_unguided": {"acc": (0.203, None)},
    },
}

THESIS_TOLERANCE = 0.01    # "met": our accuracy mean >= thesis accuracy mean - this
MNIST_ACC_GOAL = 0.85      # MNIST geometric aligned + OT: accuracy mean >= this ...
MNIST_LOSS_GOAL = 1.44     # ... and loss mean < this
POSTERIOR_GOAL = 0.94      # MNIST geometric aligned + OT ensemble accuracy >= this
ARCH_GOAL = 0.89           # 784-32-10 from the geometric flow (best of unguided/guided)
NOT_COPY_FRACTION = 0.5    # median nearest distance > this x median spacing

GOAL_DEFINITIONS: dict[str, str] = {
    "thesis": f"match or beat the thesis: 'met' when our accuracy mean >= the thesis's "
              f"accuracy mean - {THESIS_TOLERANCE} (per row with a thesis number; the "
              f"thesis's unguided Fashion-MNIST number is chance level, not a goal)",
    "mnist": f"MNIST geometric (aligned + OT): accuracy mean >= {MNIST_ACC_GOAL} and loss "
             f"mean < {MNIST_LOSS_GOAL}",
    "posterior": f"MNIST posterior predictive: ensemble accuracy of geometric (aligned + OT) "
                 f"samples at the largest ensemble size >= {POSTERIOR_GOAL}",
    "arch": f"784-32-10 transfer: the better of the geometric flow's unguided and guided "
            f"accuracy means >= {ARCH_GOAL}",
    "not_copy": f"samples are not copies: a flow row's median L2 distance to its nearest "
                f"aligned training checkpoint > {NOT_COPY_FRACTION} x the median checkpoint "
                f"spacing (distance of a checkpoint to the nearest checkpoint of another "
                f"training run); counted only for rows that also meet their accuracy goal "
                f"(networks that do not work are trivially far from every checkpoint)",
}
TABLE_GOALS = {"breast_cancer": ("thesis", "not_copy"),
               "mnist": ("thesis", "mnist", "posterior", "not_copy"),
               "fashion_transfer": ("thesis",), "arch_transfer": ("thesis", "arch")}

MAX_CHECKPOINTS = 20_000   # novelty: random subset of the aligned checkpoints
SPACING_QUERIES = 256      # novelty: checkpoints whose spacing is measured
EULER_SWEEP = (8, 32, 128, 512)
GUIDANCE = 0.1
TRANSFER_ARCH = "784-32-10"
# A table's own field at the CPU sizes (``--set model.name=...`` still wins): sampling
# 784-32-10 needs an equivariant field, and neuron_transformer is the one that learned
# MNIST in CPU-minutes (docs/LEARNING.md). Its flows get their own workdirs.
TABLE_MODEL = {"arch_transfer": "neuron_transformer"}
FINETUNE = {"default": dict(epochs=20, networks=16), "cpu": dict(epochs=5, networks=8),
            "test": dict(epochs=1, networks=2)}
FINETUNE_BATCH = 128
FINETUNE_LR = 1e-3

TrainFn = Callable[..., dict]


# ----------------------------------------------------------------------------- rows
def _flow_label(kind: str, variant: str) -> str:
    return kind.capitalize() + _VARIANT_LABEL[variant]


def table_rows(table: str) -> dict[str, str]:
    """Row key -> label of ``table``, in table order (the keys ``--rows`` accepts).

    Raises:
      ValueError: unknown ``table``.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of {', '.join(TABLES)} (or "
                         "'all' on the command line)")
    rows: dict[str, str] = {}
    if table == "breast_cancer":
        for kind in KINDS:
            for variant in VARIANTS:
                rows[f"{kind}_{variant}"] = _flow_label(kind, variant)
        rows["target"] = "Target (final snapshots)"
        rows["noisy"] = "Checkpoints + Gaussian noise at the samples' nearest distance"
        rows["ensemble"] = "Ensemble of trained nets"
    elif table == "mnist":
        for kind in KINDS:
            for variant in ("aligned", "aligned_ot"):
                rows[f"{kind}_{variant}"] = _flow_label(kind, variant)
        rows["target"] = "Target (final snapshots)"
        rows["noisy"] = "Checkpoints + Gaussian noise at the samples' nearest distance"
        rows["steps_sweep"] = "Euler steps vs accuracy (geometric, aligned + OT)"
    elif table == "fashion_transfer":
        for kind in KINDS:
            rows[f"{kind}_unguided"] = f"{kind.capitalize()} (aligned + OT), unguided"
            rows[f"{kind}_guided"] = (f"{kind.capitalize()} (aligned + OT), guided "
                                      f"λ={GUIDANCE:g}")
        rows["adam"] = "Adam-trained (random init)"
        rows["finetune"] = "Fine-tuning: guided geometric samples vs random init"
    else:
        for kind in KINDS:
            rows[f"{kind}_unguided"] = f"{kind.capitalize()} (aligned + OT), unguided"
            rows[f"{kind}_guided"] = (f"{kind.capitalize()} (aligned + OT), guided "
                                      f"λ={GUIDANCE:g} on MNIST")
    return rows


def select_rows(table: str, rows: str | Sequence[str] | None) -> list[str]:
    """The row keys to run: all of ``table``'s for ``None``/empty, else ``rows`` in table order.

    Args:
      rows: comma-separated string or a sequence of keys of :func:`table_rows`.

    Raises:
      ValueError: an unknown key (listing the valid ones), or ``noisy`` without a flow row
        to calibrate its distance.
    """
    valid = table_rows(table)
    if rows is None or (isinstance(rows, str) and not rows.strip()):
        return list(valid)
    keys = [r.strip() for r in (rows.split(",") if isinstance(rows, str) else rows)]
    keys = [k for k in keys if k]
    unknown = [k for k in keys if k not in valid]
    if unknown or not keys:
        raise ValueError(f"--rows {','.join(unknown) or '(empty)'}: unknown row(s) of table "
                         f"{table!r}; valid rows: {', '.join(valid)}")
    chosen = [k for k in valid if k in keys]
    if "noisy" in chosen and not any(_is_flow_key(k) for k in chosen):
        raise ValueError("--rows: 'noisy' calibrates its noise to a flow row's samples; add "
                         "at least one flow row (e.g. geometric_aligned_ot) to --rows")
    return chosen


def _is_flow_key(key: str) -> bool:
    kind, _, variant = key.partition("_")
    return kind in KINDS and variant in VARIANTS


# ------------------------------------------------------------------------ overrides
def parse_set(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``["model.compact_rt.width=32", ...]`` -> ``[("model.compact_rt.width", "32"), ...]``.

    Raises:
      ValueError: an item without ``=`` or with an empty key.
    """
    out = []
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value with a dotted config "
                             "field, e.g. --set=model.compact_rt.width=32")
        out.append((key.strip(), value.strip()))
    return out


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_like(key: str, text: str, current: Any) -> Any:
    """``text`` parsed with the type of the field's current value."""
    import ast

    try:
        if isinstance(current, bool):
            low = text.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError("not a bool")
        if isinstance(current, int):
            v = float(text) if any(c in text for c in ".eE") else int(text)
            if float(v) != int(v):
                raise ValueError("not an integer")
            return int(v)
        if isinstance(current, float):
            return float(text)
        if isinstance(current, str):
            return text
        if isinstance(current, (tuple, list)):
            v = ast.literal_eval(text)
            return tuple(v) if isinstance(v, (tuple, list)) else (v,)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"--set {key}={text}: cannot parse {text!r} as the field's type "
                         f"{type(current).__name__} (current value {current!r}): {e}") from None
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ValueError(f"--set {key}: field has unsupported type {type(current).__name__}")


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, Any]] | Mapping[str, Any]
                    ) -> ml_collections.ConfigDict:
    """A copy of ``config`` with dotted ``key -> value`` overrides applied in order.

    String values are parsed with the type of the existing field (bool: true/false/1/0,
    int, float, str, tuple: a Python literal); other values are assigned as they are.

    Raises:
      ValueError: a field that does not exist (listing its group's fields), a group given
        instead of a field, or a value that does not parse as the field's type.
    """
    cfg = copy.deepcopy(config)
    items = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in items:
        parts = key.split(".")
        node = cfg
        for i, part in enumerate(parts):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                parent = ".".join(parts[:i]) or "the config"
                fields = (sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict)
                          else [])
                raise ValueError(f"--set {key}: {parent} has no field {part!r}; its fields: "
                                 f"{', '.join(fields)}")
            if i < len(parts) - 1:
                node = node[part]
        leaf = parts[-1]
        current = node[leaf]
        if isinstance(current, ml_collections.ConfigDict):
            raise ValueError(f"--set {key}: is a group, not a field; set one of its fields: "
                             f"{', '.join(sorted(current.keys()))}")
        new = _parse_like(key, value, current) if isinstance(value, str) else value
        try:
            node[leaf] = new
        except TypeError as e:
            raise ValueError(f"--set {key}={value!r}: {e}") from None
    return cfg


def _standard_overrides(steps: int = 0, num: int = 0, sample_steps: int = 0,
                        seed: int | None = None,
                        sets: Sequence[str] | Sequence[tuple[str, Any]] = ()
                        ) -> list[tuple[str, Any]]:
    """The flags as one ordered override list (``--set`` last, so it wins)."""
    out: list[tuple[str, Any]] = []
    for name, flag, value in (("train.steps", "--steps", steps), ("sample.num", "--num", num),
                              ("sample.steps", "--sample_steps", sample_steps)):
        if int(value) < 0:
            raise ValueError(f"{flag} must be >= 0 (0 = the config's value), got {value}")
        if int(value):
            out.append((name, int(value)))
    if seed is not None:
        out.append(("seed", int(seed)))
    for item in sets:
        out.extend(parse_set([item]) if isinstance(item, str) else [tuple(item)])
    return out


def row_config(task: str, kind: str, variant: str, size: str = "cpu",
               overrides: Sequence[tuple[str, Any]] | Mapping[str, Any] = ()
               ) -> ml_collections.ConfigDict:
    """``configs/<task>_<kind>.py:get_config(size)`` with the variant, then ``overrides``.

    Raises:
      ValueError: unknown task/kind/variant/size or a bad override.
    """
    if task not in ("breast_cancer", "mnist"):
        raise ValueError(f"unknown task {task!r}; flows exist for breast_cancer and mnist")
    if kind not in KINDS:
        raise ValueError(f"unknown flow kind {kind!r}; choose one of {', '.join(KINDS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    module = importlib.import_module(f"configs.{task}_{kind}")
    config = module.get_config(size)
    config = apply_overrides(config, VARIANTS[variant])
    return apply_overrides(config, overrides)


def row_workdir(runs_dir: str, task: str, size: str, kind: str, variant: str,
                model: str | None = None) -> str:
    """``<runs_dir>/<task>_<size>/<kind>_<variant>`` (shared by all tables of ``task``);
    ``..._<model>`` for a table whose field is not the config's (:data:`TABLE_MODEL`)."""
    return os.path.join(runs_dir, f"{task}_{size}",
                        f"{kind}_{variant}" + (f"_{model}" if model else ""))


def table_overrides(name: str, size: str, overrides: Sequence[tuple[str, Any]]
                    ) -> tuple[list[tuple[str, Any]], str | None]:
    """``overrides`` with table ``name``'s own field first (at the ``cpu``/``test`` sizes,
    unless the overrides name a field), and that field's name (``None``: the config's)."""
    model = TABLE_MODEL.get(name) if size in ("cpu", "test") else None
    if model is None or any(k == "model.name" for k, _ in overrides):
        return list(overrides), None
    return [("model.name", model)] + list(overrides), model


# ------------------------------------------------------------------- flow training
def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _reusable(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """``eval.json`` of ``workdir`` when it was made by ``config`` (else ``None``).

    Reused when: ``eval.json`` reports ``train.final_step == config.train.steps``; the stored
    ``config.json`` equals ``config`` in every field except logging/checkpoint intervals and
    the workdir (``train.DEFAULT_SAFE_FIELDS``); and ``samples.json`` was sampled with the
    config's ``sample.num``/``sample.steps``/``sample.guidance``/``seed``.
    """
    ev = _read_json(os.path.join(workdir, "eval.json"))
    stored = train_lib.load_config(workdir) if os.path.isdir(workdir) else None
    smp = _read_json(os.path.join(workdir, "samples.json"))
    if not ev or stored is None or not smp:
        return None
    try:
        if int(ev["train"]["final_step"]) != int(config.train.steps):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    if train_lib.config_differences(stored, config,
                                    safe_fields=train_lib.DEFAULT_SAFE_FIELDS):
        return None
    sc = config.sample
    if (smp.get("num"), smp.get("steps"), float(smp.get("guidance", -1)), smp.get("seed")) != (
            int(sc.num), int(sc.steps), float(sc.guidance), int(config.seed)):
        return None
    return ev


def run_row(config: ml_collections.ConfigDict, workdir: str, *,
            train_fn: TrainFn | None = None, progress: bool = True) -> dict[str, Any]:
    """Trains + evaluates one flow (or reuses its ``eval.json``, see :func:`_reusable`).

    Args:
      config: a :func:`row_config`.
      workdir: its run directory.
      train_fn: ``(config, workdir, progress=...) -> eval dict`` writing ``eval.json``,
        ``samples.npz``, ``samples.json`` and ``config.json`` there; default
        :func:`weightflow_jax.pipeline.train_and_evaluate`.

    Returns:
      the ``eval.json`` dict plus ``reused`` (bool) and ``row_seconds`` (this call).
    """
    t0 = time.time()
    ev = _reusable(config, workdir)
    reused = ev is not None
    if not reused:
        fn = train_fn or pipeline.train_and_evaluate
        ev = fn(config, workdir, progress=progress)
        ev = _read_json(os.path.join(workdir, "eval.json")) or ev
    ev = dict(ev)
    ev["reused"] = reused
    ev["row_seconds"] = time.time() - t0
    ev["workdir"] = workdir
    return ev


def _flow_version(workdir: str) -> str:
    """Changes whenever the flow in ``workdir`` is retrained (eval.json step + mtime)."""
    path = os.path.join(workdir, "eval.json")
    ev = _read_json(path) or {}
    step = ev.get("train", {}).get("final_step")
    return f"{step}:{os.stat(path).st_mtime_ns}"


def _cached(path: str, key: Mapping[str, Any], compute: Callable[[], dict]) -> tuple[dict,
                                                                                     bool]:
    """``compute()`` cached in the JSON file ``path`` under ``key``; returns (value, hit)."""
    key = json.loads(json.dumps(key, sort_keys=True, default=str))
    got = _read_json(path)
    if isinstance(got, dict) and got.get("cache_key") == key and "value" in got:
        return got["value"], True
    value = compute()
    atomic.write_json(path, {"cache_key": key, "value": value})
    return json.loads(json.dumps(value, default=atomic.json_default)), False


# --------------------------------------------------------------- zoo / novelty context
@dataclasses.dataclass
class ZooContext:
    """The zoo of a task and what novelty needs, computed once per table."""

    zoo: Any
    checkpoints: mlp.Params          # aligned, subsampled: list of (W (M, out, in), b (M, out))
    reference: mlp.Params
    subset: np.ndarray               # (M,) snapshot index of each checkpoint
    spacing: dict[str, np.ndarray]   # checkpoint_spacing output (l2, geodesic, ...)
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int


def zoo_context(config: ml_collections.ConfigDict, *, seed: int = 0,
                max_checkpoints: int = MAX_CHECKPOINTS, spacing_queries: int = SPACING_QUERIES,
                cache_dir: str | None = None, progress: bool = True) -> ZooContext:
    """Builds/reuses ``config.zoo``, aligns it (cached by the zoo), subsamples checkpoints and
    measures their spacing to other runs (cached in ``cache_dir/spacing.json`` as arrays)."""
    path = zoo_lib.build_zoo(config.zoo, progress=progress)
    zoo = zoo_lib.load_zoo(path)
    pre = zoo_lib.preprocess(zoo, "exact", align=True, progress=progress)
    n = zoo.num_snapshots
    rng = np.random.default_rng((int(seed), 11))
    subset = (np.arange(n) if n <= max_checkpoints
              else np.sort(rng.choice(n, int(max_checkpoints), replace=False)))
    ckpts = [(np.asarray(w)[subset], np.asarray(b)[subset]) for w, b in pre.params]
    run_id, step = zoo.run_id[subset], zoo.step[subset]

    def compute():
        sp = evaluation.checkpoint_spacing(ckpts, run_id, order=step, window=None,
                                           num_queries=int(spacing_queries), seed=int(seed))
        return {k: np.asarray(v).tolist() for k, v in sp.items()}

    key = {"zoo": os.path.abspath(path), "fingerprint": zoo.meta.get("config_fingerprint"),
           "created": zoo.meta.get("created"), "n": int(len(subset)), "seed": int(seed),
           "queries": int(spacing_queries), "reference": pre.key}
    if cache_dir:
        value, _ = _cached(os.path.join(cache_dir, "spacing.json"), key, compute)
    else:
        value = compute()
    spacing = {k: np.asarray(v, np.float64) for k, v in value.items()}
    x_test, y_test = data_lib.load(str(config.zoo.dataset), "test")
    return ZooContext(zoo, ckpts, pre.reference, subset, spacing, x_test, y_test, int(seed))


def _novelty(ctx: ZooContext, samples: mlp.Params) -> dict[str, Any]:
    """:func:`evaluation.novelty_summary` of ``samples`` against ``ctx``'s checkpoints."""
    nearest = evaluation.nearest_checkpoint(samples, ctx.checkpoints, ctx.reference,
                                            canonical_mode="exact")
    out = evaluation.novelty_summary(nearest, ctx.spacing)
    out["num_checkpoints"] = int(len(ctx.subset))
    out["num_spacing_queries"] = int(np.asarray(ctx.spacing["l2"]).size)
    return out


def _row_novelty(ctx: ZooContext, workdir: str) -> dict[str, Any] | None:
    """Novelty of ``workdir/samples.npz`` (cached in ``workdir/novelty.json``)."""
    path = os.path.join(workdir, "samples.npz")
    st = os.stat(path)
    key = {"samples": [st.st_mtime_ns, st.st_size], "checkpoints": int(len(ctx.subset)),
           "seed": ctx.seed, "zoo": ctx.zoo.path, "spacing_n": int(ctx.spacing["l2"].size)}

    def compute():
        try:
            return _novelty(ctx, sampling_lib.load_samples_npz(path))
        except ValueError as e:  # e.g. non-finite samples
            return {"error": str(e)}

    value, _ = _cached(os.path.join(workdir, "novelty.json"), key, compute)
    return value


# ------------------------------------------------------------------------ row dicts
def _thesis(table: str, key: str) -> dict[str, Any] | None:
    t = THESIS.get(table, {}).get(key)
    return None if t is None else dict(t)


def _stats_row(table: str, key: str, label: str, ev: Mapping[str, Any], **extra
               ) -> dict[str, Any]:
    """A row from an :func:`pipeline.evaluate_networks` dict."""
    sizes = ev.get("ensemble_sizes") or [ev.get("num", 0)]
    row = {
        "key": key, "label": label, "num": int(ev["num"]),
        "acc_mean": float(ev["acc_mean"]), "acc_std": float(ev["acc_std"]),
        "loss_mean": float(ev["loss_mean"]), "loss_std": float(ev["loss_std"]),
        "diversity": float(ev["diversity_jsd"]), "ensemble_acc": float(ev["ensemble_acc"]),
        "ensemble_size": int(sizes[-1]),
        "ensemble_sizes": [int(s) for s in ev.get("ensemble_sizes", [])],
        "ensemble_curve": [float(a) for a in ev.get("ensemble_curve", [])],
        "acc": [float(a) for a in ev.get("acc", [])],
        "thesis": _thesis(table, key), "novelty": None, "train_steps": None,
        "wall_seconds": None, "row_seconds": None, "workdir": None, "reused": None,
        "note": "",
    }
    row.update(extra)
    return row


def _flow_row(table: str, key: str, label: str, ev: Mapping[str, Any]) -> dict[str, Any]:
    return _stats_row(table, key, label, ev["samples"], train_steps=int(
        ev["train"]["final_step"]), wall_seconds=float(ev.get("wall_seconds", float("nan"))),
        row_seconds=float(ev["row_seconds"]), workdir=ev["workdir"], reused=ev["reused"])


def _print_row(table: str, row: Mapping[str, Any]) -> None:
    how = "reused" if row.get("reused") else "computed"
    secs = row.get("row_seconds")
    print(f"[{table}] {row['key']:<22s} {row['label']}: acc {row['acc_mean']:.3f}"
          f"±{row['acc_std']:.3f} loss {row['loss_mean']:.3f} ({how}"
          + (f", {secs:.1f} s" if secs is not None else "") + ")", flush=True)


# ----------------------------------------------------------------------- table builds
@dataclasses.dataclass
class _Ctx:
    table: str
    size: str
    overrides: list[tuple[str, Any]]
    runs_dir: str
    results_dir: str
    seed: int
    rows: list[str]
    train_fn: TrainFn | None
    progress: bool
    model: str | None = None  # the table's own field (TABLE_MODEL), None: the config's

    def config(self, task: str, kind: str, variant: str) -> ml_collections.ConfigDict:
        return row_config(task, kind, variant, self.size, self.overrides)

    def workdir(self, task: str, kind: str, variant: str) -> str:
        return row_workdir(self.runs_dir, task, self.size, kind, variant, self.model)

    def flow(self, task: str, kind: str, variant: str) -> dict[str, Any]:
        return run_row(self.config(task, kind, variant), self.workdir(task, kind, variant),
                       train_fn=self.train_fn, progress=self.progress)


def _build_flows_table(c: _Ctx, task: str) -> tuple[list[dict], dict]:
    """breast_cancer / mnist: flow rows, target, noisy baseline (+ ensemble / sweep)."""
    rows: list[dict] = []
    extras: dict[str, Any] = {}
    labels = table_rows(c.table)
    base = c.config(task, "geometric", "aligned_ot")
    zctx = zoo_context(base, seed=c.seed, cache_dir=os.path.join(c.runs_dir,
                                                                  f"{task}_{c.size}"),
                       progress=c.progress)
    extras["novelty_settings"] = {
        "metric": "l2 after alignment to the zoo reference",
        "num_checkpoints": int(len(zctx.subset)),
        "num_snapshots": int(zctx.zoo.num_snapshots),
        "spacing_queries": int(zctx.spacing["l2"].size), "seed": c.seed,
        "spacing_l2_median": float(np.median(zctx.spacing["l2"][np.isfinite(
            zctx.spacing["l2"])])) if np.isfinite(zctx.spacing["l2"]).any() else None,
        "zoo": zctx.zoo.path}
    for key in c.rows:
        if not _is_flow_key(key):
            continue
        kind, _, variant = key.partition("_")
        ev = c.flow(task, kind, variant)
        row = _flow_row(c.table, key, labels[key], ev)
        row["novelty"] = _row_novelty(zctx, ev["workdir"])
        row["row_seconds"] = float(ev["row_seconds"])
        rows.append(row)
        _print_row(c.table, row)

    target_ev = None
    if {"target", "ensemble"} & set(c.rows):
        t0 = time.time()
        final = zctx.zoo.final_indices()
        target_ev = pipeline.evaluate_networks(zctx.zoo.select(final), zctx.x_test,
                                               zctx.y_test)
        secs = time.time() - t0
    if "target" in c.rows:
        row = _stats_row(c.table, "target", labels["target"], target_ev, row_seconds=secs,
                         note=f"final snapshot of each of the zoo's {zctx.zoo.num_runs} runs")
        rows.append(row)
        _print_row(c.table, row)
    if "noisy" in c.rows:
        rows.append(_noisy_row(c, zctx, rows, labels["noisy"], int(base.sample.num)))
        _print_row(c.table, rows[-1])
    if "ensemble" in c.rows:
        ens = target_ev["ensemble_acc"]
        k = target_ev["ensemble_sizes"][-1]
        row = _stats_row(c.table, "ensemble", labels["ensemble"], target_ev, row_seconds=secs,
                         note=f"posterior predictive of the {k} final snapshots")
        row.update(acc_mean=float(ens), acc_std=None, loss_mean=None, loss_std=None,
                   diversity=None, acc=[], ensemble_sizes=[], ensemble_curve=[])
        rows.append(row)
        print(f"[{c.table}] ensemble               {row['label']}: acc {ens:.3f}", flush=True)
    if "steps_sweep" in c.rows:
        extras["steps_sweep"] = _steps_sweep(c, task)
    return rows, extras


def _noisy_row(c: _Ctx, zctx: ZooContext, rows: list[dict], label: str, num: int) -> dict:
    """Checkpoints + Gaussian noise matched to the best flow row's median nearest distance."""
    t0 = time.time()
    flows = [r for r in rows if _is_flow_key(r["key"]) and r.get("novelty")
             and "l2_median" in r["novelty"] and r["novelty"]["l2_median"] > 0]
    if not flows:
        raise ValueError("the noisy baseline needs a flow row with finite samples to match "
                         "its nearest-checkpoint distance; none of the selected flow rows has")
    best = max(flows, key=lambda r: r["acc_mean"])
    target = float(best["novelty"]["l2_median"])
    noisy, info = evaluation.noisy_checkpoints(jax.random.key(c.seed), zctx.checkpoints, num,
                                               target)
    ev = pipeline.evaluate_networks(noisy, zctx.x_test, zctx.y_test)
    d = np.asarray(info["distances"], np.float64)
    sp = zctx.spacing["l2"][np.isfinite(zctx.spacing["l2"])]
    nov = {"l2_mean": float(d.mean()), "l2_median": float(np.median(d)),
           "l2_min": float(d.min()), "num_checkpoints": int(len(zctx.subset))}
    if sp.size:
        nov["l2_spacing_median"] = float(np.median(sp))
        nov["l2_spacing_mean"] = float(sp.mean())
    note = (f"σ={info['sigma']:.4g} per weight, calibrated so the mean L2 distance to the "
            f"nearest checkpoint is {info['mean_distance']:.4g} = the median of "
            f"'{best['label']}' (the flow row with the best accuracy)")
    return _stats_row(c.table, "noisy", label, ev, novelty=nov, row_seconds=time.time() - t0,
                      note=note, matched_row=best["key"], sigma=float(info["sigma"]),
                      target_distance=target)


def _sweep_steps(cap: int) -> list[int]:
    steps = sorted({s for s in EULER_SWEEP if s < cap} | {int(cap)})
    return steps


def _cached_samples(c: _Ctx, workdir: str, tag: str, *, num: int, steps: int,
                    arch: str | None = None, task: str | None = None,
                    guidance: float = 0.0, guidance_batch: int = 256, chunk: int = 50
                    ) -> tuple[dict, bool]:
    """:func:`pipeline.sample_and_evaluate` of the flow in ``workdir``, cached under
    ``workdir/table_<tag>.{npz,json}`` (re-sampled when the flow was retrained)."""
    prefix = os.path.join(workdir, f"table_{tag}")
    key = {"flow": _flow_version(workdir), "num": num, "steps": steps, "arch": arch,
           "task": task, "guidance": guidance, "guidance_batch": guidance_batch,
           "seed": c.seed}
    key = json.loads(json.dumps(key))
    got = _read_json(prefix + ".json")
    if got and got.get("cache_key") == key and os.path.exists(prefix + ".npz"):
        return got, True
    run = pipeline.load_flow(workdir)
    res = pipeline.sample_and_evaluate(run, prefix, num=num, steps=steps, seed=c.seed,
                                       arch=arch, task=task, guidance=guidance,
                                       guidance_batch=guidance_batch, chunk=chunk)
    res["cache_key"] = key
    atomic.write_json(prefix + ".json", res)
    return res, False


def _steps_sweep(c: _Ctx, task: str) -> dict[str, Any]:
    """Re-samples the geometric aligned + OT flow with several Euler step counts."""
    ev = c.flow(task, "geometric", "aligned_ot")
    cfg = c.config(task, "geometric", "aligned_ot")
    out = []
    for s in _sweep_steps(int(cfg.sample.steps)):
        t0 = time.time()
        if s == int(cfg.sample.steps):  # the row's own samples (run_row checked the config)
            res, hit = {"samples": ev["samples"], "sample_seconds": ev.get(
                "sample_seconds", float("nan"))}, True
        else:
            res, hit = _cached_samples(c, ev["workdir"], f"sweep_s{s}",
                                       num=int(cfg.sample.num), steps=s,
                                       chunk=int(cfg.sample.chunk))
        sm = res["samples"]
        out.append({"steps": s, "acc_mean": sm["acc_mean"], "acc_std": sm["acc_std"],
                    "loss_mean": sm["loss_mean"], "loss_std": sm["loss_std"],
                    "ensemble_acc": sm["ensemble_acc"], "num": sm["num"],
                    "sample_seconds": res["sample_seconds"], "reused": hit})
        print(f"[{c.table}] steps_sweep {s:>4d} Euler steps: acc {sm['acc_mean']:.3f}"
              f"±{sm['acc_std']:.3f} ({'reused' if hit else 'sampled'}, "
              f"{time.time() - t0:.1f} s)", flush=True)
    return {"workdir": ev["workdir"], "train_steps": int(ev["train"]["final_step"]),
            "points": out, "cap": int(cfg.sample.steps)}


def _transfer_row(c: _Ctx, key: str, label: str, *, arch: str | None, task: str
                  ) -> tuple[dict, str]:
    kind, _, mode = key.partition("_")
    t0 = time.time()
    ev = c.flow("mnist", kind, "aligned_ot")
    cfg = c.config("mnist", kind, "aligned_ot")
    guidance = GUIDANCE if mode == "guided" else 0.0
    tag = f"{task}_{(arch or 'same').replace('-', 'x')}_g{guidance:g}_s{cfg.sample.steps}"
    res, hit = _cached_samples(c, ev["workdir"], tag, num=int(cfg.sample.num),
                               steps=int(cfg.sample.steps), arch=arch, task=task,
                               guidance=guidance, guidance_batch=int(cfg.sample.guidance_batch),
                               chunk=int(cfg.sample.chunk))
    row = _stats_row(c.table, key, label, res["samples"],
                     train_steps=int(ev["train"]["final_step"]),
                     wall_seconds=float(res["sample_seconds"]), row_seconds=time.time() - t0,
                     workdir=ev["workdir"], reused=bool(ev["reused"] and hit),
                     note=f"{res['arch']} on {task}, {res['steps']} Euler steps, guidance "
                          f"{guidance:g}")
    return row, os.path.join(ev["workdir"], f"table_{tag}.npz")


def _build_fashion(c: _Ctx) -> tuple[list[dict], dict]:
    labels = table_rows(c.table)
    rows, extras = [], {}
    for key in c.rows:
        if key.endswith("_guided") or key.endswith("_unguided"):
            row, _ = _transfer_row(c, key, labels[key], arch=None, task="fashion_mnist")
            rows.append(row)
            _print_row(c.table, row)
    if {"adam", "finetune"} & set(c.rows):
        ft = _finetune(c)
        extras["finetune"] = ft
        if "adam" in c.rows:
            r = ft["curves"]["random init"]
            acc = np.asarray(r["test_accuracy"])[:, -1]
            loss = np.asarray(r["test_loss"])[:, -1]
            ev = {"num": len(acc), "acc_mean": acc.mean(), "acc_std": acc.std(),
                  "loss_mean": loss.mean(), "loss_std": loss.std(),
                  "diversity_jsd": float("nan"), "ensemble_acc": float("nan"),
                  "ensemble_sizes": [], "acc": acc.tolist()}
            row = _stats_row(c.table, "adam", labels["adam"], ev,
                             row_seconds=ft["seconds"], reused=ft["reused"],
                             note=f"N(0, 0.1²) init, {ft['epochs']} epoch(s) Adam lr "
                                  f"{FINETUNE_LR:g}, batch {FINETUNE_BATCH}")
            row.update(diversity=None, ensemble_acc=None)
            rows.append(row)
            _print_row(c.table, row)
    return rows, extras


def _finetune(c: _Ctx) -> dict[str, Any]:
    """Fine-tuning curves on Fashion-MNIST: guided geometric samples vs random init."""
    t0 = time.time()
    settings = FINETUNE[c.size]
    _, npz = _transfer_row(c, "geometric_guided", "geometric guided", arch=None,
                           task="fashion_mnist")
    sampled = sampling_lib.load_samples_npz(npz)
    n = min(int(settings["networks"]), int(sampled[0][0].shape[0]))
    sampled = [(w[:n], b[:n]) for w, b in sampled]
    st = os.stat(npz)
    key = {"samples": [npz, st.st_mtime_ns, st.st_size], "n": n, "seed": c.seed,
           "epochs": settings["epochs"], "batch": FINETUNE_BATCH, "lr": FINETUNE_LR}
    cache = os.path.join(c.runs_dir, f"mnist_{c.size}", "fashion_finetune.json")

    def compute():
        x_tr, y_tr = data_lib.load("fashion_mnist", "train")
        x_te, y_te = data_lib.load("fashion_mnist", "test")
        sizes = mlp.layer_sizes(sampled)
        inits = {"guided geometric samples": sampled,
                 "random init": evaluation.random_init(jax.random.key(c.seed + 1), sizes, n,
                                                       w_std=0.1)}
        curves = evaluation.compare_inits(inits, x_tr, y_tr, x_te, y_te,
                                          key=jax.random.key(c.seed), epochs=settings["epochs"],
                                          batch_size=FINETUNE_BATCH, optimizer="adam",
                                          learning_rate=FINETUNE_LR)
        return {name: {k: np.asarray(v).tolist() for k, v in cv.items()}
                for name, cv in curves.items()}

    curves, hit = _cached(cache, key, compute)
    print(f"[{c.table}] finetune ({'reused' if hit else 'computed'}, {time.time() - t0:.1f} s)",
          flush=True)
    return {"curves": curves, "epochs": int(settings["epochs"]), "networks": n,
            "seconds": time.time() - t0, "cache": cache, "reused": hit}


def _build_arch(c: _Ctx) -> tuple[list[dict], dict]:
    labels = table_rows(c.table)
    rows = []
    for key in c.rows:
        row, _ = _transfer_row(c, key, labels[key], arch=TRANSFER_ARCH, task="mnist")
        rows.append(row)
        _print_row(c.table, row)
    return rows, {}


# -------------------------------------------------------------------------- header
def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _command(argv: Sequence[str] | None) -> str:
    argv = list(sys.argv if argv is None else argv)
    if argv and argv[0].endswith(os.path.join("experiments", "tables.py")):
        return shlex.join(["python", "-m", "experiments.tables"] + argv[1:])
    return shlex.join(argv)


def build_table(name: str, *, size: str = "cpu", runs_dir: str = "runs/tables",
                results_dir: str = "results", steps: int = 0, num: int = 0,
                sample_steps: int = 0, sets: Sequence[str] = (),
                rows: str | Sequence[str] | None = None, seed: int = 0,
                argv: Sequence[str] | None = None, train_fn: TrainFn | None = None,
                progress: bool = True, write: bool = True) -> dict[str, Any]:
    """Runs (or reuses) every selected row of table ``name`` and writes its results.

    Args:
      name: one of :data:`TABLES`.
      size: config size (``default`` | ``cpu`` | ``test``).
      runs_dir: root of the flows' workdirs (see :func:`row_workdir`).
      results_dir: where ``<name>.md``, ``<name>.json`` and ``<name>/*.png`` go.
      steps, num, sample_steps: ``train.steps``, ``sample.num``, ``sample.steps``
        overrides (0 = the config's).
      sets: ``"key=value"`` overrides of any config field (parsed by the field's type).
      rows: row keys to run (:func:`table_rows`); ``None`` = all.
      seed: ``config.seed`` (flow init and batches), sampling seed and novelty subset seed.
      argv: the command line for the header (default ``sys.argv``).
      train_fn: replaces :func:`pipeline.train_and_evaluate` (tests).
      write: write the md/json/plots.

    Returns:
      the table dict (also ``<results_dir>/<name>.json``).

    Raises:
      ValueError: unknown table, size, row or override, before anything runs.
    """
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; choose one of {', '.join(TABLES)} or 'all'")
    if size not in ("default", "cpu", "test"):
        raise ValueError(f"unknown size {size!r}; choose one of default, cpu, test")
    selected = select_rows(name, rows)
    overrides, model = table_overrides(
        name, size, _standard_overrides(steps, num, sample_steps, seed, sets))
    task = "breast_cancer" if name == "breast_cancer" else "mnist"
    row_config(task, "geometric", "aligned_ot", size, overrides)  # validates overrides now
    t0 = time.time()
    c = _Ctx(name, size, overrides, runs_dir, results_dir, int(seed), selected, train_fn,
             progress, model)
    print(f"[{name}] size {size}, rows {', '.join(selected)}", flush=True)
    if name in ("breast_cancer", "mnist"):
        table_rows_, extras = _build_flows_table(c, task)
    elif name == "fashion_transfer":
        table_rows_, extras = _build_fashion(c)
    else:
        table_rows_, extras = _build_arch(c)
    hw = pipeline._hardware()
    table = {
        "table": name, "title": TITLES[name], "size": size, "argv": list(
            sys.argv if argv is None else argv), "command": _command(argv),
        "overrides": [[k, v] for k, v in overrides], "seed": int(seed),
        "seeds": {"config.seed (flow init, batches)": int(seed), "sampling": int(seed),
                  "novelty checkpoint subset / noise baseline": int(seed)},
        "hardware": hw, "git_commit": _git_commit(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs_dir": runs_dir, "results_dir": results_dir, "selected_rows": selected,
        "rows": table_rows_, "extras": extras, "thesis_tolerance": THESIS_TOLERANCE,
        "goal_definitions": [GOAL_DEFINITIONS[g] for g in TABLE_GOALS[name]],
    }
    table["goals"] = goals(table)
    table["plots"] = plot_table(table) if write else []
    table["wall_seconds"] = time.time() - t0
    if write:
        write_results(table)
    print(f"[{name}] done in {table['wall_seconds']:.1f} s", flush=True)
    return table


# --------------------------------------------------------------------------- goals
def _row(table: Mapping[str, Any], key: str) -> dict | None:
    return next((r for r in table["rows"] if r["key"] == key), None)


def _goal(goal: str, value: Any, target: str, ok: bool | None) -> dict[str, Any]:
    status = "not run" if ok is None else ("met" if ok else "missed")
    return {"goal": goal, "value": value, "target": target, "status": status}


def goals(table: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The goals of a table computed from its numbers (:data:`GOAL_DEFINITIONS`).

    Args:
      table: a dict with ``table`` (name) and ``rows`` (each with ``key``, ``label``,
        ``acc_mean``, optionally ``loss_mean``, ``ensemble_acc``, ``thesis``, ``novelty``).

    Returns:
      list of ``{"goal", "value", "target", "status"}`` with status ``met``, ``missed`` or
      ``not run`` (the rows a goal needs were not in the table).
    """
    name = table["table"]
    out: list[dict[str, Any]] = []
    for r in table["rows"]:
        th = r.get("thesis") or {}
        acc = th.get("acc")
        if acc is None or th.get("goal") is False or r.get("acc_mean") is None:
            continue
        need = float(acc[0]) - THESIS_TOLERANCE
        ok = bool(np.isfinite(r["acc_mean"]) and r["acc_mean"] >= need)
        out.append(_goal(f"match or beat the thesis: {r['label']}", r["acc_mean"],
                         f"accuracy ≥ {acc[0]:.3f} - {THESIS_TOLERANCE} = {need:.3f}", ok))
    if name == "mnist":
        g = _row(table, "geometric_aligned_ot")
        ok = None if g is None else bool(g["acc_mean"] >= MNIST_ACC_GOAL
                                         and g["loss_mean"] < MNIST_LOSS_GOAL)
        val = None if g is None else f"acc {g['acc_mean']:.3f}, loss {g['loss_mean']:.3f}"
        out.append(_goal("MNIST geometric (aligned + OT) accuracy and loss", val,
                         f"accuracy ≥ {MNIST_ACC_GOAL} and loss < {MNIST_LOSS_GOAL}", ok))
        ok = None if g is None else bool(g["ensemble_acc"] >= POSTERIOR_GOAL)
        out.append(_goal("MNIST posterior predictive (geometric, aligned + OT)",
                         None if g is None else g["ensemble_acc"],
                         f"ensemble accuracy ≥ {POSTERIOR_GOAL}", ok))
    if name == "arch_transfer":
        geo = [r for r in (_row(table, "geometric_unguided"), _row(table, "geometric_guided"))
               if r is not None]
        best = max((r["acc_mean"] for r in geo), default=None)
        out.append(_goal(f"{TRANSFER_ARCH} transfer (geometric, best of unguided/guided)", best,
                         f"accuracy ≥ {ARCH_GOAL}",
                         None if best is None else bool(best >= ARCH_GOAL)))
    for r in table["rows"]:
        nov = r.get("novelty")
        if not _is_flow_key(r["key"]) or not nov:
            continue
        med, sp = nov.get("l2_median"), nov.get("l2_spacing_median")
        if med is None or sp is None:
            out.append(_goal(f"samples are not copies: {r['label']}", nov.get("error"),
                             f"median nearest > {NOT_COPY_FRACTION} x median spacing", None))
            continue
        g = _goal(f"samples are not copies: {r['label']}", med / sp,
                  f"median nearest / median spacing > {NOT_COPY_FRACTION}",
                  bool(med > NOT_COPY_FRACTION * sp))
        th_acc = (r.get("thesis") or {}).get("acc")
        if (g["status"] == "met" and th_acc is not None
                and r["acc_mean"] < float(th_acc[0]) - THESIS_TOLERANCE):
            # Far from every checkpoint *and* far from working: novelty says nothing.
            g["status"] = "not meaningful (row misses its accuracy goal)"
        out.append(g)
    return out


# --------------------------------------------------------------------- rendering
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
        "accuracy": _ms(r.get("acc_mean"), r.get("acc_std")),
        "thesis accuracy": "–" if acc is None else _ms(acc[0], acc[1]),
        "loss": _ms(r.get("loss_mean"), r.get("loss_std")),
        "thesis loss": "–" if loss is None else _ms(loss[0], loss[1]),
        "diversity (JSD)": _f(r.get("diversity"), 5),
        "thesis diversity": _f(th.get("diversity"), 5),
        "ensemble accuracy (k)": ("–" if ens is None or not np.isfinite(float(ens))
                                  else f"{float(ens):.3f} (k={r.get('ensemble_size')})"),
        "thesis ensemble": _f(th.get("ensemble")),
        "nearest L2 / spacing": _novelty_cell(r.get("novelty")),
        "train steps": "–" if r.get("train_steps") is None else str(int(r["train_steps"])),
        "wall s": _f(r.get("wall_seconds"), 0),
    }


def _results_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [_row_cells(r) for r in rows]
    columns = list(cells[0]) if cells else []
    keep = [col for col in columns if col in ("accuracy",)
            or any(cell[col] != "–" for cell in cells)]
    body = [[r["label"]] + [cell[col] for col in keep] for r, cell in zip(rows, cells)]
    return evaluation.markdown_table(["method"] + keep, body)


def _lock_line(lock: Mapping[str, Any] | None) -> str:
    """How a results file names the package lock (``pipeline.lock_file_info``)."""
    if not lock:
        return "no lock file found (not run from a source checkout)"
    drift = lock.get("mismatches") or []
    state = ("installed versions match it" if not drift else
             f"{len(drift)} installed version(s) differ: {'; '.join(drift[:5])}")
    return f"`{lock['name']}` (sha256 `{lock['sha256']}`), {state}"


def render_markdown(table: Mapping[str, Any]) -> str:
    """The ``results/<table>.md`` text of a table dict (see :func:`build_table`)."""
    hw = table["hardware"]
    ov = table["overrides"]
    lines = [
        f"# {table['title']} (size `{table['size']}`)", "",
        f"- command: `{table['command']}`",
        f"- size: `{table['size']}`; rows: {', '.join(table['selected_rows'])}",
        "- overrides: " + (", ".join(f"`{k}={v}`" for k, v in ov) if ov else "none"),
        "- seeds: " + ", ".join(f"{k} = {v}" for k, v in table["seeds"].items()),
        f"- hardware: backend `{hw.get('backend')}`, {len(hw.get('devices', []))} device(s) "
        f"{', '.join(hw.get('devices', []))}; {hw.get('cpu_count')} CPUs; "
        f"{hw.get('platform')}; Python {hw.get('python')}, JAX {hw.get('jax')}",
        "- packages: " + _lock_line(hw.get("lock_file")),
        f"- git commit: `{table.get('git_commit') or 'unknown'}`",
        f"- date: {table['date']}; total wall time of this command: "
        f"{table.get('wall_seconds', float('nan')):.0f} s",
        f"- runs dir: `{table['runs_dir']}`; all numbers: `{table['table']}.json`",
    ]
    if table["size"] != "default":
        lines.append(
            f"- budget: size `{table['size']}` trains far less than the thesis (100k-250k steps "
            "of a 5-layer transformer on GPUs); what it can show and what was tried: "
            "[README.md](README.md). Thesis-sized: `python -m experiments.tables "
            f"--table={table['table']} --size=default` on an accelerator.")
    lines += [
        "",
        "## Results", "",
        "Accuracy / loss: mean ± std over the networks of a row on the test split. "
        "Diversity: mean pairwise Jensen-Shannon divergence of predictions (nats). Ensemble: "
        "accuracy of the averaged predictions of the first k networks. Nearest L2 / spacing: "
        "median L2 distance of the samples (aligned to the zoo's reference) to the nearest "
        "aligned training checkpoint / median distance of a checkpoint to the nearest "
        "checkpoint of another run. Train steps / wall s: flow training steps and the wall "
        "time of its train+sample+evaluate run (transfer rows: sampling time). "
        "Thesis columns: Erdogan 2025 (arXiv 2504.03710).", "",
        _results_table(table["rows"]),
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
    if "steps_sweep" in ex:
        sw = ex["steps_sweep"]
        body = [[p["steps"], _ms(p["acc_mean"], p["acc_std"]),
                 _ms(p["loss_mean"], p["loss_std"]), _f(p["ensemble_acc"]),
                 _f(p["sample_seconds"], 1)] for p in sw["points"]]
        lines += ["## Euler steps vs accuracy (geometric, aligned + OT)", "",
                  f"The same trained flow (`{sw['workdir']}`, {sw['train_steps']} steps) "
                  f"re-sampled; step counts capped by the config's {sw['cap']}.", "",
                  evaluation.markdown_table(["Euler steps", "accuracy", "loss",
                                             "ensemble accuracy", "sampling s"], body)]
    if "finetune" in ex:
        ft = ex["finetune"]
        names = list(ft["curves"])
        epochs = ft["curves"][names[0]]["epoch"]
        body = []
        for i, e in enumerate(epochs):
            cells = []
            for n in names:
                a = np.asarray(ft["curves"][n]["test_accuracy"])[:, i]
                cells.append(_ms(a.mean(), a.std()))
            body.append([int(e)] + cells)
        lines += ["## Fine-tuning on Fashion-MNIST", "",
                  f"{ft['networks']} networks per initialization, Adam lr {FINETUNE_LR:g}, "
                  f"batch {FINETUNE_BATCH}, same minibatch order; test accuracy mean ± std "
                  "after each epoch (epoch 0 = the initialization).", "",
                  evaluation.markdown_table(["epoch"] + names, body)]
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


_SHORT = {"target": "target", "noisy": "checkpoints + noise", "adam": "Adam-trained"}


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
            if th is not None:
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
    if "finetune" in ex:
        paths.append(evaluation.plot_finetune_curves(
            os.path.join(out_dir, "finetune_curves.png"), ex["finetune"]["curves"],
            title="Fine-tuning on Fashion-MNIST"))
    return paths


def write_results(table: Mapping[str, Any]) -> tuple[str, str]:
    """Writes ``<results_dir>/<table>.md`` and ``.json`` atomically; returns their paths."""
    base = os.path.join(table["results_dir"], table["table"])
    atomic.write_text(base + ".md", render_markdown(table))
    atomic.write_json(base + ".json", table)
    return base + ".md", base + ".json"


# ---------------------------------------------------------------------------- main
def main(argv: Sequence[str]) -> None:
    """absl entry point; see the module docstring for the flags."""
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    names = list(TABLES) if f.table == "all" else [f.table]
    if f.table == "all" and f.rows:
        raise ValueError("--rows selects rows of one table; it cannot be combined with "
                         "--table=all (run the tables one by one)")
    for name in names:
        build_table(name, size=f.size, runs_dir=f.runs_dir, results_dir=f.results_dir,
                    steps=f.steps, num=f.num, sample_steps=f.sample_steps, sets=f.set,
                    rows=f.rows or None, seed=f.seed, progress=f.progress)


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("table", None, f"One of {', '.join(TABLES)} or 'all'.")
    flags.DEFINE_enum("size", "cpu", ["default", "cpu", "test"], "Config size.")
    flags.DEFINE_string("runs_dir", "runs/tables", "Root of the flows' workdirs.")
    flags.DEFINE_string("results_dir", "results", "Where <table>.md/.json and plots go.")
    flags.DEFINE_integer("steps", 0, "train.steps override (0 = the config's).")
    flags.DEFINE_integer("num", 0, "sample.num override: networks per row (0 = config's).")
    flags.DEFINE_integer("sample_steps", 0, "sample.steps override: Euler steps (0 = config's).")
    flags.DEFINE_multi_string("set", [], "key=value config override, e.g. model.compact_rt.width=32.")
    flags.DEFINE_string("rows", "", "Comma list of row keys to run (default: all).")
    flags.DEFINE_integer("seed", 0, "config.seed, sampling and novelty seed.")
    flags.DEFINE_bool("progress", True, "Show progress bars.")
    flags.mark_flags_as_required(["table"])


if __name__ == "__main__":
    from absl import app, logging

    _define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
