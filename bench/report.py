"""Benchmark results: one `Entry` per (scenario, metric, broker), printed as side-by-side tables."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

BROKER_TITLES = {"dari": "dari", "tansu": "Tansu"}


@dataclass
class Entry:
    """One measured figure for one broker; `value` is None when the run failed (see `error`)."""

    group: str
    scenario: str
    metric: str
    unit: str
    better: str  # "higher" or "lower"
    value: float | None
    cpu_pct: float | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.scenario} [{self.metric}]"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Results:
    """Entries keyed by broker then by scenario/metric, remembering first-seen row order."""

    def __init__(self) -> None:
        self.by_broker: dict[str, dict[str, Entry]] = {}
        self.order: list[tuple[str, str]] = []  # (group, key)

    def add(self, broker: str, entry: Entry) -> None:
        self.by_broker.setdefault(broker, {})[entry.key] = entry
        if (entry.group, entry.key) not in self.order:
            self.order.append((entry.group, entry.key))

    def to_json(self) -> dict[str, Any]:
        return {b: [e.to_json() for e in rows.values()] for b, rows in self.by_broker.items()}


def _num(value: float | None, error: str | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "FAIL" if error else "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _ratio(a: Entry | None, b: Entry | None) -> str:
    if not a or not b or a.value is None or b.value is None or not b.value:
        return "-"
    if math.isnan(a.value) or math.isnan(b.value):
        return "-"
    return f"{a.value / b.value:.2f}x"


def render(results: Results, brokers: list[str]) -> str:
    """One table per group; ratio is dari / Tansu whatever the direction ('better' says which)."""
    left, right = "dari", "tansu"
    head = ["scenario", "unit", "better", BROKER_TITLES[left], BROKER_TITLES[right],
            "dari/Tansu", "dari CPU", "Tansu CPU"]
    out: list[str] = []
    groups: dict[str, list[str]] = {}
    for group, key in results.order:
        groups.setdefault(group, []).append(key)
    for group, keys in groups.items():
        rows = [head]
        for key in keys:
            a = results.by_broker.get(left, {}).get(key)
            b = results.by_broker.get(right, {}).get(key)
            any_entry = a or b
            assert any_entry is not None
            rows.append([
                key, any_entry.unit, any_entry.better,
                _num(a.value, a.error) if a else "-", _num(b.value, b.error) if b else "-",
                _ratio(a, b), _pct(a.cpu_pct) if a else "-", _pct(b.cpu_pct) if b else "-",
            ])
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        line = "  ".join("-" * w for w in widths)
        out.append(f"== {group} ==")
        for i, r in enumerate(rows):
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2])]
            cells += [c.rjust(w) for c, w in zip(r[3:], widths[3:], strict=True)]
            out.append("  ".join(cells))
            if i == 0:
                out.append(line)
        out.append("")
    failures = [(b, e) for b in brokers for e in results.by_broker.get(b, {}).values() if e.error]
    if failures:
        out.append("failures:")
        out += [f"  {BROKER_TITLES[b]} {e.key}: {e.error}" for b, e in failures]
    return "\n".join(out)
