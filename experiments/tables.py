"""Regenerates the thesis's results tables: one command per table.

    python -m experiments.tables --table=breast_cancer --size=cpu
    python -m experiments.tables --table=breast_cancer_thesis_split --size=cpu
    python -m experiments.tables --table=mnist --size=cpu
    python -m experiments.tables --table=fashion_transfer --size=cpu
    python -m experiments.tables --table=arch_transfer --size=cpu
    python -m experiments.tables --table=mnist --rows=geometric_aligned_ot,target \\
        --set=model.mlp.width=256

Each writes ``<results_dir>/<table>.md`` (the table next to the thesis's numbers, goals
computed from the numbers, the command, overrides, seeds, hardware, packages, commit, date
and wall time), ``<results_dir>/<table>.json`` (every number), PNG plots in
``<results_dir>/<table>/`` and every sampled row's networks in
``<results_dir>/<table>/samples/<row>.npz``.

The tables are declared as data in :mod:`weightflow_jax.tables.declarations` (rows = a
config file + overrides + an evaluator); the machinery is :mod:`weightflow_jax.tables`.
A row's flow trains in ``<runs_dir>/<group>_<size>/<kind>_<variant>[_<field>]`` and is reused
when its ``eval.json`` was made by the same config and number of steps, so an interrupted
or repeated table resumes without retraining finished rows. ``--set key=value`` overrides
any config field of every flow (after the table's own overrides); ``--table=all`` runs
every table.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags

from weightflow_jax import tables as tables_lib

_TABLE = flags.DEFINE_string("table", None,
                             f"One of {', '.join(tables_lib.TABLES)} or 'all'.")
_SIZE = flags.DEFINE_enum("size", "cpu", ["default", "cpu", "test"], "Config size.")
_RUNS = flags.DEFINE_string("runs_dir", "runs/tables", "Root of the flows' workdirs.")
_RESULTS = flags.DEFINE_string("results_dir", "results", "Where results files go.")
_STEPS = flags.DEFINE_integer("steps", 0, "train.steps of every flow (0 = the table's).")
_NUM = flags.DEFINE_integer("num", 0, "sample.num: networks per row (0 = the table's).")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 0,
                                     "sample.steps: Euler steps (0 = the table's).")
_SET = flags.DEFINE_multi_string("set", [],
                                 "key=value config override, e.g. model.mlp.width=256.")
_ROWS = flags.DEFINE_string("rows", "", "Comma list of row keys to run (default: all).")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed, sampling and novelty seed.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def table_names(table: str | None, rows: str) -> list[str]:
    """The tables to run for ``--table`` (``all`` = every table).

    Raises:
      ValueError: no/unknown table (listing the valid ones), or ``--rows`` with ``all``.
    """
    valid = ", ".join(tables_lib.TABLES)
    if not table:
        raise ValueError(f"--table is required; choose one of {valid} or 'all'")
    if table == "all":
        if rows:
            raise ValueError("--rows selects rows of one table; it cannot be combined with "
                             "--table=all (run the tables one by one)")
        return list(tables_lib.TABLES)
    tables_lib.get_table(table)  # raises with the valid names
    return [table]


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        names = table_names(_TABLE.value, _ROWS.value)
        for name in names:  # check every table's rows and overrides before running any
            tables_lib.select_rows(name, _ROWS.value or None, _SIZE.value)
        for name in names:
            tables_lib.build_table(
                name, size=_SIZE.value, runs_dir=_RUNS.value, results_dir=_RESULTS.value,
                steps=_STEPS.value, num=_NUM.value, sample_steps=_SAMPLE_STEPS.value,
                sets=_SET.value, rows=_ROWS.value or None, seed=_SEED.value,
                progress=_PROGRESS.value)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


if __name__ == "__main__":
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    app.run(main)
