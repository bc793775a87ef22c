"""``SCALING.md`` and ``scaling.json`` from the results of ``bench.scaling``.

python -m bench.scaling_report [scaling.json]    (re-renders SCALING.md beside it)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

DASH = "\u2013"  # an en dash, in the Markdown only
#: A server this busy (share of one core) counts as saturated.
SATURATED = 0.9

TITLES = {
    "redis": "One Redis (one queue)",
    "cluster": "Redis Cluster, three masters (12 queues, round robin)",
}


def _figure(value: Optional[dict[str, float]], fmt: str = "{:,.0f}", scale: float = 1.0) -> str:
    """``median (min-max)`` of a spread, or a dash."""
    if not value:
        return DASH
    median, low, high = (fmt.format(value[key] * scale) for key in ("median", "min", "max"))
    return median if value["n"] == 1 else f"{median} ({low}{DASH}{high})"


def ceiling(row: dict[str, Any]) -> Optional[float]:
    """Tasks per second at which the server(s) of a row would use one full core each,
    from the CPU per task measured in it."""
    cpu = row["server_cpu_us"]
    if not cpu or cpu["median"] <= 0:
        return None
    return float(1e6 / cpu["median"] * (3 if row["target"] == "cluster" else 1))


def machine_section(results: dict[str, Any]) -> list[str]:
    meta = results["meta"]
    settings = meta["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in meta["versions"].items())
    servers = ", ".join(f"{name}: redis-server {v}" for name, v in results["servers"].items())
    lines = [
        f"- Date: {meta['date']}; took {meta['seconds'] / 60:.1f} min",
        f"- Machine: {meta['cpu']}, **{meta['cores']} cores**, {meta['memory_gib']} GiB, "
        f"{meta['platform']}",
        f"- Versions: {versions}; {servers}",
        f"- Code: commit {meta['commit']}{' (with local changes)' if meta['dirty'] else ''}, "
        f"package digest {meta['code_digest']}"
        + (
            " (**the working tree changed during the run**)"
            if meta["code_changed_during_run"]
            else ""
        ),
        f"- Settings: {settings['n']:,} tasks per row, {settings['repeat']} repetition(s), "
        f"worker processes {', '.join(map(str, settings['workers']))}",
        f"- Load average before and after: {results['loads'][0]} … {results['loads'][-1]}",
    ]
    return lines


def cores_note(results: dict[str, Any]) -> str:
    cores = results["meta"]["cores"] or 1
    return (
        f"**This machine has {cores} cores.** Every row runs its worker processes, the "
        "redis-server(s) and the harness (publisher and result poller) on them. Beyond "
        f"{cores} worker processes the workers outnumber the cores and take turns with Redis "
        "on them: the drain rate then measures the machine, not Redis. The Redis CPU "
        "per task is what extrapolates to a bigger machine; the ceiling column is one core "
        "(per master) divided by it."
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| worker processes | drain (tasks/s) | Redis CPU per task (µs) | Redis busy "
        "(share of one core) | ceiling at 100% of a core (tasks/s) | worker CPU per task (µs) "
        "| other work on the machine (cores) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        limit = ceiling(row)
        lines.append(
            f"| {row['workers']} | **{_figure(row['rate'])}** | {_figure(row['server_cpu_us'])} "
            f"| {_figure(row['server_busy'], '{:.0%}')} "
            f"| {DASH if limit is None else f'{limit:,.0f}'} "
            f"| {_figure(row['worker_cpu_us'])} | {_figure(row['other_cores'], '{:.2f}')} |"
        )
    return lines


def saturation(rows: list[dict[str, Any]]) -> str:
    """What the single-Redis rows say about where one Redis saturates."""
    single = [row for row in rows if row["target"] == "redis" and row["server_busy"]]
    if not single:
        return "No single-Redis rows were measured."
    # The row that loaded Redis most (the highest drain rate): its CPU per task is the
    # one a busy Redis pays.
    busiest = max(single, key=lambda row: row["rate"]["median"])
    busy = busiest["server_busy"]["median"]
    limit = ceiling(busiest)
    if busy >= SATURATED:
        return (
            f"One Redis saturated (its CPU at {busy:.0%} of one core) at "
            f"**{busiest['rate']['median']:,.0f} tasks/s**, with {busiest['workers']} "
            "worker processes."
        )
    return (
        f"One Redis never got near a full core here: {busy:.0%} of one core in the "
        f"busiest row, {busiest['workers']} worker processes ({busiest['rate']['median']:,.0f} tasks/s). "
        f"From the {busiest['server_cpu_us']['median']:.0f} µs of Redis CPU each task cost in "
        f"that row, one Redis saturates at about **{limit:,.0f} tasks/s** (one core divided by "
        "the CPU per task; a busier Redis batches more per call, so this is a floor rather "
        "than a promise)."
    )


def render(results: dict[str, Any]) -> str:
    summary = results["summary"]
    lines = [
        "# Scaling: drain rate and Redis CPU per task as workers are added",
        "",
        "Written by `python -m bench.scaling` (see `bench/README.md`). Each row: that many "
        "`flask worker -P solo` processes on an empty store, all announced; then N no-op "
        "tasks (results stored) published in batches of 1,000 and the clock stopped when the "
        "last result is in. Redis CPU is `INFO cpu` (user + system) before and after, summed "
        "over the Cluster's masters, and includes publishing; worker CPU is from `/proc`. "
        "Figures are medians (min-max) over the repetitions.",
        "",
        "## Machine",
        "",
        *machine_section(results),
        "",
        cores_note(results),
        "",
        "## Where one Redis saturates",
        "",
        saturation(summary),
        "",
    ]
    if results.get("errors"):
        lines += ["## Rows that failed", "", *(f"- {error}" for error in results["errors"]), ""]
    for target, title in TITLES.items():
        rows = [row for row in summary if row["target"] == target]
        lines += [f"## {title}", ""]
        if rows:
            lines += [*table(rows), ""]
        else:
            reason = results["skipped"].get(target, "not asked for (--targets)")
            lines += [f"Not measured: {reason}.", ""]
    return "\n".join(lines)


def write_report(results: dict[str, Any], out: Path) -> tuple[Path, Path]:
    json_file = out / "scaling.json"
    json_file.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    report_file = out / "SCALING.md"
    report_file.write_text(render(results))
    return json_file, report_file


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("scaling.json"))
    print(write_report(json.loads(source.read_text()), source.parent)[1])
