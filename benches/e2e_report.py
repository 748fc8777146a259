#!/usr/bin/env python3
"""Turns the runs of benches/e2e.sh into TABLE.md and chart.svg.

    python3 benches/e2e_report.py RESULTS_DIR

RESULTS_DIR holds runs.tsv (one line per run, tool and step: run, tool,
step, wall seconds, peak RSS KiB, bytes stored or -) and meta.txt (key=value
lines: date, machine, command, image...). Writes RESULTS_DIR/TABLE.md (the
medians, and each step's time as a multiple of the zstd reference of the same
run) and RESULTS_DIR/chart.svg (seconds per step per tool; bytes stored per
step per tool). Only the standard library: the SVG is written by hand.
"""

import math
import statistics
import sys
from collections import OrderedDict, defaultdict
from pathlib import Path

REFERENCE = "zstd -3 -T0"
COLORS = {
    "diskvault": "#1f77b4",
    "baseline": "#9ecae1",
    "restic": "#ff7f0e",
    "rustic": "#2ca02c",
    "zstd -3 -T0": "#7f7f7f",
    "b3sum": "#a0a0a0",
    "cp --sparse=always": "#c7c7c7",
}
# Short labels for the chart's groups.
SHORT = {
    "backup v1": "backup v1",
    "backup v2 (next day)": "backup v2 (next day)",
    "backup v2 again (no change)": "backup v2 again",
    "restore v2": "restore v2",
}


def load(results):
    rows = []
    with open(results / "runs.tsv") as f:
        for line in f:
            if not line.strip() or line.startswith("run\t"):
                continue
            run, tool, step, wall, rss, stored = line.rstrip("\n").split("\t")
            rows.append(
                dict(
                    run=int(run),
                    tool=tool,
                    step=step,
                    wall=float(wall),
                    rss=int(rss),
                    stored=None if stored == "-" else int(stored),
                )
            )
    meta = OrderedDict()
    with open(results / "meta.txt") as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return rows, meta


def summarize(rows):
    """(tool, step) -> medians, in first-seen order."""
    groups = OrderedDict()
    ref = {r["run"]: r["wall"] for r in rows if r["tool"] == REFERENCE}
    for r in rows:
        groups.setdefault((r["tool"], r["step"]), []).append(r)
    out = OrderedDict()
    for key, rs in groups.items():
        walls = [r["wall"] for r in rs]
        ratios = [r["wall"] / ref[r["run"]] for r in rs if ref.get(r["run"])]
        stored = [r["stored"] for r in rs if r["stored"] is not None]
        out[key] = dict(
            wall=statistics.median(walls),
            lo=min(walls),
            hi=max(walls),
            runs=len(rs),
            ratio=statistics.median(ratios) if ratios else None,
            rss=statistics.median(r["rss"] for r in rs),
            stored=int(statistics.median(stored)) if stored else None,
        )
    return out


def mib(n):
    return f"{n / 1048576:,.1f} MiB"


def table(summary, meta):
    logical = int(meta.get("image_bytes", "0")) or None
    lines = [
        f"Measured {meta.get('date', '?')} on {meta.get('machine', '?')}, "
        f"diskvault {meta.get('commit', '?')}; {meta.get('tools', '')}.",
        "",
        f"Command: `{meta.get('command', 'benches/e2e.sh')}`",
        "",
        f"Images: {meta.get('images', '?')}",
        "",
        "| tool | step | seconds, median (min-max) | MB/s of image | time / zstd -T0 | peak RSS MiB | bytes stored |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for (tool, step), s in summary.items():
        rate = f"{logical / s['wall'] / 1e6:,.0f}" if logical and s["wall"] > 0 else "-"
        ratio = f"{s['ratio']:.2f}x" if s["ratio"] is not None else "-"
        stored = "-" if s["stored"] is None else f"{s['stored']:,}"
        if s["stored"] is not None and s["stored"] >= 1048576:
            stored += f" ({mib(s['stored'])})"
        lines.append(
            f"| {tool} | {step} | {s['wall']:.2f} ({s['lo']:.2f}-{s['hi']:.2f}) | {rate} "
            f"| {ratio} | {s['rss'] / 1024:,.0f} | {stored} |"
        )
    runs = max(s["runs"] for s in summary.values())
    lines += [
        "",
        (f"Medians of {runs} runs" if runs > 1 else "One run")
        + "; each run measures every row in turn on the same images. "
        "\"time / zstd -T0\" is the median over runs of the step's time divided by the time "
        "`zstd -3 -T0` took to compress v1 in the same run, which is steadier than seconds "
        "on a shared machine.",
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- the chart


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_ticks(top, n=5):
    raw = top / n
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(int(top / step) + 2) if i * step <= top * 1.0001 + step]


def human_bytes(n):
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


class Svg:
    def __init__(self, width, height):
        self.w, self.h = width, height
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", fill="#222", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(
            f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}"{tr}>{esc(s)}</text>'
        )

    def line(self, x1, y1, x2, y2, stroke="#ccc", width=1):
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"/>'
        )

    def rect(self, x, y, w, h, fill, title):
        self.add(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(h, 0.5):.1f}" '
            f'fill="{fill}"><title>{esc(title)}</title></rect>'
        )

    def render(self):
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" font-family="DejaVu Sans, Arial, sans-serif">'
            f'<rect width="100%" height="100%" fill="white"/>'
        )
        return head + "\n".join(self.parts) + "</svg>\n"


def panel(svg, top, height, title, groups, value, scale, fmt, tick_label, ticks):
    """Grouped bars: groups is [(label, [(tool, entry)])]; scale maps a value
    to 0..1 of the plot height."""
    left, right = 80, svg.w - 20
    plot_top, plot_bottom = top + 30, top + height - 40
    svg.text(left, top + 16, title, size=14, weight="bold")
    for t in ticks:
        y = plot_bottom - scale(t) * (plot_bottom - plot_top)
        svg.line(left, y, right, y)
        svg.text(left - 6, y + 4, tick_label(t), size=11, anchor="end", fill="#555")
    svg.line(left, plot_bottom, right, plot_bottom, stroke="#333")
    slot = (right - left) / len(groups)
    for gi, (label, bars) in enumerate(groups):
        gx = left + gi * slot
        bw = min(42, (slot - 20) / max(1, len(bars)))
        x0 = gx + (slot - bw * len(bars)) / 2
        for bi, (tool, entry) in enumerate(bars):
            v = value(entry)
            frac = scale(v) if v is not None else 0
            h = frac * (plot_bottom - plot_top)
            x = x0 + bi * bw
            svg.rect(x + 2, plot_bottom - h, bw - 4, h, COLORS.get(tool, "#444"), f"{tool}: {fmt(v)}")
            svg.text(x + bw / 2, plot_bottom - h - 4, fmt(v), size=10, anchor="middle")
        svg.text(gx + slot / 2, plot_bottom + 18, label, size=12, anchor="middle")


def chart(summary, meta):
    tools = [
        t for t in ("baseline", "diskvault", "restic", "rustic") if any(k[0] == t for k in summary)
    ]
    refs = [k for k in summary if k[0] not in tools]
    steps = [s for s in SHORT if any((t, s) in summary for t in tools)]
    svg = Svg(960, 780)
    svg.text(20, 24, "diskvault end-to-end benchmark (benches/e2e.sh)", size=17, weight="bold")
    svg.text(
        20,
        44,
        f"{meta.get('images', '')}; medians of {max(s['runs'] for s in summary.values())} runs",
        size=11,
        fill="#444",
    )
    svg.text(
        20,
        60,
        f"{meta.get('date', '')}, {meta.get('machine', '')}",
        size=11,
        fill="#444",
    )
    # Legend.
    x = 20
    for t in tools + [r[0] for r in refs]:
        svg.rect(x, 70, 12, 12, COLORS.get(t, "#444"), t)
        svg.text(x + 16, 80, t, size=11)
        x += 24 + 7 * len(t)

    # Panel 1: seconds.
    groups = [(SHORT[s], [(t, summary.get((t, s))) for t in tools]) for s in steps]
    if refs:
        groups.append(("references", [(r[0], summary[r]) for r in refs]))
    top = max(e["wall"] for _, bars in groups for _, e in bars if e) * 1.12
    ticks = nice_ticks(top)
    top = max(top, ticks[-1])
    panel(
        svg,
        95,
        340,
        "Seconds per step (median; lower is better)",
        groups,
        lambda e: e["wall"] if e else None,
        lambda v: (v or 0) / top,
        lambda v: "-" if v is None else f"{v:.2f}",
        lambda t: f"{t:g} s",
        ticks,
    )

    # Panel 2: bytes stored, log scale.
    store_steps = [s for s in steps if s.startswith("backup")]
    groups = [(SHORT[s], [(t, summary.get((t, s))) for t in tools]) for s in store_steps]
    zst = [r for r in refs if summary[r]["stored"] is not None]
    if zst:
        groups.append(("zstd -3 of v1", [(r[0], summary[r]) for r in zst]))
    values = [e["stored"] for _, bars in groups for _, e in bars if e and e["stored"]]
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 1e10
    lo = 100.0

    def scale(v):
        if not v:
            return 0
        # A quarter of a decade above the top tick, for the labels.
        span = math.log10(hi) + 0.25 - math.log10(lo)
        return max(0.0, (math.log10(max(v, lo)) - math.log10(lo)) / span)

    ticks = [10**e for e in range(int(math.log10(lo)), int(math.log10(hi)) + 1)]
    panel(
        svg,
        440,
        330,
        "Bytes stored per step (log scale; lower is better)",
        groups,
        lambda e: e["stored"] if e else None,
        scale,
        lambda v: "-" if v is None else human_bytes(v),
        human_bytes,
        ticks,
    )
    return svg.render()


def main():
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench-results")
    rows, meta = load(results)
    summary = summarize(rows)
    (results / "TABLE.md").write_text(table(summary, meta))
    (results / "chart.svg").write_text(chart(summary, meta))
    print(f"wrote {results / 'TABLE.md'} and {results / 'chart.svg'}", file=sys.stderr)


if __name__ == "__main__":
    main()
