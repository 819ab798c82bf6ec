"""Side-by-side tables for the AMQP benchmark: each dari variant against RabbitMQ.

Reuses `bench.report`'s `Results`/`Entry` and number formatting; only the broker set differs.
"""

from __future__ import annotations

from bench.report import Entry, Results, _num, _pct, _ratio

TITLES = {"dari": "dari", "dari-fsync": "dari fsync", "dari-base": "dari base",
          "rabbitmq": "RabbitMQ"}


def render(results: Results, brokers: list[str], reference: str = "rabbitmq") -> str:
    """One table per group: a value column per broker, then each other broker / `reference`
    (whatever the direction; 'better' says which way is good), dari / dari-base when both
    ran, then each broker's CPU."""
    others = [b for b in brokers if b != reference]
    ref = [reference] if reference in brokers else []
    shown = others + ref
    head = ["scenario", "unit", "better", *(TITLES[b] for b in shown)]
    head += [f"{TITLES[b]}/{TITLES[reference]}" for b in others if ref]
    versus_base = "dari" in brokers and "dari-base" in brokers
    if versus_base:
        head.append("dari/dari base")
    head += [f"{TITLES[b]} CPU" for b in shown]
    groups: dict[str, list[str]] = {}
    for group, key in results.order:
        groups.setdefault(group, []).append(key)
    out: list[str] = []
    for group, keys in groups.items():
        rows = [head]
        for key in keys:
            entries: dict[str, Entry | None] = {
                b: results.by_broker.get(b, {}).get(key) for b in shown
            }
            any_entry = next(e for e in entries.values() if e is not None)
            row = [key, any_entry.unit, any_entry.better]
            row += [_num(e.value, e.error) if e else "-" for e in entries.values()]
            if ref:
                row += [_ratio(entries[b], entries[reference]) for b in others]
            if versus_base:
                row.append(_ratio(entries["dari"], entries["dari-base"]))
            row += [_pct(e.cpu_pct) if e else "-" for e in entries.values()]
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        out.append(f"== {group} ==")
        for i, r in enumerate(rows):
            cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2])]
            cells += [c.rjust(w) for c, w in zip(r[3:], widths[3:], strict=True)]
            out.append("  ".join(cells))
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    failures = [(b, e) for b in brokers for e in results.by_broker.get(b, {}).values() if e.error]
    if failures:
        out.append("failures:")
        out += [f"  {TITLES[b]} {e.key}: {e.error}" for b, e in failures]
    return "\n".join(out)
