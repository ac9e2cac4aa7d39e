"""Inline SVG drawn on the server: a group run's timeline, a group's dependency graph and
a script's duration chart (docs/WEB.md).

Each function returns markup ready to put in a page: every text is escaped, shapes carry
``s-STATUS`` classes that app.css colours (so the dark scheme applies), and a status is
always written out too (a symbol and a ``<title>``), never shown by colour alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

from ..render import duration_text
from ..states import FAILURES, RunStatus

# A mark per status, beside its colour.
SYMBOL = {
    RunStatus.SUCCESS: "✓",
    RunStatus.FAILED: "✗",
    RunStatus.TIMEOUT: "◔",
    RunStatus.LOST: "?",
    RunStatus.INTERRUPTED: "■",
    RunStatus.SKIPPED: "⊘",
    RunStatus.RUNNING: "▶",
}
NICE_SECONDS = (
    *(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
    *(1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600),
    *(43200, 86400, 172800, 604800),
)
DEFS = (
    '<defs><pattern id="{id}" width="6" height="6" patternUnits="userSpaceOnUse"'
    ' patternTransform="rotate(45)"><rect width="2.5" height="6" class="hatch"/></pattern>'
    '<marker id="{id}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7"'
    ' markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"'
    ' class="arrow"/></marker></defs>'
)


def symbol(status: str) -> str:
    try:
        return SYMBOL[RunStatus(status)]
    except ValueError:
        return "·"


def nice_step(span: float, most: int = 8) -> float:
    """The smallest round step (in seconds) that cuts ``span`` into at most ``most`` parts."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    for step in NICE_SECONDS:
        if span / step <= most:
            return float(step)
    return float(math.ceil(span / most / 86400) * 86400)


def ticks(span: float, most: int = 8) -> list[float]:
    """Round values from 0 up to ``span`` (inclusive when it falls on one)."""
    step = nice_step(span, most)
    n = int(span / step + 1e-9)
    return [round(i * step, 6) for i in range(n + 1)]


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _title(text: str) -> str:
    return f"<title>{escape(text)}</title>"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


# ---------------------------------------------------------------- the timeline


@dataclass
class Bar:
    """One attempt of a script in a group run."""

    run_id: int
    attempt: int
    status: str
    start: float
    end: float | None  # None: still running
    detail: str | None = None


@dataclass
class Row:
    script: str
    bars: list[Bar] = field(default_factory=list)
    skipped: str | None = None  # the reason, when the script never started


def timeline(rows: Sequence[Row], start: float, now: float, uid: str = "tl") -> Markup:
    """A Gantt chart: a row per script, a bar per attempt from its start to its end (to
    ``now`` while running), the waits before retries drawn as dashed gaps, skipped
    scripts marked with their reason, and a time axis in seconds from ``start``."""
    label_w, width, row_h, top = 170.0, 940.0, 28.0, 30.0
    ends = [b.end if b.end is not None else now for r in rows for b in r.bars]
    end = max([start + 1.0, now if any(b.end is None for r in rows for b in r.bars) else 0, *ends])
    span = max(end - start, 1e-3)
    axis = ticks(span)
    span = max(span, axis[-1])
    plot = width - label_w - 40
    height = top + row_h * max(len(rows), 1) + 8

    def x(t: float) -> float:
        return label_w + plot * max(0.0, t - start) / span

    out = [
        f'<svg class="timeline" viewBox="0 0 {_f(width)} {_f(height)}" role="group"'
        f' aria-labelledby="{uid}-t" data-rows="{len(rows)}">',
        f'<title id="{uid}-t">Timeline of the group run: one row per script,'
        f" a bar per attempt</title>",
        DEFS.format(id=uid),
    ]
    for t in axis:
        gx = _f(x(start + t))
        out.append(
            f'<line class="grid" x1="{gx}" y1="{_f(top - 6)}" x2="{gx}" y2="{_f(height - 4)}"/>'
            f'<text class="tick" x="{gx}" y="{_f(top - 12)}" text-anchor="middle">'
            f"{escape(_axis_text(t, axis))}</text>"
        )
    for i, row in enumerate(rows):
        y = top + i * row_h
        out.append(
            f'<g class="row" data-script="{escape(row.script)}">'
            f'<text class="label" x="{_f(label_w - 8)}" y="{_f(y + row_h / 2 + 4)}"'
            f' text-anchor="end">{escape(_clip(row.script, 24))}</text>'
        )
        previous: Bar | None = None
        for bar in row.bars:
            b_end = bar.end if bar.end is not None else now
            x0, x1 = x(bar.start), x(b_end)
            w = max(x1 - x0, 3.0)
            if previous is not None and previous.end is not None and bar.start > previous.end:
                gy = _f(y + row_h / 2)
                wait = duration_text(bar.start - previous.end)
                out.append(
                    f'<line class="wait" x1="{_f(x(previous.end))}" y1="{gy}" x2="{_f(x0)}"'
                    f' y2="{gy}">{_title(f"waited {wait} before attempt {bar.attempt}")}</line>'
                )
            took = duration_text(b_end - bar.start)
            tip = f"{row.script} attempt {bar.attempt}: {bar.status}, {took}"
            if bar.end is None:
                tip += " so far"
            if bar.detail:
                tip += f" ({bar.detail})"
            hatch = (
                f'<rect class="over" x="{_f(x0)}" y="{_f(y + 5)}" width="{_f(w)}"'
                f' height="{_f(row_h - 10)}" fill="url(#{uid})"/>'
                if bar.status in FAILURES
                else ""
            )
            out.append(
                f'<a href="/runs/{bar.run_id}" class="attempt" data-attempt="{bar.attempt}"'
                f' data-status="{escape(bar.status)}">{_title(tip)}'
                f'<rect class="bar s-{escape(bar.status)}" x="{_f(x0)}" y="{_f(y + 5)}"'
                f' width="{_f(w)}" height="{_f(row_h - 10)}" rx="3"/>{hatch}'
                f'<text class="mark" x="{_f(x0 + w + 4)}" y="{_f(y + row_h / 2 + 4)}">'
                f"{symbol(bar.status)}{bar.attempt if len(row.bars) > 1 else ''}</text></a>"
            )
            previous = bar
        if row.skipped is not None:
            reason = f"skipped: {row.skipped}" if row.skipped else "skipped"
            out.append(
                f'<text class="skip s-skipped" x="{_f(label_w + 4)}" y="{_f(y + row_h / 2 + 4)}">'
                f"{SYMBOL[RunStatus.SKIPPED]} {escape(_clip(reason, 110))}"
                f"{_title(reason)}</text>"
            )
        out.append("</g>")
    out.append("</svg>")
    return Markup("".join(out))


def _axis_text(t: float, axis: list[float]) -> str:
    if t == 0:
        return "0s"
    step = axis[1] - axis[0] if len(axis) > 1 else t
    if step < 1:
        return f"{t:g}s"
    return duration_text(t)


# ---------------------------------------------------------------- the graph


@dataclass
class Layout:
    """Where each node of a graph goes: its layer (column) and place in it (row)."""

    layer: dict[str, int]
    order: list[list[str]]


def layered(nodes: Sequence[str], edges: Iterable[tuple[str, str]]) -> Layout:
    """A layered layout of a directed graph (edges ``dependency -> dependent``): each
    node one layer after its deepest dependency (cycles, which a valid configuration
    cannot have, are broken by ignoring edges that close them), nodes ordered within
    their layer by the mean place of their neighbours (a few sweeps each way)."""
    known = {n: i for i, n in enumerate(nodes)}
    preds: dict[str, list[str]] = {n: [] for n in nodes}
    succs: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in known and b in known and a != b and a not in preds[b]:
            preds[b].append(a)
            succs[a].append(b)
    layer: dict[str, int] = {n: 0 for n in nodes}
    waiting = {n: len(preds[n]) for n in nodes}
    ready = [n for n in nodes if waiting[n] == 0]
    done: set[str] = set()
    while len(done) < len(nodes):
        if not ready:  # a cycle: start again from its first node left
            ready = [next(n for n in nodes if n not in done)]
        n = ready.pop()
        if n in done:
            continue
        done.add(n)
        for m in succs[n]:
            if m not in done:
                layer[m] = max(layer[m], layer[n] + 1)
                waiting[m] -= 1
                if waiting[m] == 0:
                    ready.append(m)
    count = max(layer.values(), default=-1) + 1
    order: list[list[str]] = [[] for _ in range(count)]
    for n in nodes:
        order[layer[n]].append(n)
    place = {n: i for col in order for i, n in enumerate(col)}

    def sweep(cols: Iterable[int], neighbours: dict[str, list[str]]) -> None:
        for c in cols:
            col = order[c]

            def key(n: str, col: list[str] = col) -> tuple[float, int]:
                near = [place[m] for m in neighbours[n]]
                return (sum(near) / len(near) if near else place[n], known[n])

            col.sort(key=key)
            for i, n in enumerate(col):
                place[n] = i

    for _ in range(3):
        sweep(range(1, count), preds)
        sweep(range(count - 2, -1, -1), succs)
    return Layout(layer, order)


def graph(
    nodes: Sequence[str],
    edges: Sequence[tuple[str, str]],
    outcome: dict[str, str],
    uid: str = "gr",
) -> Markup:
    """The dependency graph, left to right: a box per script with its name and this
    run's outcome (``outcome``: script -> status, absent = not run), an arrow per edge
    ``dependency -> dependent``."""
    lay = layered(nodes, edges)
    node_w, node_h, gap_x, gap_y, pad = 150.0, 40.0, 60.0, 14.0, 10.0
    rows = max((len(c) for c in lay.order), default=1)
    width = pad * 2 + len(lay.order) * node_w + max(len(lay.order) - 1, 0) * gap_x
    height = pad * 2 + rows * node_h + (rows - 1) * gap_y
    pos: dict[str, tuple[float, float]] = {}
    for c, col in enumerate(lay.order):
        offset = (rows - len(col)) * (node_h + gap_y) / 2
        for i, n in enumerate(col):
            pos[n] = (pad + c * (node_w + gap_x), pad + offset + i * (node_h + gap_y))
    out = [
        f'<svg class="graph" viewBox="0 0 {_f(max(width, 1))} {_f(max(height, 1))}"'
        f' role="img" aria-labelledby="{uid}-t" data-nodes="{len(nodes)}"'
        f' data-edges="{len(edges)}" width="{_f(max(width, 1))}"'
        f' height="{_f(max(height, 1))}">',
        f'<title id="{uid}-t">Dependencies: an arrow from each dependency to the script'
        f" that waits for it</title>",
        DEFS.format(id=uid),
    ]
    for a, b in edges:
        if a not in pos or b not in pos:
            continue
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1, x2, y2 = ax + node_w, ay + node_h / 2, bx, by + node_h / 2
        mid = (x1 + x2) / 2
        out.append(
            f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}"'
            f' d="M{_f(x1)},{_f(y1)} C{_f(mid)},{_f(y1)} {_f(mid)},{_f(y2)} {_f(x2 - 2)},{_f(y2)}"'
            f' marker-end="url(#{uid}-arrow)"/>'
        )
    for n in nodes:
        x, y = pos[n]
        status = outcome.get(n)
        cls = f"s-{escape(status)}" if status else "s-never"
        state = f"{symbol(status)} {status}" if status else "not run"
        out.append(
            f'<g class="node {cls}" data-script="{escape(n)}">{_title(f"{n}: {state}")}'
            f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(node_w)}" height="{_f(node_h)}" rx="6"/>'
            f'<text class="name" x="{_f(x + 8)}" y="{_f(y + 16)}">{escape(_clip(n, 20))}</text>'
            f'<text class="state" x="{_f(x + 8)}" y="{_f(y + 32)}">{escape(state)}</text></g>'
        )
    out.append("</svg>")
    return Markup("".join(out))


# ---------------------------------------------------------------- the duration chart


@dataclass
class Point:
    """A finished run on the duration chart."""

    run_id: int
    status: str
    started: float
    duration: float
    anomaly: str | None = None


def duration_chart(
    points: Sequence[Point],
    band: tuple[float, float | None, float | None] | None = None,
    fmt: str = "%Y-%m-%d %H:%M",
    uid: str = "ch",
) -> Markup:
    """Bars of durations, oldest first, over a time axis (the runs' start times) and a
    duration axis; failed and timed-out runs hatched and marked ✗; the median and the
    band of usual durations (``band``: median, low, high) drawn behind the bars."""
    width, height = 640.0, 220.0
    left, right, top, bottom = 58.0, 10.0, 10.0, 40.0
    plot_w, plot_h = width - left - right, height - top - bottom
    longest = max((p.duration for p in points), default=0.0)
    if band is not None:
        longest = max(longest, band[0] * 1.1)
    axis = ticks(longest or 1.0, 5)
    top_value = max(longest, axis[-1]) or 1.0
    if axis[-1] < top_value:
        axis.append(round(axis[-1] + nice_step(longest or 1.0, 5), 6))
        top_value = axis[-1]
    base = top + plot_h

    def y(v: float) -> float:
        return base - plot_h * min(v, top_value) / top_value

    out = [
        f'<svg class="chart" viewBox="0 0 {_f(width)} {_f(height)}" role="group"'
        f' aria-labelledby="{uid}-t">',
        f'<title id="{uid}-t">Durations of the last {len(points)} finished runs</title>',
        DEFS.format(id=uid),
    ]
    for v in axis:
        gy = _f(y(v))
        out.append(
            f'<line class="grid" x1="{_f(left)}" y1="{gy}" x2="{_f(width - right)}" y2="{gy}"/>'
            f'<text class="tick y" x="{_f(left - 6)}" y="{_f(y(v) + 4)}" text-anchor="end">'
            f"{escape(_axis_text(v, axis))}</text>"
        )
    if band is not None:
        median, low, high = band
        if low is not None and high is not None:
            hy, ly = y(high), y(low)
            out.append(
                f'<rect class="band" x="{_f(left)}" y="{_f(hy)}" width="{_f(plot_w)}"'
                f' height="{_f(max(ly - hy, 1))}">'
                f"{_title(f'usual durations: {duration_text(low)} to {duration_text(high)}')}"
                "</rect>"
            )
        out.append(
            f'<line class="median" x1="{_f(left)}" y1="{_f(y(median))}" x2="{_f(width - right)}"'
            f' y2="{_f(y(median))}">{_title(f"median {duration_text(median)}")}</line>'
        )
    step = plot_w / max(len(points), 30)
    for i, p in enumerate(points):
        h = max(2.0, base - y(p.duration))
        bx, bw = left + i * step + step * 0.12, step * 0.76
        tip = f"#{p.run_id} {p.status} {duration_text(p.duration)}, {_when(p.started, fmt)}"
        if p.anomaly:
            tip += f" ({p.anomaly})"
        bad = p.status in FAILURES
        out.append(
            f'<a href="/runs/{p.run_id}"><rect class="bar s-{escape(p.status)}" x="{_f(bx)}"'
            f' y="{_f(base - h)}" width="{_f(bw)}" height="{_f(h)}">{_title(tip)}</rect>'
        )
        if bad:
            out.append(
                f'<rect class="over" x="{_f(bx)}" y="{_f(base - h)}" width="{_f(bw)}"'
                f' height="{_f(h)}" fill="url(#{uid})"/><text class="mark s-{escape(p.status)}"'
                f' x="{_f(bx + bw / 2)}" y="{_f(base - h - 3)}" text-anchor="middle">'
                f"{symbol(p.status)}</text>"
            )
        out.append("</a>")
    out.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(base)}" x2="{_f(width - right)}"'
        f' y2="{_f(base)}"/><line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}"'
        f' y2="{_f(base)}"/>'
    )
    if points:
        placed = -1e9
        for i in sorted({0, len(points) // 2, len(points) - 1}):
            tx = left + i * step + step / 2
            if tx - placed < 120:  # labels never overlap
                continue
            placed = tx
            anchor = "start" if i == 0 else "end" if tx > width - right - 60 else "middle"
            out.append(
                f'<text class="tick x" x="{_f(tx)}" y="{_f(base + 16)}" text-anchor="{anchor}">'
                f"{escape(_when(points[i].started, fmt))}</text>"
            )
    out.append(
        f'<text class="axis-name" x="{_f(left)}" y="{_f(height - 4)}">run start time</text>'
        f'<text class="axis-name" x="{_f(width - right)}" y="{_f(height - 4)}"'
        f' text-anchor="end">bar height: duration</text></svg>'
    )
    return Markup("".join(out))


def _when(ts: float, fmt: str) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).astimezone().strftime(fmt)
    except (ValueError, OverflowError, OSError):
        return "?"
