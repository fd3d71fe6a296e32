"""A dependency-free SVG scatter plot: nDCG@10 against latency per query, one point per
(ranker, dataset). Written as plain SVG so the demo needs no plotting library."""

from __future__ import annotations

import math
from pathlib import Path
from xml.sax.saxutils import escape

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")


def quality_latency_svg(points: list[dict], path: str | Path, *, title: str) -> Path:
    """``points``: dicts with ``ranker``, ``dataset``, ``seconds_per_query``, ``nDCG@10``.
    The x axis is log-scaled latency (seconds per query), the y axis nDCG@10."""
    width, height, left, right, top, bottom = 820, 440, 70, 260, 40, 50
    lat = [max(p["seconds_per_query"], 1e-4) for p in points]
    lo, hi = math.log10(min(lat)) - 0.2, math.log10(max(lat)) + 0.2
    ys = [p["nDCG@10"] for p in points]
    y_lo, y_hi = max(0.0, min(ys) - 0.05), min(1.0, max(ys) + 0.05)

    def x(v: float) -> float:
        return left + (math.log10(max(v, 1e-4)) - lo) / max(hi - lo, 1e-9) * (width - left - right)

    def y(v: float) -> float:
        return height - bottom - (v - y_lo) / max(y_hi - y_lo, 1e-9) * (height - top - bottom)

    rankers = sorted({p["ranker"] for p in points})
    datasets = sorted({p["dataset"] for p in points})
    color = {r: COLORS[i % len(COLORS)] for i, r in enumerate(rankers)}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" '
        f'y2="{height - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="black"/>',
        f'<text x="{(left + width - right) / 2}" y="{height - 12}" text-anchor="middle">'
        "latency per query (s, log scale)</text>",
        f'<text x="18" y="{(top + height - bottom) / 2}" transform="rotate(-90 18 '
        f'{(top + height - bottom) / 2})" text-anchor="middle">nDCG@10</text>',
    ]
    for exp in range(math.floor(lo), math.ceil(hi) + 1):
        if lo <= exp <= hi:
            tick_y = height - bottom + 16
            out.append(f'<text x="{x(10**exp)}" y="{tick_y}" text-anchor="middle">1e{exp}</text>')
    for i in range(5):
        v = y_lo + i * (y_hi - y_lo) / 4
        out.append(f'<text x="{left - 8}" y="{y(v) + 4}" text-anchor="end">{v:.2f}</text>')
    for p in points:
        cx, cy, c = x(p["seconds_per_query"]), y(p["nDCG@10"]), color[p["ranker"]]
        if datasets.index(p["dataset"]) % 2 == 0:
            out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{c}"/>')
        else:
            out.append(
                f'<rect x="{cx - 6:.1f}" y="{cy - 6:.1f}" width="12" height="12" fill="{c}"/>'
            )
    for i, r in enumerate(rankers):
        ly = top + 10 + 18 * i
        out.append(f'<circle cx="{width - right + 20}" cy="{ly}" r="6" fill="{color[r]}"/>')
        out.append(f'<text x="{width - right + 32}" y="{ly + 4}">{escape(r)}</text>')
    for i, d in enumerate(datasets):
        ly = top + 10 + 18 * (len(rankers) + 1 + i)
        marker = "circle" if i % 2 == 0 else "square"
        out.append(f'<text x="{width - right + 14}" y="{ly + 4}">{marker}: {escape(d)}</text>')
    out.append("</svg>")
    path = Path(path)
    path.write_text("\n".join(out) + "\n")
    return path
