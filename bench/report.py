"""Figures, their targets, the table on stdout and `bench/results/latest.json`."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench.measure import ratio

RESULTS = Path(__file__).resolve().parent / "results"
Kind = Literal["ratio_min", "ratio_max", "min", "max"]


@dataclass(frozen=True)
class Target:
    """A bound on a figure: on its ratio to the baseline, or on the figure itself."""

    kind: Kind
    bound: float
    text: str

    def check(self, value: float | None, against: float | None) -> bool | None:
        """True/False when it can be judged, None when a number is missing."""
        subject = against if self.kind.startswith("ratio") else value
        if subject is None:
            return None
        return subject >= self.bound if self.kind in ("ratio_min", "min") else subject <= self.bound


def at_least_x(bound: float) -> Target:
    """ratio >= bound."""
    return Target("ratio_min", bound, f">= {bound:g}x")


def at_most_x(bound: float) -> Target:
    """ratio <= bound."""
    return Target("ratio_max", bound, f"<= {bound:g}x")


def at_least(bound: float, unit: str) -> Target:
    """value >= bound."""
    return Target("min", bound, f">= {bound:g} {unit}".strip())


def at_most(bound: float, unit: str) -> Target:
    """value <= bound."""
    return Target("max", bound, f"<= {bound:g} {unit}".strip())


@dataclass
class Figure:
    """One number, its same-run baseline, and (maybe) its target."""

    scenario: str
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""
    digits: int = 1

    @property
    def ratio(self) -> float | None:
        """value / baseline."""
        return ratio(self.value, self.baseline)

    @property
    def passed(self) -> bool | None:
        """Whether the target is met; None without a target or a number."""
        return None if self.target is None else self.target.check(self.value, self.ratio)

    def as_dict(self) -> dict[str, Any]:
        """For latest.json."""
        return {
            "scenario": self.scenario,
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": None if self.target is None else self.target.text,
            "passed": self.passed,
            "note": self.note,
        }


@dataclass
class ScenarioResult:
    """What one scenario found: its figures, details for the JSON, notes for the reader."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def _num(value: float | None, unit: str, digits: int) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f} {unit}".strip()


def _verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "MISS", None: ""}[passed]


def table(results: Sequence[ScenarioResult]) -> str:
    """The figures as a plain-text table, grouped by scenario."""
    header = ("figure", "value", "baseline (same run)", "ratio", "target", "result")
    rows: list[tuple[str, ...]] = []
    for result in results:
        rows.append((f"{result.title}", "", "", "", "", ""))
        if result.error:
            rows.append(("  ERROR: " + result.error.splitlines()[0][:90], "", "", "", "", "FAIL"))
        for fig in result.figures:
            baseline = _num(fig.baseline, fig.unit, fig.digits)
            if fig.baseline_label and fig.baseline is not None:
                baseline = f"{baseline} ({fig.baseline_label})"
            rows.append(
                (
                    "  " + fig.name,
                    _num(fig.value, fig.unit, fig.digits),
                    baseline,
                    "-" if fig.ratio is None else f"{fig.ratio:.2f}x",
                    fig.target.text if fig.target else "",
                    _verdict(fig.passed),
                )
            )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    for row in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    notes = [f"- {result.name}: {n}" for result in results for n in result.notes]
    if notes:
        out += ["", "notes:", *notes]
    return "\n".join(out)


def summary(results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """Pass/miss counts over every figure with a target."""
    judged = [f for r in results for f in r.figures if f.passed is not None]
    return {
        "targets": len(judged),
        "passed": sum(1 for f in judged if f.passed),
        "missed": [f"{f.scenario}: {f.name}" for f in judged if not f.passed],
        "errors": [f"{r.name}: {r.error}" for r in results if r.error],
    }


def write_json(path: Path, meta: dict[str, Any], results: Sequence[ScenarioResult]) -> Path:
    """Write the whole run to `path` (atomically: a reader never sees half a file)."""
    document = {
        "meta": meta,
        "summary": summary(results),
        "scenarios": {
            r.name: {
                "title": r.title,
                "figures": [f.as_dict() for f in r.figures],
                "details": r.details,
                "notes": r.notes,
                "error": r.error,
            }
            for r in results
        },
        "figures": [f.as_dict() for r in results for f in r.figures],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
