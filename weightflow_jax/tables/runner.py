"""Running a declared table: select rows, validate every override before anything runs,
run the rows (reusing trained flows and cached samples), publish the sampled networks,
compute the goals, write ``<results_dir>/<table>.md``, ``.json`` and the plots."""

from __future__ import annotations

import datetime
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from weightflow_jax import pipeline
from weightflow_jax.tables import declarations, evaluators, goals as goals_lib, publish, render
from weightflow_jax.tables.context import Context, TrainFn
from weightflow_jax.tables.overrides import standard_overrides
from weightflow_jax.tables.spec import SIZES, Table

__all__ = ["table_rows", "select_rows", "build_table", "table_goals"]


def table_rows(name: str, size: str = "cpu") -> dict[str, str]:
    """Row key -> label of table ``name`` at ``size``, in table order.

    Raises:
      ValueError: unknown table (listing the tables).
    """
    return {r.key: r.label for r in declarations.get_table(name).rows_at(size)}


def select_rows(name: str, rows: str | Sequence[str] | None, size: str = "cpu") -> list[str]:
    """The row keys to run: all of the table's for ``None``/empty, else ``rows`` in table order.

    Raises:
      ValueError: an unknown key (listing the valid ones), or ``noisy`` without a flow row
        to calibrate its distance.
    """
    table = declarations.get_table(name)
    valid = table_rows(name, size)
    if rows is None or (isinstance(rows, str) and not rows.strip()):
        return list(valid)
    keys = [r.strip() for r in (rows.split(",") if isinstance(rows, str) else rows)]
    keys = [k for k in keys if k]
    unknown = [k for k in keys if k not in valid]
    if unknown or not keys:
        raise ValueError(f"--rows {','.join(unknown) or '(empty)'}: unknown row(s) of table "
                         f"{name!r}; valid rows: {', '.join(valid)}")
    chosen = [k for k in valid if k in keys]
    if "noisy" in chosen and not any(table.row(k).is_flow for k in chosen):
        raise ValueError("--rows: 'noisy' calibrates its noise to a flow row's samples; add "
                         "at least one flow row (e.g. geometric_aligned_ot) to --rows")
    return chosen


def table_goals(table: dict[str, Any]) -> list[dict[str, Any]]:
    """The goals of a table dict (e.g. a saved ``results/<table>.json``), recomputed from
    its numbers with its declaration's goals."""
    return goals_lib.evaluate_goals(declarations.get_table(table["table"]).goals, table)


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


def _publish(ctx: Context, rows: list[dict], extras: dict | None = None) -> None:
    for r in rows:
        src = r.get("samples_source")
        if not src:
            continue
        dest = publish.samples_path(ctx.results_dir, ctx.table.name, r["key"])
        r["published"] = publish.publish_samples(src, dest, r["samples_task"])
    for p in (extras or {}).get("prompt_alignment", {}).get("points", []):
        dest = publish.samples_path(ctx.results_dir, ctx.table.name, p["publish_key"])
        p["published"] = publish.publish_samples(p["samples_source"], dest, p["samples_task"])


def build_table(name: str, *, size: str = "cpu", runs_dir: str = "runs/tables",
                results_dir: str = "results", steps: int = 0, num: int = 0,
                sample_steps: int = 0, sets: Sequence[str] = (),
                rows: str | Sequence[str] | None = None, seed: int = 0,
                argv: Sequence[str] | None = None, train_fn: TrainFn | None = None,
                progress: bool = True, write: bool = True) -> dict[str, Any]:
    """Runs (or reuses) every selected row of table ``name`` and writes its results.

    Args:
      name: a key of :data:`weightflow_jax.tables.declarations.TABLES`.
      size: config size (``default`` | ``cpu`` | ``test``).
      runs_dir: root of the flows' workdirs (``<runs_dir>/<group>_<size>/...``).
      results_dir: where ``<name>.md``, ``<name>.json``, ``<name>/*.png`` and
        ``<name>/samples/<row>.npz`` go.
      steps, num, sample_steps: ``train.steps``, ``sample.num``, ``sample.steps`` of every
        flow (0 = the declaration's).
      sets: ``"key=value"`` overrides of any config field, applied last.
      rows: row keys to run; ``None`` = all.
      seed: ``config.seed`` (flow init and batches), sampling seed and novelty subset seed.
      argv: the command line for the header (default ``sys.argv``).
      train_fn: replaces :func:`pipeline.train_and_evaluate` (tests).
      write: write the md/json/plots and publish the samples.

    Returns:
      the table dict (also ``<results_dir>/<name>.json``).

    Raises:
      ValueError: unknown table, size, row or override, before anything runs.
    """
    table: Table = declarations.get_table(name)
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    selected = select_rows(name, rows, size)
    overrides = standard_overrides(steps, num, sample_steps, seed, sets)
    ctx = Context(table, size, overrides, runs_dir, results_dir, int(seed), selected,
                  train_fn, progress)
    for r in table.rows_at(size):  # validates every override of every flow now
        if r.flow is not None:
            ctx.config(r.flow)
    t0 = time.time()
    print(f"[{name}] size {size}, rows {', '.join(selected)}", flush=True)
    row_dicts, extras = evaluators.run_rows(ctx, [table.row(k) for k in selected])
    if write:
        _publish(ctx, row_dicts, extras)
    result = {
        "table": name, "title": table.title, "description": table.description, "size": size,
        "argv": list(sys.argv if argv is None else argv), "command": _command(argv),
        "overrides": [[k, v] for k, v in overrides],
        "table_overrides": {s: [[k, v] for k, v in ov] for s, ov in table.overrides.items()},
        "seed": int(seed),
        "seeds": {"config.seed (flow init, batches)": int(seed), "sampling": int(seed),
                  "novelty checkpoint subset / noise baseline": int(seed)},
        "hardware": pipeline._hardware(), "git_commit": _git_commit(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "runs_dir": runs_dir, "results_dir": results_dir, "selected_rows": selected,
        "rows": row_dicts, "extras": extras,
        "goal_definitions": [g.definition for g in table.goals],
    }
    result["goals"] = table_goals(result)
    result["plots"] = render.plot_table(result) if write else []
    result["wall_seconds"] = time.time() - t0
    if write:
        render.write_results(result)
    print(f"[{name}] done in {result['wall_seconds']:.1f} s", flush=True)
    return result
