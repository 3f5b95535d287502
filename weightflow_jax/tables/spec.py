"""Declarations of results tables as data: a table is rows, each a flow (a config file plus
overrides) and an evaluator name, and a tuple of goals.

Nothing here runs anything: :mod:`weightflow_jax.tables.runner` reads these declarations,
:mod:`weightflow_jax.tables.evaluators` implements the evaluators by name and
:mod:`weightflow_jax.tables.goals` the goals. The thesis's tables are declared in
:mod:`weightflow_jax.tables.declarations`.

Overrides are ``{size: ((dotted key, value), ...)}`` with the size ``"all"`` applying to
every size; within one declaration the ``"all"`` items come first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["KINDS", "VARIANTS", "SIZES", "SizedOverrides", "FlowSpec", "Row", "Table",
           "sized"]

KINDS = ("euclidean", "normalized", "geometric")
VARIANTS: dict[str, tuple[tuple[str, Any], ...]] = {
    "plain": (("flow.align", False), ("flow.coupling", "independent")),
    "aligned": (("flow.align", True), ("flow.coupling", "independent")),
    "aligned_ot": (("flow.align", True), ("flow.coupling", "exact")),
}
SIZES = ("default", "cpu", "test")

SizedOverrides = Mapping[str, tuple[tuple[str, Any], ...]]


def sized(overrides: SizedOverrides, size: str) -> list[tuple[str, Any]]:
    """The overrides of ``size``: the ``"all"`` items, then the size's own."""
    return list(overrides.get("all", ())) + list(overrides.get(size, ()))


@dataclasses.dataclass(frozen=True)
class FlowSpec:
    """One trained flow: ``configs/<task>_<kind>.py`` + the variant + overrides.

    Attributes:
      task: ``breast_cancer`` | ``mnist`` (the config file's prefix).
      kind: one of :data:`KINDS`.
      variant: one of :data:`VARIANTS`.
      overrides: this flow's own overrides per size (after the table's, before the
        command line's), e.g. ``{"cpu": (("model.name", "rt"),)}``.
      zoo: a zoo preset per size (:func:`weightflow_jax.zoo.zoo_config`), e.g.
        ``{"cpu": "wide"}``; sizes not named keep the config's own zoo.
      tag: appended to the flow's run directory, so that two flows of one table with the
        same kind, variant and field (e.g. conditioned and not) do not share it.
    """

    task: str
    kind: str
    variant: str = "aligned_ot"
    overrides: SizedOverrides = dataclasses.field(default_factory=dict)
    zoo: Mapping[str, str] = dataclasses.field(default_factory=dict)
    tag: str = ""

    def __post_init__(self):
        if self.task not in ("breast_cancer", "mnist"):
            raise ValueError(f"unknown task {self.task!r}; flows exist for breast_cancer and "
                             "mnist")
        if self.kind not in KINDS:
            raise ValueError(f"unknown flow kind {self.kind!r}; choose one of "
                             f"{', '.join(KINDS)}")
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of "
                             f"{', '.join(VARIANTS)}")


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a table.

    Attributes:
      key: the row's name (``--rows`` accepts these; also the published samples' file name).
      label: what the table shows.
      evaluator: name in :data:`weightflow_jax.tables.evaluators.EVALUATORS`.
      flow: the flow the row trains or samples from (``None`` for zoo baselines).
      options: the evaluator's settings (e.g. ``task``, ``arch``, ``guidance``).
      thesis: the thesis's numbers: ``acc``/``loss`` as ``(mean, std)``, ``diversity``,
        ``ensemble``; ``None`` when it has none.
      sizes: the sizes the row exists at (default all).
      extra: the row adds a section to the table (a sweep, curves) instead of a row.
    """

    key: str
    label: str
    evaluator: str
    flow: FlowSpec | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    thesis: Mapping[str, Any] | None = None
    sizes: tuple[str, ...] = SIZES
    extra: bool = False

    @property
    def is_flow(self) -> bool:
        """Whether the row reports samples of its own trained flow (novelty applies)."""
        return self.evaluator == "flow"


@dataclasses.dataclass(frozen=True)
class Table:
    """A results table.

    Attributes:
      name: file name of the results (``results/<name>.md``) and ``--table`` value.
      title: heading.
      group: the flows' run-directory group (``<runs_dir>/<group>_<size>/``); tables with
        the same group and equal flow configs share trained flows.
      rows: in table order.
      goals: goal objects (:mod:`weightflow_jax.tables.goals`).
      overrides: the table's overrides of every flow per size (after the variant).
      dataset: a data set other than the config's (``zoo.dataset``), with its own zoo
        directory ``<zoo root>/<dataset>_<size>``.
      description: a paragraph for the results file (what the table is, how it was sized).
    """

    name: str
    title: str
    group: str
    rows: tuple[Row, ...]
    goals: tuple[Any, ...] = ()
    overrides: SizedOverrides = dataclasses.field(default_factory=dict)
    dataset: str | None = None
    description: str = ""

    def __post_init__(self):
        keys = [r.key for r in self.rows]
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"table {self.name!r} declares row(s) {dup} twice")

    def rows_at(self, size: str) -> tuple[Row, ...]:
        """The rows that exist at ``size``."""
        return tuple(r for r in self.rows if size in r.sizes)

    def row(self, key: str) -> Row:
        for r in self.rows:
            if r.key == key:
                return r
        raise KeyError(f"table {self.name!r} has no row {key!r}; its rows: "
                       f"{', '.join(r.key for r in self.rows)}")
