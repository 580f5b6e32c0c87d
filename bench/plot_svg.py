#!/usr/bin/env python3
"""Dependency-free SVG line charts: several panels side by side, one legend.

    from plot_svg import line_chart
    line_chart([{"title": "FLOPs",                      # optional
                 "x_label": "executed FLOPs share", "y_label": "accuracy",
                 "x_range": [0, 1.05], "y_range": None,   # optional, else from the data
                 "series": [{"name": "learned", "points": [[0.5, 0.91], [0.75, 0.93]],
                             "markers_only": False, "sort": True,  # optional; sort: join the points by x
                             "color": "#0072b2", "dash": "6,3", "marker": "square", "fill": "white"}],  # optional
                 "ref_points": [{"name": "dense", "x": 1.0, "y": 0.94}],
                 "ref_lines": [{"name": "dense - 1 point", "y": 0.93}]}],  # or "x": ... for a vertical line
               "MoD on CLINC150", "out.svg")

A series keeps the same style in every panel (styles are keyed by name): colour,
dash and marker all vary, so series stay apart in greyscale. Points with y (or x)
None are skipped. Command line: plot_svg.py spec.json out.svg, where spec.json is
{"title": ..., "panels": [...]}.
"""

import json
import math
import sys
from xml.sax.saxutils import escape

COLORS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000", "#7f7f7f"]  # Okabe-Ito
DASHES = ["", "7,4", "2,3", "9,3,2,3", "4,2", "1,4"]
MARKERS = ["circle", "square", "triangle", "diamond", "down", "cross", "plus"]
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
PW, PH = 440, 330                  # one panel
ML, MR, MT, MB = 64, 16, 30, 50    # plot area margins inside a panel
TOP = 36                           # room for the title
NOTE = 'font-size="11" stroke="white" stroke-width="3" paint-order="stroke"'  # small label with a halo


def nice_ticks(lo, hi, target=6):
    """Round axis limits and ticks at 1-2-5 steps covering [lo, hi]."""
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * 0.999)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    ticks = [i * step for i in range(first, last + 1)]
    return ticks[0], ticks[-1], ticks, max(0, -math.floor(math.log10(step) + 1e-9))


def _axis(rng, fixed):
    """Limits, ticks and decimals: a given range as is, else the data's padded by 5% each side."""
    lo, hi = min(rng), max(rng)
    if not fixed:
        pad = (hi - lo) * 0.05 or abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    _, _, ticks, dec = nice_ticks(lo, hi)
    return lo, hi, [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9], dec


def _marker(kind, x, y, color, r=4.5, fill=None):
    fill = fill or color
    s = 'stroke="%s" stroke-width="1.3" fill="%s"' % (color, fill)
    if kind == "circle":
        return '<circle cx="%.1f" cy="%.1f" r="%.1f" %s/>' % (x, y, r, s)
    if kind == "square":
        return '<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" %s/>' % (x - r * .85, y - r * .85,
                                                                           r * 1.7, r * 1.7, s)
    shapes = {"triangle": [(0, -1.2), (1.1, .8), (-1.1, .8)], "down": [(0, 1.2), (1.1, -.8), (-1.1, -.8)],
              "diamond": [(0, -1.3), (1.1, 0), (0, 1.3), (-1.1, 0)],
              "star": [(math.sin(k * math.pi / 5) * (1.6 if k % 2 == 0 else .7),
                        -math.cos(k * math.pi / 5) * (1.6 if k % 2 == 0 else .7)) for k in range(10)]}
    if kind in shapes:
        pts = " ".join("%.1f,%.1f" % (x + dx * r, y + dy * r) for dx, dy in shapes[kind])
        return '<polygon points="%s" %s/>' % (pts, s)
    d = r * 1.1  # cross / plus: strokes only
    segs = ([(-d, -d, d, d), (-d, d, d, -d)] if kind == "cross" else [(-d, 0, d, 0), (0, -d, 0, d)])
    return "".join('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>'
                   % (x + a, y + b, x + c, y + e, color) for a, b, c, e in segs)


def _styles(panels):
    styles = {}
    for p in panels:
        for s in p.get("series", []):
            if s["name"] not in styles:
                i = len(styles)
                styles[s["name"]] = {"color": s.get("color", COLORS[i % len(COLORS)]),
                                     "dash": s.get("dash", DASHES[i % len(DASHES)]),
                                     "marker": s.get("marker", MARKERS[i % len(MARKERS)]),
                                     "fill": s.get("fill"),  # marker fill, e.g. "white" for hollow
                                     "markers_only": s.get("markers_only", False)}
    return styles


def _valid(points):
    return [(float(x), float(y)) for x, y in points if x is not None and y is not None]


def _panel(p, ox, styles, idx):
    out = []
    x0, y0, w, h = ox + ML, TOP + MT, PW - ML - MR, PH - MT - MB
    xs, ys = [], []
    for s in p.get("series", []):
        for x, y in _valid(s["points"]):
            xs.append(x); ys.append(y)
    for r in p.get("ref_points", []):
        xs.append(r["x"]); ys.append(r["y"])
    for r in p.get("ref_lines", []):
        (ys if "y" in r else xs).append(r.get("y", r.get("x")))
    xr, yr = p.get("x_range") or (min(xs or [0]), max(xs or [1])), p.get("y_range") or (min(ys or [0]), max(ys or [1]))
    xlo, xhi, xt, xd = _axis(xr, bool(p.get("x_range")))
    ylo, yhi, yt, yd = _axis(yr, bool(p.get("y_range")))
    X = lambda v: x0 + (v - xlo) / (xhi - xlo) * w
    Y = lambda v: y0 + h - (v - ylo) / (yhi - ylo) * h
    clip = "clip%d" % idx
    out.append('<clipPath id="%s"><rect x="%.1f" y="%.1f" width="%.1f" height="%.1f"/></clipPath>'
               % (clip, x0 - 6, y0 - 6, w + 12, h + 12))
    for t in xt:
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>' % (X(t), y0, X(t), y0 + h))
        out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="12">%.*f</text>'
                   % (X(t), y0 + h + 17, xd, t))
    for t in yt:
        out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e4e4e4"/>' % (x0, Y(t), x0 + w, Y(t)))
        out.append('<text x="%.1f" y="%.1f" text-anchor="end" font-size="12">%.*f</text>' % (x0 - 6, Y(t) + 4, yd, t))
    out.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="none" stroke="#333"/>' % (x0, y0, w, h))
    out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13">%s</text>'
               % (x0 + w / 2, y0 + h + 38, escape(p.get("x_label", ""))))
    out.append('<text transform="translate(%.1f,%.1f) rotate(-90)" text-anchor="middle" font-size="13">%s</text>'
               % (ox + 16, y0 + h / 2, escape(p.get("y_label", ""))))
    if p.get("title"):
        out.append('<text x="%.1f" y="%.1f" text-anchor="middle" font-size="14" font-weight="bold">%s</text>'
                   % (x0 + w / 2, y0 - 10, escape(p["title"])))
    out.append('<g clip-path="url(#%s)">' % clip)
    for r in p.get("ref_lines", []):
        if "y" in r:
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="3,3"/>'
                       % (x0, Y(r["y"]), x0 + w, Y(r["y"])))
            out.append('<text x="%.1f" y="%.1f" %s fill="#555">%s</text>'
                       % (x0 + 5, Y(r["y"]) - 4, NOTE, escape(r.get("name", ""))))
        else:
            out.append('<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555" stroke-dasharray="3,3"/>'
                       % (X(r["x"]), y0, X(r["x"]), y0 + h))
            out.append('<text x="%.1f" y="%.1f" %s fill="#555">%s</text>'
                       % (X(r["x"]) + 4, y0 + 12, NOTE, escape(r.get("name", ""))))
    for s in p.get("series", []):
        st, pts = styles[s["name"]], _valid(s["points"])
        pts = sorted(pts) if s.get("sort", True) else pts
        if len(pts) > 1 and not st["markers_only"]:
            dash = ' stroke-dasharray="%s"' % st["dash"] if st["dash"] else ""
            out.append('<polyline points="%s" fill="none" stroke="%s" stroke-width="1.8"%s/>'
                       % (" ".join("%.1f,%.1f" % (X(x), Y(y)) for x, y in pts), st["color"], dash))
        out.extend(_marker(st["marker"], X(x), Y(y), st["color"], fill=st["fill"]) for x, y in pts)
    out.append("</g>")
    for r in p.get("ref_points", []):  # unclipped, so a point on the frame shows whole
        if xlo <= r["x"] <= xhi and ylo <= r["y"] <= yhi:
            out.append(_marker("star", X(r["x"]), Y(r["y"]), "#000", r=5))
            out.append('<text x="%.1f" y="%.1f" text-anchor="end" %s>%s</text>'
                       % (X(r["x"]) - 10, Y(r["y"]) + 4, NOTE, escape(r.get("name", ""))))
    return out


def line_chart(panels, title, out_path=None):
    """Draw the panels side by side; write out_path (if given) and return the SVG text."""
    styles = _styles(panels)
    items = [(n, st) for n, st in styles.items()]
    refs = []
    for p in panels:
        for r in p.get("ref_points", []):
            if r.get("name") and ("point", r["name"]) not in refs:
                refs.append(("point", r["name"]))
    items += [(n, None) for _, n in refs]
    width = PW * len(panels)
    item_w = max(120, 7 * max([len(n) for n, _ in items] or [0]) + 44)
    per_row = max(1, (width - 20) // item_w)
    rows = (len(items) + per_row - 1) // per_row
    height = TOP + PH + rows * 22 + 12
    # A bold character is ~0.6 em wide: a long title over one panel gets a smaller font.
    title_size = min(16.0, (width - 20) / (0.6 * max(len(title or ""), 1)))
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s fill="#111">'
           % (width, height, width, height, FONT),
           '<rect width="100%" height="100%" fill="white"/>',
           '<text x="%.1f" y="24" text-anchor="middle" font-size="%.1f" font-weight="bold">%s</text>'
           % (width / 2, title_size, escape(title or ""))]
    for i, p in enumerate(panels):
        out.extend(_panel(p, i * PW, styles, i))
    for k, (name, st) in enumerate(items):
        lx, ly = 14 + (k % per_row) * item_w, TOP + PH + 6 + (k // per_row) * 22
        if st is None:
            out.append(_marker("star", lx + 15, ly, "#000", r=5))
        else:
            if not st["markers_only"]:
                dash = ' stroke-dasharray="%s"' % st["dash"] if st["dash"] else ""
                out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.8"%s/>'
                           % (lx, ly, lx + 30, ly, st["color"], dash))
            out.append(_marker(st["marker"], lx + 15, ly, st["color"], fill=st["fill"]))
        out.append('<text x="%d" y="%d" font-size="12">%s</text>' % (lx + 38, ly + 4, escape(name)))
    out.append("</svg>")
    svg = "\n".join(out) + "\n"
    if out_path:
        with open(out_path, "w", encoding="utf-8") as f:
            f.write(svg)
    return svg


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_svg.py spec.json out.svg   (spec: {\"title\": ..., \"panels\": [...]})")
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    line_chart(spec["panels"], spec.get("title", ""), sys.argv[2])


if __name__ == "__main__":
    main()
