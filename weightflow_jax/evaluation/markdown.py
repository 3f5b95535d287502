"""Markdown tables for the results files: ``mean±std`` cells, one row per method.

Example::

    rows = {"Geometric (aligned + OT)": {"accuracy": (0.786, 0.064), "loss": (1.443, 0.046),
                                         "diversity": 9e-4},   # or (N,) arrays
            "Target": {"accuracy": (0.933, 0.009), "loss": (0.231, 0.027)}}
    print(results_table(rows, ["accuracy", "loss", "diversity"], digits={"diversity": 5}))

renders::

    | method | accuracy | loss | diversity |
    |---|---|---|---|
    | Geometric (aligned + OT) | 0.786±0.064 | 1.443±0.046 | 0.00090 |
    | Target | 0.933±0.009 | 0.231±0.027 | – |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["format_value", "format_mean_std", "markdown_table", "results_table"]

MISSING = "–"


def format_mean_std(mean: float, std: float | None = None, digits: int = 3) -> str:
    """``"0.737±0.085"`` (or ``"0.737"`` without ``std``); non-finite values as ``nan``/``inf``."""
    def f(v):
        v = float(v)
        return f"{v:.{digits}f}" if np.isfinite(v) else str(v)
    return f(mean) if std is None else f"{f(mean)}±{f(std)}"


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell from a value.

    * ``None`` -> ``"–"``; a string is kept;
    * a pair ``(mean, std)`` -> ``"mean±std"``;
    * an array with more than one element -> ``"mean±std"`` over it (population std);
    * a number -> fixed-point with ``digits`` decimals (ints as they are).
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, tuple) and len(value) == 2:
        return format_mean_std(value[0], value[1], digits)
    arr = np.asarray(value, np.float64)
    if arr.size == 0:
        return MISSING
    if arr.size == 1:
        return format_mean_std(arr.reshape(-1)[0], None, digits)
    return format_mean_std(arr.mean(), arr.std(), digits)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]],
                   digits: int = 3) -> str:
    """A GitHub markdown table; cells are formatted with :func:`format_value`.

    Raises:
      ValueError when a row's length differs from the header's.
    """
    header = [str(h) for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"row {i} has {len(row)} cells but the header has "
                             f"{len(header)}: {list(row)!r}")
        cells = [format_value(c, digits).replace("|", "\\|") for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def results_table(rows: Mapping[str, Mapping[str, Any]], columns: Sequence[str], *,
                  first: str = "method", digits: int | Mapping[str, int] = 3) -> str:
    """One row per method; columns picked by name (missing entries shown as ``–``).

    Args:
      rows: method -> {column -> value (array, (mean, std), number, string)}.
      columns: column names, in order.
      first: header of the first column.
      digits: decimals, one for all or per column (default 3).
    """
    per = digits if isinstance(digits, Mapping) else {}
    default = 3 if isinstance(digits, Mapping) else int(digits)
    body = []
    for name, vals in rows.items():
        body.append([name] + [format_value(vals.get(c), per.get(c, default))
                              for c in columns])
    return markdown_table([first] + list(columns), body)
