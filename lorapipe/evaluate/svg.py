"""Small inline-SVG charts for the HTML report: no matplotlib, no JavaScript, no network.

Each function returns one ``<svg>`` element as a string, sized by ``viewBox`` so it scales with its
container. All text is HTML-escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
from html import escape

FONT = "font-family=\"inherit\""
AXIS = "#94a3b8"
GRID = "#e2e8f0"
INK = "#334155"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 10))
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 0.01:
        return f"{v:.2g}"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _legend(items: list[tuple[str, str]], x: float, y: float) -> str:
    out = []
    for name, color in items:
        out.append(f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="12" height="12" rx="2" fill="{color}"/>'
                   f'<text x="{x + 17:.1f}" y="{y + 1:.1f}" font-size="12" fill="{INK}">{escape(name)}</text>')
        x += 30 + 7.2 * len(name)
    return "".join(out)


def line_chart(series: list[tuple[str, str, list[tuple[float, float]]]], *, width: int = 520, height: int = 300,
               x_label: str = "", y_label: str = "", element_id: str = "") -> str:
    """Lines (with dots) for each ``(name, color, [(x, y), ...])``; a legend on top."""
    pts = [p for _, _, s in series for p in s if math.isfinite(p[1])]
    if not pts:
        return ""
    left, right, top, bottom = 56, 16, 34, 44
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xt = nice_ticks(min(xs), max(xs))
    yt = nice_ticks(min(0.0, min(ys)) if min(ys) >= 0 and min(ys) < 0.3 * max(ys) else min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    out = [f'<svg {_id(element_id)}viewBox="0 0 {width} {height}" role="img" {FONT} class="chart">']
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
                   f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end" '
                   f'fill="{AXIS}">{_fmt(t)}</text>')
    for t in xt:
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 18}" font-size="11" text-anchor="middle" '
                   f'fill="{AXIS}">{_fmt(t)}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{AXIS}"/>')
    for _name, color, s in series:
        s = [p for p in s if math.isfinite(p[1])]
        if not s:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(s))
        out.append(f'<path d="{path}" fill="none" stroke="{color}" stroke-width="2.2" '
                   'stroke-linejoin="round" stroke-linecap="round"/>')
        if len(s) <= 60:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in s]
    out.append(_legend([(n, c) for n, c, s in series if s], left, 18))
    if x_label:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" font-size="12" text-anchor="middle" '
                   f'fill="{INK}">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" font-size="12" '
                   f'text-anchor="middle" fill="{INK}">{escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def grouped_bars(categories: list[str], series: list[tuple[str, str, list[float]]], *, width: int = 520,
                 height: int = 300, y_max: float | None = None, x_label: str = "", y_label: str = "",
                 element_id: str = "", value_fmt: str = "{:.0f}") -> str:
    """Vertical bars: one group per category, one bar per ``(name, color, values)`` series."""
    if not categories or not series:
        return ""
    left, right, top, bottom = 48, 12, 34, 48
    top_v = y_max if y_max is not None else max((v for _, _, vs in series for v in vs), default=1) or 1
    yt = nice_ticks(0, top_v, 4)
    y1 = yt[-1]
    pw, ph = width - left - right, height - top - bottom
    group = pw / len(categories)
    bar = min(34.0, group * 0.8 / len(series))

    def sy(y: float) -> float:
        return top + ph - y / (y1 or 1) * ph

    out = [f'<svg {_id(element_id)}viewBox="0 0 {width} {height}" role="img" {FONT} class="chart">']
    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="{GRID}"/>'
                   f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end" '
                   f'fill="{AXIS}">{_fmt(t)}</text>')
    for g, cat in enumerate(categories):
        gx = left + g * group + (group - bar * len(series)) / 2
        for k, (_, color, values) in enumerate(series):
            v = values[g]
            x, y = gx + k * bar, sy(max(v, 0))
            out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{top + ph - y:.1f}" '
                       f'rx="2" fill="{color}"><title>{escape(cat)}: {value_fmt.format(v)}</title></rect>')
            if v > 0 and bar >= 16:
                out.append(f'<text x="{x + bar / 2:.1f}" y="{y - 4:.1f}" font-size="10" text-anchor="middle" '
                           f'fill="{INK}">{escape(value_fmt.format(v))}</text>')
        out.append(f'<text x="{left + (g + 0.5) * group:.1f}" y="{top + ph + 17}" font-size="11" '
                   f'text-anchor="middle" fill="{INK}">{escape(cat)}</text>')
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="{AXIS}"/>')
    out.append(_legend([(n, c) for n, c, _ in series], left, 18))
    if x_label:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 8}" font-size="12" text-anchor="middle" '
                   f'fill="{INK}">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(13,{top + ph / 2:.1f}) rotate(-90)" font-size="12" '
                   f'text-anchor="middle" fill="{INK}">{escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def hbars(labels: list[str], series: list[tuple[str, str, list[float]]], *, x_max: float = 5.0, width: int = 1040,
          row: int = 34, deltas: list[float] | None = None, element_id: str = "") -> str:
    """Horizontal grouped bars (one row per label), e.g. per-criterion means; optional delta column."""
    if not labels:
        return ""
    left, right, top = 200, 90, 34
    height = top + row * len(labels) + 28
    pw = width - left - right
    bar = (row - 8) / len(series)
    out = [f'<svg {_id(element_id)}viewBox="0 0 {width} {height}" role="img" {FONT} class="chart">']
    for t in nice_ticks(0, x_max, 5):
        x = left + t / x_max * pw
        if t <= x_max + 1e-9:
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{top + row * len(labels)}" '
                       f'stroke="{GRID}"/><text x="{x:.1f}" y="{top + row * len(labels) + 16}" font-size="11" '
                       f'text-anchor="middle" fill="{AXIS}">{_fmt(t)}</text>')
    for i, label in enumerate(labels):
        y = top + i * row + 4
        shown = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text x="{left - 10}" y="{y + (row - 8) / 2 + 4:.1f}" font-size="12" text-anchor="end" '
                   f'fill="{INK}"><title>{escape(label)}</title>{escape(shown)}</text>')
        for k, (name, color, values) in enumerate(series):
            w = max(0.0, min(values[i], x_max)) / x_max * pw
            out.append(f'<rect x="{left}" y="{y + k * bar:.1f}" width="{max(w, 1.5):.1f}" height="{bar - 2:.1f}" '
                       f'rx="2" fill="{color}"><title>{escape(name)}: {values[i]:.2f}</title></rect>'
                       f'<text x="{left + w + 5:.1f}" y="{y + k * bar + bar / 2 + 2:.1f}" font-size="10" '
                       f'fill="{AXIS}">{values[i]:.2f}</text>')
        if deltas is not None:
            d = deltas[i]
            color = "#059669" if d > 0 else ("#dc2626" if d < 0 else AXIS)
            out.append(f'<text x="{width - 10}" y="{y + (row - 8) / 2 + 5:.1f}" font-size="13" font-weight="600" '
                       f'text-anchor="end" fill="{color}">{d:+.2f}</text>')
    out.append(_legend([(n, c) for n, c, _ in series], left, 18))
    out.append("</svg>")
    return "".join(out)


def interval(point: float, lo: float, hi: float, *, width: int = 420, height: int = 64, color: str = "#4f46e5",
             element_id: str = "") -> str:
    """A 0–100 % axis with the interval ``[lo, hi]`` as a band, ``point`` as a dot and 50 % marked."""
    left, right = 14, 14
    pw = width - left - right
    y = 24

    def sx(v: float) -> float:
        return left + max(0.0, min(1.0, v)) * pw

    out = [f'<svg {_id(element_id)}viewBox="0 0 {width} {height}" role="img" {FONT} class="chart">',
           (f'<line x1="{left}" x2="{left + pw}" y1="{y}" y2="{y}" stroke="{GRID}" stroke-width="8" '
            'stroke-linecap="round"/>')]
    if math.isfinite(lo) and math.isfinite(hi):
        out.append(f'<line x1="{sx(lo):.1f}" x2="{sx(hi):.1f}" y1="{y}" y2="{y}" stroke="{color}" '
                   'stroke-opacity="0.35" stroke-width="14" stroke-linecap="round"/>')
    out.append(f'<line x1="{sx(0.5):.1f}" x2="{sx(0.5):.1f}" y1="{y - 14}" y2="{y + 14}" stroke="{INK}" '
               'stroke-dasharray="3 3"/>')
    if math.isfinite(point):
        out.append(f'<circle cx="{sx(point):.1f}" cy="{y}" r="8" fill="{color}" stroke="white" stroke-width="2"/>')
    for v, label in ((0, "0%"), (0.5, "50% = no difference"), (1, "100%")):
        anchor = "start" if v == 0 else ("end" if v == 1 else "middle")
        out.append(f'<text x="{sx(v):.1f}" y="{y + 32}" font-size="11" text-anchor="{anchor}" '
                   f'fill="{AXIS}">{label}</text>')
    out.append("</svg>")
    return "".join(out)


def stacked(parts: list[tuple[str, str, int]], *, width: int = 420, height: int = 40, element_id: str = "") -> str:
    """One horizontal bar split into ``(name, color, count)`` parts, each labelled with its count."""
    total = sum(c for _, _, c in parts) or 1
    out = [f'<svg {_id(element_id)}viewBox="0 0 {width} {height}" role="img" {FONT} class="chart">']
    x = 0.0
    for name, color, count in parts:
        w = count / total * width
        if w > 0:
            out.append(f'<rect x="{x:.1f}" y="4" width="{w:.1f}" height="{height - 8}" fill="{color}">'
                       f'<title>{escape(name)}: {count}</title></rect>')
            if w > 60:
                out.append(f'<text x="{x + w / 2:.1f}" y="{height / 2 + 4:.1f}" font-size="12" font-weight="600" '
                           f'text-anchor="middle" fill="white">{count} {escape(name)}</text>')
        x += w
    out.append("</svg>")
    return "".join(out)


def _id(element_id: str) -> str:
    return f'id="{escape(element_id)}" ' if element_id else ""
