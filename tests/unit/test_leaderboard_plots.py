"""Tests for harness.leaderboard.plots: the PNGs are byte-identical for the same entries, and the
figures carry what README.md's "Leaderboard" section promises (checked on the matplotlib Figure
objects): the 16,000,000-byte line at x = 16.0 MB, a text label next to every point, no axis
offset text, a date axis of about three days for runs of one day, our runs and upstream records
in separate panels (one per table), the best-so-far step line, and one column per multi-seed entry."""

from __future__ import annotations

import datetime as dt
import itertools
import math
from pathlib import Path

import matplotlib.dates as mdates
import pytest

from harness.leaderboard import plots
from harness.leaderboard.entry import Entry, SeedResult
from harness.leaderboard.render import FILES, OBSOLETE_FILES, PLOT_FILES, build_rows, render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _entry(key: str, bpbs: list[float], **kw: object) -> Entry:
    seeds = [SeedResult(seed=str(1337 + i), val_bpb=x) for i, x in enumerate(bpbs)]
    fields: dict[str, object] = {
        "name": key,
        "date": "2026-03-20",
        "protocol": "full",
        "dataset_sha256": "ab" * 32,
        "score_bpb": sum(bpbs) / len(bpbs),
        "seeds": seeds,
        "bytes_total": 15_000_000,
        "tokens_per_byte": 0.41,
    }
    fields.update(kw)
    return Entry(key=key, **fields)  # type: ignore[arg-type]


def _upstream(key: str, bpbs: list[float], date: str, nbytes: int, **kw: object) -> Entry:
    return _entry(
        key,
        bpbs,
        protocol="upstream",
        track="10min_16mb",
        dataset_sha256=None,
        date=date,
        bytes_total=nbytes,
        **kw,
    )


def _mixed() -> list[Entry]:
    """Ours (one day, two fingerprints, one over the cap) and upstream records (a month)."""
    return [
        _entry("alpha", [1.2300, 1.2310, 1.2290], bytes_total=15_100_000),
        _entry("beta", [1.2200, 1.2205, 1.2195], bytes_total=16_400_000),
        _entry("gamma", [1.2250], bytes_total=9_000_000),
        _entry("delta", [3.40, 3.42], protocol="smoke", dataset_sha256=None, bytes_total=4_000_000),
        _upstream("2026-03-17_NaiveBaseline", [1.2244], "2026-03-18", 15_863_489),
        _upstream("2026-03-19_SlidingWindowEval", [1.1925], "2026-03-19", 15_874_829),
        _upstream(
            "2026-03-20_10L_Int5MLP_MuonWD04_SWA50", [1.1427, 1.1430, 1.1426], "2026-03-20", 15_965_978
        ),
        _upstream("2026-03-20_Int6_MLP3x_SmearGate", [1.1460, 1.1466, 1.1449], "2026-03-20", 15_944_907),
        _upstream("2026-04-12_11L_4xMLP_RecycledCore", [1.1464], "2026-04-12", 15_925_822),
        _upstream("2026-03-31_ParallelResiduals", [1.1066, 1.1077, 1.1044], "2026-03-31", 15_946_657),
        _upstream("2026-04-09_SP8192_3LayerRecur", [1.0808, 1.0810, 1.0812], "2026-04-09", 15_993_232),
    ]


def _texts(ax) -> dict[str, object]:
    return {t.get_text(): t for t in ax.texts}


def _points(ax) -> list[tuple[float, float]]:
    """The markers drawn without a line (errorbar / scatter-style points)."""
    return [
        (float(x), float(y))
        for line in ax.lines
        if line.get_linestyle() == "None" and line.get_marker() not in ("None", "", None, "_")
        for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
    ]


def _visible_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _no_offset_text(fig) -> None:
    fig.canvas.draw()
    for ax in _visible_axes(fig):
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_title()
        assert ax.yaxis.get_offset_text().get_text() == "", ax.get_title()


# ----------------------------------------------------------------------------- determinism / files


def test_pngs_are_byte_identical_and_depend_on_the_entries() -> None:
    first = plots.render_pngs(build_rows(_mixed()))
    second = plots.render_pngs(build_rows(list(reversed(_mixed()))))
    assert list(first) == list(PLOT_FILES) == list(plots.FILES)
    for name in PLOT_FILES:
        assert first[name][:8] == PNG_MAGIC, name
        assert first[name] == second[name], name
        assert b"Software" not in first[name] and b"matplotlib" not in first[name], name
    other = plots.render_pngs(build_rows(_mixed()[:-1]))
    assert all(other[name] != first[name] for name in PLOT_FILES)


def test_render_writes_and_links_the_plots(tmp_path: Path) -> None:
    (tmp_path / "bpb.png").write_bytes(b"stale")
    paths = render(_mixed(), tmp_path, title="t")
    assert (
        [p.name for p in paths]
        == list(FILES)
        == ["README.md", "leaderboard.csv", "leaderboard.json"] + list(PLOT_FILES)
    )
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in paths[3:])
    assert not any((tmp_path / name).exists() for name in OBSOLETE_FILES)
    readme = paths[0].read_text()
    for name in PLOT_FILES:
        assert f"]({name})" in readme and f"`{name}`" in readme.split("\n## Plots\n")[1], name


# ----------------------------------------------------------------------------- score vs bytes


def test_bytes_figure_cap_line_labels_and_mb_axis() -> None:
    rows = build_rows(_mixed())
    fig = plots.bytes_figure(rows)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == [
        "Our runs — full protocol",
        "Our runs — smoke protocol (not comparable to the challenge)",
        "Upstream records — 10 min / 16 MB track",
    ]
    for ax in axes:
        caps = [ln for ln in ax.lines if list(ln.get_xdata()) == [16.0, 16.0]]
        assert len(caps) == 1 and caps[0].get_linestyle() == "--", ax.get_title()
        assert plots.CAP_LABEL == "16,000,000-byte cap"
        assert any(t.get_text().strip() == plots.CAP_LABEL for t in ax.texts), ax.get_title()
        lo, hi = ax.get_xlim()
        assert lo < 16.0 < hi and hi < 20  # MB, not bytes
        assert "MB" in ax.get_xlabel() and "1,000,000" in ax.get_xlabel()
        assert ax.xaxis.get_major_formatter().get_useOffset() is False
        assert ax.yaxis.get_major_formatter().get_useOffset() is False
    full = axes[0]
    xs = sorted(x for x, _ in _points(full))
    assert xs == pytest.approx([9.0, 15.1, 16.4])  # bytes / 1e6; "beta" (16.4 MB) is right of the line
    _no_offset_text(fig)


def test_every_point_has_its_label_next_to_it() -> None:
    rows = build_rows(_mixed())
    fig = plots.bytes_figure(rows)
    renderer = fig.canvas.get_renderer()
    for ax in _visible_axes(fig):
        names = {plots.short_name(r) for r in rows if plots.table_title(r.table) == ax.get_title()}
        texts = _texts(ax)
        assert names and names <= set(texts), ax.get_title()
        leaders = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
        for r in rows:
            if plots.table_title(r.table) != ax.get_title():
                continue
            point = (r.entry.bytes_total / 1e6, r.entry.score_bpb)
            box = texts[plots.short_name(r)].get_window_extent(renderer)
            px, py = ax.transData.transform(point)
            near = math.hypot(max(box.x0 - px, 0, px - box.x1), max(box.y0 - py, 0, py - box.y1)) < 12
            led = any(
                (float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) == pytest.approx(point) for ln in leaders
            )
            assert near or led, plots.short_name(r)
    # The crowded upstream panel: no two labels overlap, and all stay inside their axes.
    ax = _visible_axes(fig)[2]
    frame = ax.get_window_extent(renderer)
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().strip() != plots.CAP_LABEL]
    assert len(boxes) == 7
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    assert all(frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1) for b in boxes)


def test_short_names_are_plain_and_short() -> None:
    rows = build_rows(
        [
            _upstream("2026-03-20_10L_Int5MLP_MuonWD04_SWA50", [1.1], "2026-03-20", 1),
            _entry("$\\alpha$<b>é", [1.2]),
        ]
    )
    names = sorted(plots.short_name(r) for r in rows)
    assert names == ["10L_Int5MLP_MuonWD04..", "??alpha??b??"]
    assert all(len(n) <= plots.SHORT_NAME_CHARS for n in names)
    fig = plots.bytes_figure(rows)  # a "$" name must not switch mathtext on
    assert "??alpha??b??" in _texts(_visible_axes(fig)[0])


# ----------------------------------------------------------------------------- progression


def test_progression_one_day_spans_days_not_years() -> None:
    entries = [e for e in _mixed() if e.protocol != "upstream"]
    fig = plots.progression_figure(build_rows(entries))
    axes = _visible_axes(fig)
    assert len(axes) == 2  # full and smoke
    ax = axes[0]
    lo, hi = ax.get_xlim()
    day = mdates.date2num(dt.date(2026, 3, 20))
    assert lo < day < hi and 1.0 <= hi - lo <= 4.0
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all(dt.date.fromisoformat(s) for s in labels)  # whole dates, no bare years/hours
    assert "2026-03-20" in labels
    assert axes[1].get_xlim() == (lo, hi)
    _no_offset_text(fig)


def test_progression_panels_and_running_minimum() -> None:
    rows = build_rows(_mixed())
    fig = plots.progression_figure(rows)
    axes = _visible_axes(fig)
    titles = [ax.get_title() for ax in axes]
    assert titles == [
        "Our runs — full protocol",
        "Our runs — smoke protocol (not comparable to the challenge)",
        "Upstream records — 10 min / 16 MB track",
    ]
    # Our runs and upstream records never share a panel: each panel holds exactly its table's scores.
    for ax in axes:
        mine = [r.entry.score_bpb for r in rows if plots.table_title(r.table) == ax.get_title()]
        assert sorted(y for _, y in _points(ax)) == pytest.approx(sorted(mine)), ax.get_title()
    upstream = axes[2]
    up = [r for r in rows if r.entry.protocol == "upstream"]
    # The step line: running minimum over the dates, extended to the right edge.
    (step,) = [ln for ln in upstream.lines if ln.get_drawstyle() == "steps-post"]
    xs, ys = list(step.get_xdata()), list(step.get_ydata())
    by_date = sorted((mdates.date2num(dt.date.fromisoformat(r.entry.date)), r.entry.score_bpb) for r in up)
    best, expect = math.inf, []
    for x, y in by_date:
        if y < best:
            best = y
            expect.append((x, y))
    assert xs[:-1] == pytest.approx([x for x, _ in expect]) and ys[:-1] == pytest.approx(
        [y for _, y in expect]
    )
    assert xs[-1] == pytest.approx(upstream.get_xlim()[1]) and ys[-1] == pytest.approx(best)
    assert all(b <= a for a, b in itertools.pairwise(ys))
    # Each run that set a new best is labelled; a month of records is not padded to years.
    texts = _texts(upstream)
    assert {"NaiveBaseline", "SlidingWindowEval", "SP8192_3LayerRecur"} <= set(texts)
    assert "11L_4xMLP_RecycledCore" not in texts  # never the best
    lo, hi = upstream.get_xlim()
    assert hi - lo < 40
    _no_offset_text(fig)


# ----------------------------------------------------------------------------- per-seed spread


def test_spread_one_column_per_multi_seed_entry_sorted_by_mean() -> None:
    rows = build_rows(_mixed())
    fig = plots.spread_figure(rows)
    axes = _visible_axes(fig)
    multi = [r for r in rows if len(r.entry.seeds) >= 2]
    assert sum(len(ax.get_xticks()) for ax in axes) == len(multi) == 7
    assert [ax.get_title().replace("\n", " ") for ax in axes] == [
        "Our runs — full protocol",
        "Our runs — smoke protocol (not comparable to the challenge)",
        "Upstream records — 10 min / 16 MB track",
    ]
    assert [len(ax.get_xticks()) for ax in axes] == [2, 1, 4]
    up = axes[2]
    names = [t.get_text() for t in up.get_xticklabels()]
    assert names == [
        "SP8192_3LayerRecur",
        "ParallelResiduals",
        "10L_Int5MLP_MuonWD04..",
        "Int6_MLP3x_SmearGate",
    ]
    pts = _points(up)
    assert len(pts) == 12  # three seeds per column
    for i, r in enumerate(
        sorted((r for r in multi if r.entry.protocol == "upstream"), key=lambda r: r.entry.score_bpb)
    ):
        col = sorted(y for x, y in pts if abs(x - i) < 0.4)
        assert col == pytest.approx(sorted(s.val_bpb for s in r.entry.seeds))
        mean = sum(col) / len(col)
        bars = [ln for ln in up.lines if list(ln.get_ydata()) == pytest.approx([mean, mean])]
        assert len(bars) == 1 and bars[0].get_xdata()[0] < i < bars[0].get_xdata()[1]
    _no_offset_text(fig)


def test_empty_figures_say_so() -> None:
    single = build_rows([_entry("solo", [1.2])])
    assert "no entry has two or more seeds yet" in _texts(plots.spread_figure(single).axes[0])
    for make in (plots.bytes_figure, plots.progression_figure, plots.spread_figure):
        fig = make([])
        assert any("no " in t.get_text() for ax in fig.axes for t in ax.texts), make.__name__
        assert plots.png_bytes(fig)[:8] == PNG_MAGIC


def test_a_tight_cluster_gets_separate_labels_with_leader_lines() -> None:
    # Six runs within a few pixels of each other: labels next to the points cannot all fit.
    cluster = [
        _upstream(f"2026-03-20_Run{i}", [1.1 + i * 0.0001], "2026-03-20", 15_950_000 + i * 1_000)
        for i in range(6)
    ]
    fig = plots.bytes_figure(
        build_rows(cluster + [_upstream("2026-03-18_Far", [1.2], "2026-03-18", 15_500_000)])
    )
    (ax,) = _visible_axes(fig)
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.texts if t.get_text().startswith("Run")]
    assert sorted(t.get_text() for t in labels) == [f"Run{i}" for i in range(6)]
    boxes = [t.get_window_extent(renderer) for t in labels]
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    leaders = [ln for ln in ax.lines if len(ln.get_xdata()) == 2 and ln.get_linestyle() == "-"]
    assert len(leaders) >= 2
    # Each leader line starts at a point and ends at its own label.
    by_name = {t.get_text(): t for t in labels}
    for ln in leaders:
        x, y = float(ln.get_xdata()[0]), float(ln.get_ydata()[0])
        i = round((x - 15.95) * 1000)
        assert y == pytest.approx(1.1 + i * 0.0001)
        assert (float(ln.get_xdata()[1]), float(ln.get_ydata()[1])) == pytest.approx(
            by_name[f"Run{i}"].get_position()
        )
