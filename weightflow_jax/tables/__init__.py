"""Results tables as data: declarations (:mod:`.declarations`), the evaluators by name
(:mod:`.evaluators`), goals (:mod:`.goals`), the runner (:func:`build_table`), rendering
(:mod:`.render`) and published samples (:mod:`.publish`).

    from weightflow_jax import tables
    table = tables.build_table("mnist", size="cpu")     # results/mnist.md, .json, plots
    tables.TABLES["mnist"].rows                          # the declaration
"""

from weightflow_jax.tables.context import row_config, row_workdir
from weightflow_jax.tables.declarations import TABLES, THESIS, get_table
from weightflow_jax.tables.evaluators import EVALUATORS, sweep_steps
from weightflow_jax.tables.overrides import (apply_overrides, parse_set, parse_variant,
                                             standard_overrides)
from weightflow_jax.tables.render import render_markdown, write_results
from weightflow_jax.tables.runner import build_table, select_rows, table_goals, table_rows
from weightflow_jax.tables.spec import KINDS, VARIANTS, FlowSpec, Row, Table

__all__ = ["TABLES", "THESIS", "get_table", "EVALUATORS", "sweep_steps", "apply_overrides",
           "parse_set", "parse_variant", "standard_overrides", "render_markdown", "write_results",
           "build_table", "table_goals", "select_rows", "table_rows", "row_config", "row_workdir",
           "KINDS", "VARIANTS", "FlowSpec", "Row", "Table"]
