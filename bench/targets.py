"""The targets of issue 13 ("lead every peer in the configuration users actually write"),
checked against one run: a table for RESULTS.md, rendered by :mod:`bench.report`.

Each row compares a median of this run with a peer's median from the same run, or with a
fixed figure (bulk enqueue rate, Redis round trips, SQLite latency). A row whose inputs
were not measured (a configuration left out with ``--configs``) says so instead of passing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from bench.report import DASH, FT, FT_SQLITE, TIMES, View, median, table

FT_USERS = "flask-tasks-users"
FT_QUEUES = "flask-tasks-20-queues"
HUEY = "huey"
HUEY_NOTIFY = "huey-notify"
#: The two Flask-Tasks configurations the issue asks the targets of, with their labels.
FT_ROWS = (
    (FT, "results in the broker's db"),
    (FT_USERS, "results in db 1, signed"),
)


@dataclass
class Row:
    target: str
    measured: str
    met: str

    def cells(self) -> list[str]:
        return [self.target, self.measured, self.met]


def _verdict(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("**yes**" if ok else "**no**")


def relative(
    target: str, value: Optional[float], other: Optional[float], want: float, lower: bool = False
) -> Row:
    """``value ÷ other`` at least ``want`` (at most, when ``lower``)."""
    if value is None or not other:
        return Row(target, DASH, _verdict(None))
    measured = value / other
    return Row(
        target, f"{measured:.2f}{TIMES}", _verdict(measured <= want if lower else measured >= want)
    )


def absolute(
    target: str,
    value: Optional[float],
    want: float,
    unit: str,
    digits: int = 0,
    lower: bool = False,
) -> Row:
    """``value`` itself at least ``want`` (at most, when ``lower``)."""
    if value is None:
        return Row(target, DASH, _verdict(None))
    text = f"{value:,.{digits}f} {unit}"
    return Row(target, text, _verdict(value <= want if lower else value >= want))


def _growth_ratio(view: View) -> tuple[str, Optional[float], Optional[float]]:
    growth = view.results.get("growth", {}).get(FT, {})
    sizes = sorted(growth, key=int)
    if len(sizes) < 2:
        return "drain with 1,000,000 waiting within 10 % of with 1,000", None, None
    label = f"drain with {int(sizes[-1]):,} waiting within 10 % of with {int(sizes[0]):,}"
    return label, median(growth[sizes[-1]]["drain"]), median(growth[sizes[0]]["drain"])


def rows(view: View) -> list[Row]:
    made: list[Row] = []
    huey_drain = view.median(HUEY, "drain")
    notify_drain = view.median(HUEY_NOTIFY, "drain")
    huey_enqueue = median(view.enqueue_values(view.enqueue_group(HUEY)))
    notify_p50 = view.median(HUEY_NOTIFY, "rt_p50")
    for name, label in FT_ROWS:
        drain = view.median(name, "drain")
        made += [
            relative(f"drain ≥ 1.5{TIMES} Huey's default ({label})", drain, huey_drain, 1.5),
            relative(f"drain ≥ 1.5{TIMES} Huey-notify ({label})", drain, notify_drain, 1.5),
        ]
    for name, label in FT_ROWS:
        made.append(
            relative(
                f"enqueue from one producer ≥ 1.0{TIMES} Huey ({label})",
                median(view.enqueue_values(view.enqueue_group(name))),
                huey_enqueue,
                1.0,
            )
        )
    for name, label in FT_ROWS:
        made.append(
            absolute(
                f"bulk enqueue ≥ 50,000 tasks/s ({label})",
                view.median(name, "bulk"),
                50_000,
                "tasks/s",
            )
        )
    for name, label in FT_ROWS:
        made.append(
            relative(
                f"round trip p50 ≤ 0.6{TIMES} Huey-notify's ({label})",
                view.median(name, "rt_p50"),
                notify_p50,
                0.6,
                lower=True,
            )
        )
    for name, label in FT_ROWS:
        made.append(
            absolute(
                f"Redis round trips per `delay().get()` ≤ 6 ({label})",
                median(view.field(name, "rt_redis", "round_trips")),
                6.0,
                "",
                digits=2,
                lower=True,
            )
        )
    made.append(
        relative(
            "drain with 20 queues consumed within 10 % of one queue",
            view.median(FT_QUEUES, "drain"),
            view.median(FT, "drain"),
            0.9,
        )
    )
    label, largest, smallest = _growth_ratio(view)
    made.append(relative(label, largest, smallest, 0.9))
    made.append(
        relative(
            "idle PSS of `-P prefork -c 2` ≤ Celery threads'",
            median(view.field(FT, "memory_idle", "pss_kib")),
            median(view.field("celery-threads", "memory_idle", "pss_kib")),
            1.0,
            lower=True,
        )
    )
    made.append(
        absolute(
            "SQLite: round trip p50 ≤ 2 ms",
            view.median(FT_SQLITE, "rt_p50"),
            2.0,
            "ms",
            digits=2,
            lower=True,
        )
    )
    made.append(
        relative(
            f"SQLite: drain ≥ 1.0{TIMES} Redis's",
            view.median(FT_SQLITE, "drain"),
            view.median(FT, "drain"),
            1.0,
        )
    )
    return made


def issue_targets_section(view: View) -> list[str]:
    return [
        "## Targets of issue 13 (ratios of medians from this run)",
        "",
        "Flask-Tasks on Redis in the two configurations of the issue: `flask-tasks` (results "
        "in the broker's own database, messages unsigned) and `flask-tasks-users` (results in "
        "db 1 of the same server and `SECRET_KEY` set, as users configure it). *n/a*: a "
        "configuration the row needs was not measured in this run.",
        "",
        *table(["target", "measured", "met"], [row.cells() for row in rows(view)]),
    ]
