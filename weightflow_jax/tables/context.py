"""What running a table needs: configs and workdirs of its flows, flow training/reuse,
JSON caches, and the zoo context that novelty is measured against.

State and I/O live here (run directories, caches); the numbers come from
:mod:`weightflow_jax.pipeline` and :mod:`weightflow_jax.evaluation`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import ml_collections
import numpy as np

from weightflow_jax import atomic, data as data_lib, evaluation, mlp, pipeline
from weightflow_jax.atomic import read_json
from weightflow_jax import sampling as sampling_lib
from weightflow_jax import train as train_lib
from weightflow_jax import zoo as zoo_lib
from weightflow_jax.tables import spec as spec_lib
from weightflow_jax.tables.overrides import Overrides, apply_overrides

__all__ = ["TrainFn", "MAX_CHECKPOINTS", "SPACING_QUERIES", "read_json", "cached",
           "zoo_preset_overrides",
           "row_config", "row_workdir", "reusable", "run_flow", "flow_version", "ZooContext",
           "zoo_context", "novelty", "row_novelty", "Context"]

TrainFn = Callable[..., dict]
MAX_CHECKPOINTS = 20_000   # novelty: random subset of the aligned checkpoints
SPACING_QUERIES = 256      # novelty: checkpoints whose spacing is measured
# Version of what a row's novelty.json holds; a cache without it is recomputed (2: the
# zoo runs the samples land near, evaluation.run_coverage; 3: l2 up to permutation, each
# run aligned on its own).
NOVELTY_FIELDS = 3


def cached(path: str, key: Mapping[str, Any], compute: Callable[[], dict]) -> tuple[dict, bool]:
    """``compute()`` cached in the JSON file ``path`` under ``key``; returns (value, hit)."""
    key = json.loads(json.dumps(key, sort_keys=True, default=str))
    got = read_json(path)
    if isinstance(got, dict) and got.get("cache_key") == key and "value" in got:
        return got["value"], True
    value = compute()
    atomic.write_json(path, {"cache_key": key, "value": value})
    return json.loads(json.dumps(value, default=atomic.json_default)), False


def zoo_preset_overrides(task: str, preset: str | None) -> list[tuple[str, Any]]:
    """Every field of zoo preset ``preset`` of ``task`` as ``("zoo.<field>", value)``
    overrides (``[]`` for ``None``)."""
    if not preset:
        return []
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for k, v in node.items():
            if isinstance(v, Mapping):
                walk(f"{prefix}{k}.", v)
            else:
                out.append((f"{prefix}{k}", v))

    walk("zoo.", zoo_lib.zoo_config(task, preset).to_dict())
    return out


def _base_config(task: str, kind: str, size: str) -> ml_collections.ConfigDict:
    return importlib.import_module(f"configs.{task}_{kind}").get_config(size)


def row_config(task: str, kind: str, variant: str, size: str = "cpu",
               overrides: Overrides | Mapping[str, Any] = ()) -> ml_collections.ConfigDict:
    """``configs/<task>_<kind>.py:get_config(size)`` with the variant, then ``overrides``.

    Raises:
      ValueError: unknown task/kind/variant/size or a bad override.
    """
    spec_lib.FlowSpec(task, kind, variant)  # validates the names
    config = apply_overrides(_base_config(task, kind, size), spec_lib.VARIANTS[variant])
    return apply_overrides(config, overrides)


def row_workdir(runs_dir: str, group: str, size: str, kind: str, variant: str,
                model: str | None = None) -> str:
    """``<runs_dir>/<group>_<size>/<kind>_<variant>``, with ``_<model>`` appended when the
    flow's field is not its config file's (so flows of different fields never share a
    directory, and tables that train the same flow share it)."""
    return os.path.join(runs_dir, f"{group}_{size}",
                        f"{kind}_{variant}" + (f"_{model}" if model else ""))


def reusable(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """``eval.json`` of ``workdir`` when it was made by ``config`` (else ``None``).

    Reused when: ``eval.json`` reports ``train.final_step == config.train.steps``; the stored
    ``config.json`` equals ``config`` in every field except logging/checkpoint intervals and
    the workdir (``train.DEFAULT_SAFE_FIELDS``); and ``samples.json`` was sampled with the
    config's ``sample.num``/``sample.steps``/``sample.guidance``/``seed``/``solver`` (and a
    conditioned flow's prompt and weight).
    """
    ev = read_json(os.path.join(workdir, "eval.json"))
    stored = train_lib.load_config(workdir) if os.path.isdir(workdir) else None
    smp = read_json(os.path.join(workdir, "samples.json"))
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
    if smp.get("solver", "euler") != str(sc.get("solver", "euler")):
        return None
    if smp.get("condition_info") and (
            str(smp.get("condition")) != str(sc.get("condition", "final"))
            or float(smp.get("condition_weight", 1.0)) != float(sc.get("condition_weight", 1.0))):
        return None
    return ev


def run_flow(config: ml_collections.ConfigDict, workdir: str, *,
             train_fn: TrainFn | None = None, progress: bool = True) -> dict[str, Any]:
    """Trains + evaluates one flow, or reuses its ``eval.json`` (:func:`reusable`).

    An interrupted training resumes from the workdir's checkpoints.

    Args:
      train_fn: ``(config, workdir, progress=...) -> eval dict`` writing ``eval.json``,
        ``samples.npz``, ``samples.json`` and ``config.json`` there; default
        :func:`weightflow_jax.pipeline.train_and_evaluate`.

    Returns:
      the ``eval.json`` dict plus ``reused`` (bool), ``row_seconds`` (this call) and
      ``workdir``.
    """
    t0 = time.time()
    ev = reusable(config, workdir)
    reused = ev is not None
    if not reused:
        fn = train_fn or pipeline.train_and_evaluate
        ev = fn(config, workdir, progress=progress)
        ev = read_json(os.path.join(workdir, "eval.json")) or ev
    ev = dict(ev)
    ev.update(reused=reused, row_seconds=time.time() - t0, workdir=workdir)
    return ev


def flow_version(workdir: str) -> str:
    """Changes whenever the flow in ``workdir`` is retrained, and only then: the final step
    recorded in eval.json and the modification time of that step's checkpoint (written once,
    by training; re-sampling a finished flow rewrites eval.json but not the checkpoint).
    Without that checkpoint (pruned), eval.json's modification time stands in."""
    path = os.path.join(workdir, "eval.json")
    ev = read_json(path) or {}
    step = ev.get("train", {}).get("final_step")
    ckpt = os.path.join(workdir, "checkpoints", str(step))
    stamp = os.stat(ckpt if os.path.isdir(ckpt) else path).st_mtime_ns
    return f"{step}:{stamp}"


@dataclasses.dataclass
class ZooContext:
    """The zoo of a table and what novelty needs, computed once per table."""

    zoo: Any
    checkpoints: mlp.Params          # aligned, subsampled: list of (W (M, out, in), b (M, out))
    reference: mlp.Params
    subset: np.ndarray               # (M,) snapshot index of each checkpoint
    spacing: dict[str, np.ndarray]   # checkpoint_spacing output (l2, geodesic, ...)
    x_test: np.ndarray
    y_test: np.ndarray
    seed: int

    def settings(self) -> dict[str, Any]:
        sp = self.spacing["l2"][np.isfinite(self.spacing["l2"])]
        return {"metric": "l2 after alignment to the zoo reference",
                "num_checkpoints": int(len(self.subset)),
                "num_snapshots": int(self.zoo.num_snapshots),
                "spacing_queries": int(self.spacing["l2"].size), "seed": self.seed,
                "spacing_l2_median": float(np.median(sp)) if sp.size else None,
                "zoo": self.zoo.path}


def zoo_context(config: ml_collections.ConfigDict, *, seed: int = 0,
                max_checkpoints: int = MAX_CHECKPOINTS, spacing_queries: int = SPACING_QUERIES,
                cache_dir: str | None = None, progress: bool = True) -> ZooContext:
    """Builds/reuses ``config.zoo``, aligns it (cached by the zoo), subsamples checkpoints and
    measures their spacing to other runs (cached in ``cache_dir/spacing.json``)."""
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
                                           num_queries=int(spacing_queries), seed=int(seed),
                                           pairwise=True)
        return {k: np.asarray(v).tolist() for k, v in sp.items()}

    key = {"zoo": os.path.abspath(path), "fingerprint": zoo.meta.get("config_fingerprint"),
           "created": zoo.meta.get("created"), "n": int(len(subset)), "seed": int(seed),
           "queries": int(spacing_queries), "reference": pre.key, "pairwise": True}
    if cache_dir:
        value, _ = cached(os.path.join(cache_dir, "spacing.json"), key, compute)
    else:
        value = compute()
    spacing = {k: np.asarray(v, np.float64) for k, v in value.items()}
    x_test, y_test = data_lib.load(str(config.zoo.dataset), "test")
    return ZooContext(zoo, ckpts, pre.reference, subset, spacing, x_test, y_test, int(seed))


def novelty(ctx: ZooContext, samples: mlp.Params) -> dict[str, Any]:
    """Nearest checkpoint of each of ``samples`` up to permutation (each run aligned on its
    own), against ``ctx``'s spacing (measured the same way), and the zoo runs those
    checkpoints belong to (:func:`evaluation.run_coverage`)."""
    run_id = np.asarray(ctx.zoo.run_id)[ctx.subset]
    nearest = evaluation.nearest_checkpoint(samples, ctx.checkpoints, ctx.reference,
                                            canonical_mode="exact", run_id=run_id)
    out = evaluation.novelty_summary(nearest, ctx.spacing)
    out.update(evaluation.run_coverage(nearest["l2_index"], run_id))
    out["num_checkpoints"] = int(len(ctx.subset))
    out["num_spacing_queries"] = int(np.asarray(ctx.spacing["l2"]).size)
    return out


def row_novelty(ctx: ZooContext, workdir: str) -> dict[str, Any]:
    """Novelty of ``workdir/samples.npz`` (cached in ``workdir/novelty.json``)."""
    path = os.path.join(workdir, "samples.npz")
    st = os.stat(path)
    key = {"samples": [st.st_mtime_ns, st.st_size], "checkpoints": int(len(ctx.subset)),
           "seed": ctx.seed, "zoo": ctx.zoo.path, "spacing_n": int(ctx.spacing["l2"].size),
           "fields": NOVELTY_FIELDS}

    def compute():
        try:
            return novelty(ctx, sampling_lib.load_samples_npz(path))
        except ValueError as e:  # e.g. non-finite samples
            return {"error": str(e)}

    value, _ = cached(os.path.join(workdir, "novelty.json"), key, compute)
    return value


@dataclasses.dataclass
class Context:
    """One run of one table: its declaration, size, overrides and where things go.

    ``overrides`` are the command line's (applied last); the table's and the flow's own
    come from the declaration (:meth:`flow_overrides`).
    """

    table: spec_lib.Table
    size: str
    overrides: list[tuple[str, Any]]
    runs_dir: str
    results_dir: str
    seed: int
    rows: list[str]
    train_fn: TrainFn | None = None
    progress: bool = True
    cache: dict[str, Any] = dataclasses.field(default_factory=dict)

    def dataset_overrides(self) -> list[tuple[str, Any]]:
        ds = self.table.dataset
        if not ds:
            return []
        return [("zoo.dataset", ds),
                ("zoo.dir", os.path.join(zoo_lib.default_zoo_root(), f"{ds}_{self.size}"))]

    def flow_overrides(self, flow: spec_lib.FlowSpec) -> list[tuple[str, Any]]:
        """Zoo preset, dataset, table, flow, then command-line overrides, in that order."""
        return (zoo_preset_overrides(flow.task, flow.zoo.get(self.size))
                + self.dataset_overrides() + spec_lib.sized(self.table.overrides, self.size)
                + spec_lib.sized(flow.overrides, self.size) + list(self.overrides))

    def config(self, flow: spec_lib.FlowSpec) -> ml_collections.ConfigDict:
        return row_config(flow.task, flow.kind, flow.variant, self.size,
                          self.flow_overrides(flow))

    def workdir(self, flow: spec_lib.FlowSpec,
                config: ml_collections.ConfigDict | None = None) -> str:
        """The flow's run directory (``config``: its :meth:`config`, if already built)."""
        cfg = self.config(flow) if config is None else config
        own = str(_base_config(flow.task, flow.kind, self.size).model.name)
        model = None if str(cfg.model.name) == own else str(cfg.model.name)
        wd = row_workdir(self.runs_dir, self.table.group, self.size, flow.kind,
                         flow.variant, model)
        return wd + (f"_{flow.tag}" if flow.tag else "")

    def flow(self, flow: spec_lib.FlowSpec) -> dict[str, Any]:
        """Trains or reuses ``flow`` (once per table run)."""
        cfg = self.config(flow)
        wd = self.workdir(flow, cfg)
        if wd not in self.cache:
            self.cache[wd] = run_flow(cfg, wd, train_fn=self.train_fn, progress=self.progress)
        return self.cache[wd]

    def reference_flow(self) -> spec_lib.FlowSpec:
        """The table's first flow (its zoo is the table's zoo)."""
        for r in self.table.rows:
            if r.flow is not None:
                return r.flow
        raise ValueError(f"table {self.table.name!r} declares no flow")

    def zoo(self) -> ZooContext:
        if "zoo" not in self.cache:
            cfg = self.config(self.reference_flow())
            self.cache["zoo"] = zoo_context(
                cfg, seed=self.seed, progress=self.progress,
                cache_dir=os.path.join(self.runs_dir, f"{self.table.group}_{self.size}"))
        return self.cache["zoo"]
