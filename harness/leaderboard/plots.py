"""The leaderboard's plots (matplotlib Figure API on an Agg canvas, no pyplot state), each a function
of the rendered rows (`harness.leaderboard.render.build_rows`) returning its `Figure`:

* `bytes_figure` -> ``bpb_vs_bytes.png``: val_bpb against bytes_total in MB (1 MB = 1,000,000 bytes),
  a dashed line at the 16,000,000-byte cap, every point labelled with its short name; one panel per
  table (our full / smoke runs, upstream tracks), one series per dataset fingerprint.
* `progression_figure` -> ``progression.png``: every score by date and the best so far as a step
  line (running minimum, one per fingerprint), labelled with the run that set it; one panel per
  table, so our runs and upstream records are never mixed; the date axis is padded by about a
  day, so runs of one day span three days, not years.
* `spread_figure` -> ``seed_spread.png``: one column per entry with two or more seeds, sorted by
  mean; the seeds as points, their mean as a bar.

Deterministic (docs/protocol.md §10.2): every figure is built and saved under matplotlib's
default style with fixed fonts (DejaVu Sans, shipped with matplotlib), sizes and DPI, no
mathtext, no axis offset, no "Software" metadata, and the label placement is a pure function of
the geometry. Names come from submitted files: labels keep ASCII letters, digits and ``_-.+:()``.

Longer than 400 lines because the three figures share the style context, the label placer and
the panel helpers; split apart, each would have to repeat the rules that make them deterministic.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import io
import itertools
import math
import statistics
import textwrap
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness.leaderboard.records import BYTE_CAP
from harness.leaderboard.render import PLOT_FILES, Row, round_half_up, table_title

PNG_DPI = 100
MB = 1_000_000
CAP_LABEL = "16,000,000-byte cap"
FILES = PLOT_FILES
SHORT_NAME_CHARS = 22
LABEL_SIZE = 7
_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "text.parse_math": False,
    "text.usetex": False,
    "axes.formatter.useoffset": False,
    "axes.formatter.limits": (-30, 30),
    "figure.dpi": PNG_DPI,
    "savefig.dpi": PNG_DPI,
    "date.epoch": "1970-01-01T00:00:00",
}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_LABEL_RADII = (3.0, 10.0, 18.0, 28.0, 40.0, 55.0)
_AMBIGUOUS = 400.0
"""Cost (px^2) of a label without leader line that sits as close to another point as to its own."""
_LABEL_DIRS = ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's default style (ignoring any matplotlibrc) plus the fixed fonts above."""
    import matplotlib
    import matplotlib.style

    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        yield


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def short_name(row: Row) -> str:
    """The entry's key without a leading ``YYYY-MM-DD_`` date, plain ASCII, at most 22 chars."""
    key = row.entry.key or row.entry.name or "?"
    if len(key) > 11 and key[4] == key[7] == "-" and key[10] in "_-" and key[:4].isdigit():
        key = key[11:]
    text = "".join(c if c.isascii() and (c.isalnum() or c in "_-.+:()") else "?" for c in key)
    return text if len(text) <= SHORT_NAME_CHARS else text[: SHORT_NAME_CHARS - 2] + ".."


def _series_label(row: Row) -> str:
    return "unrecorded fingerprint" if row.section == "unrecorded" else f"fingerprint {row.section}"


def _date(text: str) -> _dt.date | None:
    try:
        return _dt.date.fromisoformat((text or "")[:10])
    except (TypeError, ValueError):
        return None


def _new_figure(width: float, height: float, title: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=PNG_DPI)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=11, fontweight="bold")
    return fig


def _empty(fig: Any, ax: Any, text: str) -> Any:
    fig.set_size_inches(6.5, 2.5)
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.canvas.draw()
    return fig


def _pad(lo: float, hi: float, frac: float, least: float) -> tuple[float, float]:
    pad = max((hi - lo) * frac, least)
    return lo - pad, hi + pad


def _panel_grid(count: int, panel_height: float, title: str) -> tuple[Any, list[Any]]:
    """A figure with one panel per table (at least one), two panels to a row."""
    n = max(count, 1)
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(6.5 * ncols, panel_height * nrows, title)
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(n)]


def _groups(rows: list[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        out.setdefault(r.table, []).append(r)
    return out


def _note(ax: Any, text: str) -> None:
    if text:
        ax.text(0.01, 0.01, text, ha="left", va="bottom", fontsize=7, color="0.4", transform=ax.transAxes)


# ----------------------------------------------------------------------------- labels


def _overlap(a: Any, b: Any) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def _distance(box: Any, px: float, py: float) -> float:
    return math.hypot(max(box.x0 - px, 0.0, px - box.x1), max(box.y0 - py, 0.0, py - box.y1))


def _label_points(
    ax: Any,
    points: list[tuple[float, float, str]],
    obstacles: list[Any],
    segments: Sequence[tuple[tuple[float, float], tuple[float, float]]] = (),
) -> None:
    """Label each ``(x, y, text)`` (data coordinates) near its point: the first of a fixed list of
    offsets (nearest first, 8 directions) whose box overlaps no other label, marker, obstacle
    (display boxes: legend, cap text) or horizontal/vertical ``segment`` (data coordinates), stays
    inside the axes and, when right next to the point, is nearer its own point than any other;
    else the cheapest one. Labels not next to their point get a thin leader line. Call after the
    layout is final: the geometry is measured on the canvas."""
    from matplotlib.lines import Line2D
    from matplotlib.transforms import Bbox

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    to_px = fig.dpi / 72.0
    frame = ax.get_window_extent(renderer)
    pixels = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    marks = [Bbox.from_bounds(px - 4, py - 4, 8, 8) for px, py in pixels]
    taken = list(obstacles)
    for a, b in segments:
        (x0, y0), (x1, y1) = ax.transData.transform(a), ax.transData.transform(b)
        taken.append(Bbox.from_extents(min(x0, x1) - 3, min(y0, y1) - 3, max(x0, x1) + 3, max(y0, y1) + 3))
    order = sorted(range(len(points)), key=lambda i: (-pixels[i][1], pixels[i][0], points[i][2]))
    for i in order:
        x, y, text = points[i]
        px, py = pixels[i]
        others = marks[:i] + marks[i + 1 :]
        best: tuple[float, Any, float] | None = None
        for radius in _LABEL_RADII:
            for sx, sy in _LABEL_DIRS:
                dx, dy = sx * (radius + 4) * to_px, sy * radius * to_px
                t = ax.text(
                    *ax.transData.inverted().transform((px + dx, py + dy)),
                    text,
                    fontsize=LABEL_SIZE,
                    ha={1: "left", -1: "right", 0: "center"}[sx],
                    va={1: "bottom", -1: "top", 0: "center"}[sy],
                )
                box = t.get_window_extent(renderer)
                inside = _overlap(box, frame)
                cost = sum(_overlap(box, b) for b in taken + others) + 20 * (box.width * box.height - inside)
                if radius == _LABEL_RADII[0]:  # farther labels get a leader line
                    own = _distance(box, px, py)
                    cost += _AMBIGUOUS * sum(
                        _distance(box, *q) < own + 12 for j, q in enumerate(pixels) if j != i
                    )
                if best is None or cost < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (cost, t, radius)
                else:
                    t.remove()
                if cost == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None
        _, t, radius = best
        t.set_in_layout(False)
        taken.append(t.get_window_extent(renderer))
        if radius > _LABEL_RADII[0]:
            tx, ty = t.get_position()
            leader = Line2D([x, tx], [y, ty], color="0.45", lw=0.6, zorder=1)
            leader.set_in_layout(False)
            ax.add_line(leader)


# ----------------------------------------------------------------------------- score vs bytes


def bytes_figure(rows: list[Row]) -> Any:
    """val_bpb against bytes_total (MB) with the cap line; one panel per table."""
    with _style():
        return _bytes_figure(rows)


def _bytes_figure(rows: list[Row]) -> Any:
    from matplotlib.transforms import blended_transform_factory

    tables = _groups(rows)
    fig, axes = _panel_grid(len(tables), 5.0, "Score against bytes")
    if not tables:
        return _empty(fig, axes[0], "no results yet")
    pending = []
    for ax, (table, trows) in zip(axes, tables.items(), strict=False):
        pts = []
        for r in trows:
            b, s = _finite(r.entry.bytes_total), _finite(r.entry.score_bpb)
            if b is not None and s is not None:
                pts.append((r, b / MB, s))
        missing = len(trows) - len(pts)
        for k, section in enumerate(dict.fromkeys(r.section for r, _, _ in pts)):
            sel = [(x, y, r.std or 0.0) for r, x, y in pts if r.section == section]
            xs, ys, es = zip(*sel, strict=True)
            label = _series_label(next(r for r, _, _ in pts if r.section == section))
            ax.errorbar(xs, ys, yerr=es, fmt=_MARKERS[k % len(_MARKERS)], capsize=3, label=label)
        cap = BYTE_CAP / MB
        ax.axvline(cap, color="tab:red", ls="--", lw=1.2)
        xs = [x for _, x, _ in pts] + [cap]
        ys = [y for _, _, y in pts]
        lo, hi = _pad(min(xs), max(xs), 0.12, 0.05)
        ax.set_xlim(lo, hi)
        if ys:
            e = max((r.std or 0.0) for r, _, _ in pts)
            ax.set_ylim(*_pad(min(ys) - e, max(ys) + e, 0.15, 0.005))
        cap_text = ax.text(
            cap,
            0.98,
            CAP_LABEL + " ",
            rotation=90,
            ha="right",
            va="top",
            fontsize=8,
            color="tab:red",
            transform=blended_transform_factory(ax.transData, ax.transAxes),
        )
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.set_title(table_title(table), fontsize=9)
        ax.set_xlabel("bytes_total: code + compressed model (MB, 1 MB = 1,000,000 bytes)")
        ax.set_ylabel("val_bpb (lower is better)")
        ax.grid(True, color="0.9")
        y0, y1 = ax.get_ylim()
        crowd = [(x, y) for _, x, y in pts] + [(cap, y1 - (y1 - y0) * k / 10) for k in range(4)]
        legend = ax.legend(fontsize=7, loc=_free_corner(ax, crowd))
        _note(ax, f"{missing} entr{'y' if missing == 1 else 'ies'} without bytes or score" if missing else "")
        pending.append((ax, [(x, y, short_name(r)) for r, x, y in pts], legend, cap_text))
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, labels, legend, cap_text in pending:
        _label_points(ax, labels, [legend.get_window_extent(renderer), cap_text.get_window_extent(renderer)])
    return fig


def _free_corner(ax: Any, points: list[tuple[float, float]]) -> str:
    """The legend corner with the fewest points near it (limits must be set)."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    fx = [(x - x0) / (x1 - x0) for x, _ in points]
    fy = [(y - y0) / (y1 - y0) for _, y in points]
    corners = {
        "upper right": lambda a, b: a > 0.55 and b > 0.6,
        "upper left": lambda a, b: a < 0.45 and b > 0.6,
        "lower left": lambda a, b: a < 0.45 and b < 0.4,
        "lower right": lambda a, b: a > 0.55 and b < 0.4,
    }
    counts = {k: sum(f(a, b) for a, b in zip(fx, fy, strict=True)) for k, f in corners.items()}
    return min(corners, key=lambda k: counts[k])


# ----------------------------------------------------------------------------- progression


def progression_figure(rows: list[Row]) -> Any:
    """Score by date with the running best as a step line; one panel per table (so our runs and
    upstream records are never in one panel), one series per fingerprint."""
    with _style():
        return _progression_figure(rows)


def _progression_figure(rows: list[Row]) -> Any:
    import matplotlib.dates as mdates
    from matplotlib.legend_handler import HandlerTuple

    tables = _groups(rows)
    fig, axes = _panel_grid(len(tables), 4.8, "Record progression")
    if not tables:
        return _empty(fig, axes[0], "no results yet")
    pending = []
    for ax, (table, krows) in zip(axes, tables.items(), strict=True):
        pts = []
        for r in krows:
            d, s = _date(r.entry.date), _finite(r.entry.score_bpb)
            if d is not None and s is not None:
                pts.append((r, float(mdates.date2num(d)), s))
        missing = len(krows) - len(pts)
        if not pts:
            ax.text(0.5, 0.5, "no dated scores", ha="center", va="center", transform=ax.transAxes)
        xs = [x for _, x, _ in pts] or [float(mdates.date2num(_dt.date(2026, 3, 18)))]
        lo, hi = _pad(min(xs), max(xs), 0.04, 1.0)
        labels, segments, handles, names = [], [], [], []
        for k, section in enumerate(dict.fromkeys(r.section for r, _, _ in pts)):
            sel = sorted(((x, y, r) for r, x, y in pts if r.section == section), key=lambda p: p[:2])
            names.append(_series_label(sel[0][2]))
            marker = _MARKERS[k % len(_MARKERS)]
            (dots,) = ax.plot([p[0] for p in sel], [p[1] for p in sel], marker, alpha=0.45)
            steps, best = [], math.inf
            for x, y, r in sel:
                if y < best:
                    best = y
                    steps.append((x, y))
                    labels.append((x, y, short_name(r)))
            steps.append((hi, best))
            (line,) = ax.step(*zip(*steps, strict=True), where="post", color=dots.get_color(), lw=1.5)
            handles.append((dots, line))
            for (x0, y0), (x1, y1) in itertools.pairwise(steps):
                segments += [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1))]
        ax.set_xlim(lo, hi)
        ys = [y for _, _, y in pts]
        if ys:
            ax.set_ylim(*_pad(min(ys), max(ys), 0.15, 0.005))
        locator = _date_locator(lo, hi)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(
            mdates.ConciseDateFormatter(
                locator,
                formats=["%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d"],
                zero_formats=["%Y", "%Y-%m", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d", "%Y-%m-%d"],
                show_offset=False,
            )
        )
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        for tick in ax.get_xticklabels():
            tick.set_rotation(25)
            tick.set_horizontalalignment("right")
        ax.set_title(table_title(table), fontsize=9)
        ax.set_xlabel("date (dots: every run; line: best so far, labelled with the run that set it)")
        ax.set_ylabel("val_bpb (lower is better)")
        ax.grid(True, color="0.9")
        legend = None
        if pts:
            legend = ax.legend(
                handles,
                names,
                handler_map={tuple: HandlerTuple(ndivide=None)},
                fontsize=7,
                loc=_free_corner(ax, [(x, y) for _, x, y in pts]),
            )
        _note(ax, f"{missing} entr{'y' if missing == 1 else 'ies'} without date or score" if missing else "")
        pending.append((ax, labels, legend, segments))
    fig.tight_layout()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax, labels, legend, segments in pending:
        _label_points(ax, labels, [legend.get_window_extent(renderer)] if legend else [], segments)
    return fig


def _date_locator(lo: float, hi: float) -> Any:
    """Whole days (every k-th, at most ~7 ticks) up to two months, else matplotlib's auto locator."""
    import matplotlib.dates as mdates

    span = hi - lo
    if span <= 62:
        return mdates.DayLocator(interval=max(1, math.ceil(span / 7)))
    return mdates.AutoDateLocator(minticks=3, maxticks=8)


# ----------------------------------------------------------------------------- per-seed spread


def _seed_scores(row: Row) -> list[float]:
    return [x for x in (_finite(s.val_bpb) for s in row.entry.seeds) if x is not None]


def spread_figure(rows: list[Row]) -> Any:
    """One column per entry with two or more seeds (sorted by mean): seeds as points, mean as a bar."""
    with _style():
        return _spread_figure(rows)


def _spread_figure(rows: list[Row]) -> Any:
    multi = {t: [r for r in trows if len(_seed_scores(r)) >= 2] for t, trows in _groups(rows).items()}
    multi = {
        t: sorted(rs, key=lambda r: (statistics.fmean(_seed_scores(r)), r.entry.key))
        for t, rs in multi.items()
        if rs
    }
    ratios = [max(len(rs), 3) for rs in multi.values()] or [3]
    fig = _new_figure(max(6.5, 1.5 + 1.1 * sum(ratios)), 5.4, "Per-seed spread")
    axes = fig.subplots(1, len(ratios), squeeze=False, width_ratios=ratios)[0]
    if not multi:
        return _empty(fig, axes[0], "no entry has two or more seeds yet")
    for ax, ratio, (table, trows) in zip(axes, ratios, multi.items(), strict=True):
        for i, r in enumerate(trows):
            xs = _seed_scores(r)
            k = len(xs)
            offsets = [(j - (k - 1) / 2) * min(0.1, 0.5 / k) for j in range(k)]
            ax.plot(
                [i + o for o in offsets],
                xs,
                "o",
                color="tab:blue",
                alpha=0.7,
                label="seed" if i == 0 else None,
            )
            mean = statistics.fmean(xs)
            ax.plot(
                [i - 0.3, i + 0.3],
                [mean, mean],
                "-",
                color="black",
                lw=2,
                label="mean of seeds" if i == 0 else None,
            )
            std = statistics.stdev(xs)
            ax.annotate(
                f"{round_half_up(mean, 4)}\n\u00b1{round_half_up(std, 4)} (n={k})",
                (i + 0.32, mean),
                fontsize=6,
                va="center",
                ha="left",
                color="0.3",
            )
        ax.set_xlim(-0.6, max(len(trows), ratio) - 0.1)
        ax.set_xticks(range(len(trows)), [short_name(r) for r in trows], rotation=30, ha="right", fontsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.set_title("\n".join(textwrap.wrap(table_title(table), int(ratio * 11))), fontsize=9)
        ax.set_ylabel("val_bpb per seed (lower is better)")
        ax.grid(True, axis="y", color="0.9")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="upper right", ncols=2, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.canvas.draw()
    return fig


# ----------------------------------------------------------------------------- output


FIGURES: dict[str, Callable[[list[Row]], Any]] = dict(
    zip(FILES, (bytes_figure, progression_figure, spread_figure), strict=True)
)
"""File name -> the function drawing it."""


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG bytes, at its own size and `PNG_DPI`, without "Software" metadata."""
    buf = io.BytesIO()
    with _style():
        fig.savefig(buf, format="png", dpi=PNG_DPI, metadata={"Software": None})
    return buf.getvalue()


def render_pngs(rows: list[Row]) -> dict[str, bytes]:
    """Every plot as PNG bytes, by file name (`FILES`)."""
    return {name: png_bytes(FIGURES[name](rows)) for name in FILES}
