"""Goals of a results table, computed from its numbers (the table's JSON dict).

Each goal is a small frozen dataclass with a ``definition`` (written into the results file)
and ``evaluate(table) -> [{"goal", "value", "target", "status"}, ...]``; ``status`` is
``met``, ``missed``, ``not run`` (a row it needs is not in the table) or ``not meaningful``
(novelty of networks that do not work). A table's goals are recomputed from its saved JSON by
:func:`evaluate_goals`, so the file and the numbers cannot disagree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ThesisRows", "BeatTarget", "RowThreshold", "RowsClose", "BestOf", "InitCurves",
           "SgdCheck", "NotCopies", "PromptAlignment", "evaluate_goals", "goal_result"]


def goal_result(goal: str, value: Any, target: str, ok: bool | None) -> dict[str, Any]:
    """One goal's entry; ``ok=None`` means the rows it needs were not run."""
    status = "not run" if ok is None else ("met" if ok else "missed")
    return {"goal": goal, "value": value, "target": target, "status": status}


def _row(table: Mapping[str, Any], key: str) -> dict | None:
    return next((r for r in table["rows"] if r["key"] == key), None)


def _finite(v: Any) -> bool:
    return v is not None and bool(np.isfinite(float(v)))


@dataclasses.dataclass(frozen=True)
class ThesisRows:
    """Every row with a thesis accuracy: ours >= thesis - ``tolerance`` (and, with
    ``loss=True``, our loss <= the thesis's). Rows whose thesis entry has ``goal: False``
    (e.g. the thesis's chance-level unguided Fashion-MNIST number) or that are comparison
    rows (``reference: True``) are skipped."""

    tolerance: float = 0.01
    loss: bool = False

    @property
    def definition(self) -> str:
        loss = " and our loss mean <= the thesis's loss mean" if self.loss else ""
        return (f"match or beat the thesis: 'met' when our accuracy mean >= the thesis's "
                f"accuracy mean - {self.tolerance:g}{loss} (every row with a thesis number "
                f"but comparison rows)")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        out = []
        for r in table["rows"]:
            th = r.get("thesis") or {}
            acc = th.get("acc")
            if acc is None or th.get("goal") is False or r.get("reference") \
                    or r.get("acc_mean") is None:
                continue
            need = float(acc[0]) - self.tolerance
            ok = _finite(r["acc_mean"]) and r["acc_mean"] >= need
            target = f"accuracy ≥ {acc[0]:.3f} - {self.tolerance:g} = {need:.3f}"
            value: Any = r["acc_mean"]
            if self.loss and th.get("loss") is not None:
                lim = float(th["loss"][0])
                ok = ok and _finite(r.get("loss_mean")) and r["loss_mean"] <= lim
                target += f", loss ≤ {lim:.3f}"
                value = f"acc {r['acc_mean']:.3f}, loss {_fmt(r.get('loss_mean'))}"
            out.append(goal_result(f"match or beat the thesis: {r['label']}", value, target,
                                   bool(ok)))
        return out


@dataclasses.dataclass(frozen=True)
class PromptAlignment:
    """R^2 of the mean achieved training loss against the prompted one (prompts spanning the
    zoo's 5th-95th percentile; the ``prompt_alignment`` section) >= ``threshold`` at
    classifier-free weight ``weight``."""

    threshold: float = 0.9
    weight: float = 1.0
    name: str = "prompt alignment"

    @property
    def definition(self) -> str:
        return (f"{self.name}: R^2 of the samples' mean achieved training loss against the "
                f"prompted loss (around the identity line; prompts spanning the zoo's "
                f"5th-95th percentile), guidance weight {self.weight:g}, >= {self.threshold:g}")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        sec = table.get("extras", {}).get("prompt_alignment")
        target = f"R² ≥ {self.threshold:g}"
        if not sec:
            return [goal_result(self.name, None, target, None)]
        got = sec.get("alignment", {}).get(f"{self.weight:g}")
        if got is None:
            return [goal_result(self.name, None, target + f" (weight {self.weight:g} not run)",
                                None)]
        v = float(got["r2_means"])
        return [goal_result(self.name, v, target, _finite(v) and v >= self.threshold)]


def _fmt(v: Any) -> str:
    return "–" if not _finite(v) else f"{float(v):.3f}"


@dataclasses.dataclass(frozen=True)
class BeatTarget:
    """Each of ``rows``: accuracy mean >= the ``target`` row's (the trained networks) and
    loss mean <= its loss mean."""

    rows: tuple[str, ...]
    target: str = "target"

    @property
    def definition(self) -> str:
        return ("as good as the trained networks: each flow row's accuracy mean >= the "
                "target row's (the zoo's final snapshots) and its loss mean <= theirs")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        t = _row(table, self.target)
        out = []
        for key in self.rows:
            r = _row(table, key)
            if r is None:
                continue
            name = f"as good as the trained networks: {r['label']}"
            if t is None:
                out.append(goal_result(name, None, "needs the target row", None))
                continue
            ok = (_finite(r["acc_mean"]) and r["acc_mean"] >= t["acc_mean"]
                  and _finite(r.get("loss_mean")) and r["loss_mean"] <= t["loss_mean"])
            out.append(goal_result(
                name, f"acc {r['acc_mean']:.3f}, loss {_fmt(r.get('loss_mean'))}",
                f"accuracy ≥ {t['acc_mean']:.3f}, loss ≤ {t['loss_mean']:.3f}", bool(ok)))
        return out


_METRICS = {"acc": ("acc_mean", "accuracy", "≥"), "loss": ("loss_mean", "loss", "≤"),
            "ensemble": ("ensemble_acc", "ensemble accuracy", "≥")}


@dataclasses.dataclass(frozen=True)
class RowThreshold:
    """One number of one row against a threshold: ``metric`` is ``acc`` (>=), ``loss``
    (<=) or ``ensemble`` (>=; with ``ensemble_size``, the ensemble must be that large)."""

    row: str
    metric: str
    threshold: float
    name: str
    ensemble_size: int | None = None

    @property
    def definition(self) -> str:
        field, what, op = _METRICS[self.metric]
        size = f" of {self.ensemble_size} networks" if self.ensemble_size else ""
        return f"{self.name}: row `{self.row}` {what}{size} {op} {self.threshold:g}"

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        field, what, op = _METRICS[self.metric]
        r = _row(table, self.row)
        size = f" ({self.ensemble_size} networks)" if self.ensemble_size else ""
        target = f"{what}{size} {op} {self.threshold:g}"
        if r is None:
            return [goal_result(self.name, None, target, None)]
        v = r.get(field)
        ok = _finite(v) and (v <= self.threshold if op == "≤" else v >= self.threshold)
        if self.ensemble_size and int(r.get("ensemble_size") or 0) < self.ensemble_size:
            ok = False
            target += f" (this run's ensemble has {r.get('ensemble_size')})"
        return [goal_result(self.name, v, target, bool(ok))]


@dataclasses.dataclass(frozen=True)
class RowsClose:
    """Each ``(row, reference)`` pair of ``pairs``: the row's accuracy mean >= the reference
    row's minus ``tolerance`` (e.g. a normalized flow against the euclidean flow trained for
    the same steps)."""

    pairs: tuple[tuple[str, str], ...]
    tolerance: float
    name: str

    @property
    def definition(self) -> str:
        pairs = "; ".join(f"`{a}` vs `{b}`" for a, b in self.pairs)
        return (f"{self.name}: a row's accuracy mean >= its reference row's - "
                f"{self.tolerance:g} ({pairs})")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        out = []
        for key, ref in self.pairs:
            r, b = _row(table, key), _row(table, ref)
            name = f"{self.name}: {r['label'] if r else key}"
            if r is None or b is None:
                out.append(goal_result(name, None, f"needs rows {key} and {ref}", None))
                continue
            need = b["acc_mean"] - self.tolerance if _finite(b["acc_mean"]) else None
            ok = need is not None and _finite(r["acc_mean"]) and r["acc_mean"] >= need
            target = (f"accuracy ≥ {b['label']}'s {_fmt(b['acc_mean'])} - {self.tolerance:g}"
                      + (f" = {need:.3f}" if need is not None else ""))
            out.append(goal_result(name, r["acc_mean"], target, bool(ok)))
        return out


@dataclasses.dataclass(frozen=True)
class BestOf:
    """The best accuracy mean among ``rows`` >= ``threshold``."""

    rows: tuple[str, ...]
    threshold: float
    name: str

    @property
    def definition(self) -> str:
        return (f"{self.name}: the best accuracy mean of rows {', '.join(self.rows)} >= "
                f"{self.threshold:g}")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        got = [r for r in (_row(table, k) for k in self.rows) if r is not None]
        best = max((r["acc_mean"] for r in got if _finite(r["acc_mean"])), default=None)
        return [goal_result(self.name, best, f"accuracy ≥ {self.threshold:g}",
                            None if not got else bool(best is not None
                                                      and best >= self.threshold))]


@dataclasses.dataclass(frozen=True)
class InitCurves:
    """Fine-tuning from samples against random init (the ``finetune`` section's points):
    unguided samples never behind random init beyond its 95% interval (their mean >= random
    init's mean minus its 95% half-width) at any measured point, and guided samples ahead
    (higher mean) at every point up to ``ahead_until`` epochs."""

    unguided: str = "unguided samples"
    guided: str = "guided samples"
    random: str = "random init"
    ahead_until: int = 1

    @property
    def definition(self) -> str:
        return (f"initialization: '{self.unguided}' never below random init's 95% interval at "
                f"any measured point; '{self.guided}' ahead of random init at every point up "
                f"to epoch {self.ahead_until}")

    @staticmethod
    def _where(p: Mapping[str, Any]) -> str:
        return f"{p['value']} {'steps' if p['unit'] == 'steps' else 'epoch'}"

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        ft = (table.get("extras") or {}).get("finetune")
        names = (f"fine-tuning from {self.unguided} not behind random init",
                 f"fine-tuning from {self.guided} ahead of random init")
        if not ft or "points" not in ft:
            return [goal_result(n, None, "see definition", None) for n in names]
        pts = ft["points"]
        gaps = [(p, p[self.unguided]["mean"] - (p[self.random]["mean"]
                                                  - p[self.random]["ci95"])) for p in pts]
        worst = min(gaps, key=lambda g: g[1])
        early = [p for p in pts if p["unit"] == "steps" or p["value"] <= self.ahead_until]
        diffs = [(p, p[self.guided]["mean"] - p[self.random]["mean"]) for p in early]
        least = min(diffs, key=lambda d: d[1])
        return [
            goal_result(names[0], f"worst margin {worst[1]:+.3f} at {self._where(worst[0])}",
                        "≥ random init's mean - 95% half-width at every point",
                        all(g >= 0 for _, g in gaps)),
            goal_result(names[1], f"smallest lead {least[1]:+.3f} at {self._where(least[0])}",
                        f"higher mean at every point up to epoch {self.ahead_until}",
                        all(d > 0 for _, d in diffs))]


@dataclasses.dataclass(frozen=True)
class SgdCheck:
    """Plain SGD (the ``sgd_check`` section: lr 0.1, batch 128, 512 steps) from a row's
    published samples reaches random init's accuracy minus ``margin``."""

    margin: float = 0.01

    @property
    def definition(self) -> str:
        return (f"plain SGD (lr 0.1, batch 128, 512 steps) from the published unguided samples "
                f"reaches random init's accuracy - {self.margin:g}")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        sc = (table.get("extras") or {}).get("sgd_check")
        name = "plain SGD from published unguided samples"
        if not sc:
            return [goal_result(name, None, "see definition", None)]
        need = sc["random init"]["mean"] - self.margin
        return [goal_result(f"{name} ({sc['row']})",
                            f"{sc['samples']['mean']:.3f} (random init "
                            f"{sc['random init']['mean']:.3f})",
                            f"≥ {need:.3f}", sc["samples"]["mean"] >= need)]


@dataclasses.dataclass(frozen=True)
class NotCopies:
    """Samples are not copies of training checkpoints: a flow row's median L2 distance to
    its nearest checkpoint (up to permutation, each run aligned on its own:
    :func:`weightflow_jax.evaluation.nearest_per_run_pairwise`) > ``fraction`` x the median
    checkpoint spacing (measured the same way). Counted
    only for rows that work: mean accuracy >= ``works`` x the target row's (else 'not
    meaningful': networks that do not work are trivially far from every checkpoint)."""

    fraction: float = 0.5
    works: float = 0.9
    target: str = "target"

    @property
    def definition(self) -> str:
        return (f"samples are not copies: a flow row's median L2 distance to its nearest "
                f"training checkpoint (up to permutation) > {self.fraction:g} x the median "
                f"checkpoint spacing (distance of a checkpoint to the nearest checkpoint of "
                f"another training run, the same way); counted for rows that work "
                f"(accuracy mean >= {self.works:g} x the target row's), else 'not "
                f"meaningful'")

    def evaluate(self, table: Mapping[str, Any]) -> list[dict]:
        t = _row(table, self.target)
        out = []
        for r in table["rows"]:
            nov = r.get("novelty")
            if not r.get("is_flow") or not nov:
                continue
            name = f"samples are not copies: {r['label']}"
            target = f"median nearest / median spacing > {self.fraction:g}"
            med, sp = nov.get("l2_median"), nov.get("l2_spacing_median")
            if med is None or sp is None:
                out.append(goal_result(name, nov.get("error"), target, None))
                continue
            g = goal_result(name, med / sp, target, bool(med > self.fraction * sp))
            if t is not None and g["status"] == "met" and not (
                    _finite(r["acc_mean"]) and r["acc_mean"] >= self.works * t["acc_mean"]):
                g["status"] = "not meaningful (the row's networks do not work)"
            out.append(g)
        return out


def evaluate_goals(goals: Sequence[Any], table: Mapping[str, Any]) -> list[dict]:
    """All goals of ``table`` (a table dict with ``rows`` and ``extras``), in order."""
    out: list[dict] = []
    for g in goals:
        out.extend(g.evaluate(table))
    return out
