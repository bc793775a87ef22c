"""The dashboard's chart: tasks per minute and their mean run time, as inline SVG.

Drawn on the server so the page needs no charting library and no build step.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

WIDTH, HEIGHT = 720, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 52, 12, 22


def throughput_chart(minutes: list[dict[str, Any]]) -> Markup:
    """Stacked bars (succeeded, failed) per minute on the left axis, mean run time as a
    line on the right axis; one ``<title>`` per bar for hovering."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_width / max(1, len(minutes))
    most = max([m["succeeded"] + m["failed"] for m in minutes] + [1])
    slowest = max([m["mean_seconds"] or 0.0 for m in minutes] + [0.001])
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        'aria-label="Tasks per minute and mean run time, last hour">',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_height}" '
        f'x2="{LEFT + plot_width}" y2="{TOP + plot_height}"/>',
        f'<text class="label" x="{LEFT - 6}" y="{TOP + 8}" text-anchor="end">{most}</text>',
        f'<text class="label" x="{LEFT - 6}" y="{TOP + plot_height}" text-anchor="end">0</text>',
        f'<text class="label seconds" x="{LEFT + plot_width + 6}" y="{TOP + 8}">'
        f"{seconds_text(slowest)}</text>",
        f'<text class="label" x="{LEFT}" y="{HEIGHT - 6}">60 min ago</text>',
        f'<text class="label" x="{LEFT + plot_width}" y="{HEIGHT - 6}" '
        'text-anchor="end">now</text>',
    ]
    line = []
    for index, minute in enumerate(minutes):
        x = LEFT + index * slot
        done, failed = minute["succeeded"], minute["failed"]
        ok_height = plot_height * done / most
        failed_height = plot_height * failed / most
        base = TOP + plot_height
        mean = minute["mean_seconds"]
        title = f"{done} succeeded, {failed} failed" + (
            f", mean {seconds_text(mean)}" if mean is not None else ""
        )
        parts.append(f"<g><title>{escape(title)}</title>")
        parts.append(
            f'<rect class="ok" x="{x + 1:.1f}" y="{base - ok_height:.1f}" '
            f'width="{max(1.0, slot - 2):.1f}" height="{ok_height:.1f}"/>'
        )
        if failed:
            parts.append(
                f'<rect class="failed" x="{x + 1:.1f}" y="{base - ok_height - failed_height:.1f}" '
                f'width="{max(1.0, slot - 2):.1f}" height="{failed_height:.1f}"/>'
            )
        parts.append("</g>")
        if mean is not None:
            line.append((x + slot / 2, base - plot_height * mean / slowest))
    if line:
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in line)
        parts.append(f'<polyline class="latency" points="{points}"/>')
        parts.extend(
            f'<circle class="latency-point" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>' for x, y in line
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def seconds_text(value: float) -> str:
    """A duration for people: ``0.4 ms``, ``250 ms``, ``3.2 s``."""
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


__all__ = ["seconds_text", "throughput_chart"]
