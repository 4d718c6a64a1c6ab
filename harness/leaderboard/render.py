"""Render the leaderboard from `harness.leaderboard.entry.Entry` objects: ``README.md`` (tables in the
column style of the openai/parameter-golf README, docs/protocol.md §10.1, and links to the plots),
``leaderboard.csv`` and ``leaderboard.json`` (pandas / json) and the plots of
`harness.leaderboard.plots` (``bpb_vs_bytes.png``, ``progression.png``, ``seed_spread.png``;
matplotlib, Agg).

The output is a pure function of the entries, so a committed ``leaderboard/`` can be checked
against regeneration (docs/pitfalls.md §3: the upstream leaderboard was rebuilt by hand, late and
with disputes). Rows are sorted by (table, dataset and tokenizer fingerprints, score, key); our
runs that no statistic counts (`harness.leaderboard.pooling`) are listed in a table of their own
with the reason, never averaged in; scores are rounded
half-up on their decimal value (docs/protocol.md §10.1); nothing carries a timestamp; the PNGs are
written without the "Software" metadata at fixed sizes, fonts and DPI. Every string is
Markdown/HTML-escaped and length-capped, because names and summaries come from files anyone
can submit. Nothing here reads, imports or runs submission code: `regenerate` takes entries
from `harness.leaderboard.ourruns.pool_runs`, which reads JSON and logs only.

Longer than 400 lines because every output (README tables, CSV, JSON, PNGs) is rendered from the
same sorted, rounded and escaped rows; keeping them in one module keeps the rounding, ordering
and escaping rules in one place, so the outputs cannot disagree.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from harness.api.fileio import write_atomic
from harness.leaderboard.entry import NONRECORD_PROTOCOL_SUFFIX, Entry, Excluded
from harness.leaderboard.significance import SignificanceError, improvement

DEFAULT_TITLE = "pgolf leaderboard"
MAX_CELL_CHARS = 200
"""Strings longer than this are truncated (with an ellipsis) before escaping."""
OUR_TABLES = ("full", "smoke")
"""Tables always rendered for our runs, even when empty."""
NON_RECORD = ":non-record-protocol"
"""Suffix of the table of our runs whose protocol is not the records' (`Entry.non_record`)."""
RECORD_TRACK = "10min_16mb"
PLOT_FILES = ("bpb_vs_bytes.png", "progression.png", "seed_spread.png")
"""Written by `harness.leaderboard.plots` (the same names, in this order, as its ``FILES``)."""
FILES = ("README.md", "leaderboard.csv", "leaderboard.json") + PLOT_FILES
OBSOLETE_FILES = ("bpb.png",)
"""Files earlier versions wrote: removed from the output folder so no stale plot stays behind."""
COLUMNS = (
    "Run",
    "Score",
    "± std (n)",
    "Author",
    "Summary",
    "Date",
    "Bytes",
    "Steps",
    "ms/step",
    "Protocol",
    "vs. prev",
    "Flags",
)

_TABLE_TITLES = {
    "full": "Our runs — full protocol",
    "smoke": "Our runs — smoke protocol (not comparable to the challenge)",
    "upstream:10min_16mb": "Upstream records — 10 min / 16 MB track",
    "upstream:non-record": "Upstream records — non-record / unlimited compute",
}
_MD_ESCAPES = {c: "\\" + c for c in "\\|`*_[]"}
_HTML_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


@dataclass
class Row:
    """One rendered row: the entry, where it sits and its significance cell."""

    entry: Entry
    table: str
    section: str
    """First 12 hex chars of the dataset and tokenizer fingerprints ("<data> / <tokenizer>",
    either "unrecorded"), or "unrecorded" when neither is known."""
    rank: int | None
    std: float | None
    n: int
    vs_prev_p: float | None
    vs_prev_note: str


# ----------------------------------------------------------------------------- formatting


def escape_md(text: Any, limit: int = MAX_CELL_CHARS) -> str:
    """Make ``text`` inert in a Markdown table cell: truncated to ``limit`` chars, newlines and
    control characters to spaces, ``& < >`` as HTML entities, and ``\\ | ` * _ [ ]`` escaped."""
    s = "" if text is None else str(text)
    s = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in s)
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return "".join(_HTML_ESCAPES.get(c) or _MD_ESCAPES.get(c) or c for c in s)


def round_half_up(x: float | None, places: int) -> str:
    """``x`` rounded half-up on its shortest decimal repr (1.09785 -> 1.0979), "—" if absent."""
    if x is None or not math.isfinite(x):
        return "—"
    try:
        return str(Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
    except InvalidOperation:
        return "—"


def _int_cell(x: int | None) -> str:
    return "—" if x is None else f"{int(x):,}"


def _p_cell(p: float | None, note: str) -> str:
    if p is None:
        return f"n/a ({note})"
    shown = "<0.0001" if p < 0.0001 else round_half_up(p, 4)
    return f"{shown} (p<0.01)" if p < 0.01 else shown


# ----------------------------------------------------------------------------- grouping


def table_of(entry: Entry) -> str:
    """The table an entry goes in: its protocol for our runs, the track for upstream records."""
    if entry.protocol == "upstream":
        return "upstream:" + (RECORD_TRACK if entry.track == RECORD_TRACK else "non-record")
    if entry.non_record:  # full_nonrecord and a full run at stride 32 share one table
        return (entry.protocol or "unknown").removesuffix(NONRECORD_PROTOCOL_SUFFIX) + NON_RECORD
    return entry.protocol or "unknown"


def section_of(entry: Entry) -> str:
    """Entries are ranked only against entries with the same dataset and tokenizer fingerprints."""
    parts = [(sha or "").strip().lower()[:12] for sha in (entry.dataset_sha256, entry.tokenizer_sha256)]
    if not any(parts):
        return "unrecorded"
    return " / ".join(p or "unrecorded" for p in parts)


def table_title(table: str) -> str:
    """The heading of a table (also the title of its plot panels)."""
    if table.endswith(NON_RECORD) and not table.startswith("upstream:"):
        protocol = table.removesuffix(NON_RECORD)
        return f"Our runs — {protocol} protocol, non-record settings (never ranked with records)"
    return _TABLE_TITLES.get(table, f"Protocol {table}")


def _table_order(table: str) -> tuple[int, str]:
    order = list(OUR_TABLES) + [t + NON_RECORD for t in OUR_TABLES]
    order += ["upstream:10min_16mb", "upstream:non-record"]
    return (order.index(table), "") if table in order else (len(order), table)


def _finite(x: float | None) -> float | None:
    return x if x is not None and isinstance(x, (int, float)) and math.isfinite(x) else None


def _sort_key(entry: Entry) -> tuple[Any, ...]:
    score = _finite(entry.score_bpb)
    return (_table_order(table_of(entry)), section_of(entry), score is None, score or 0.0, entry.key)


def _spread(entry: Entry) -> tuple[float | None, int]:
    xs = [x for x in (_finite(s.val_bpb) for s in entry.seeds) if x is not None]
    return (statistics.stdev(xs) if len(xs) >= 2 else None), len(xs)


def _vs_prev(entry: Entry, better: Entry | None) -> tuple[float | None, str]:
    """p that the next-better row beats this one by 0.005 nats, or why it is not computed."""
    if _finite(entry.score_bpb) is None:
        return None, "no score"
    if better is None:
        return None, "top of section"
    try:
        return improvement(better, entry).p, ""
    except SignificanceError as exc:
        reason = exc.reason
        for label, who in (("A ", "row above "), ("B ", "this row ")):
            if reason.startswith(label):
                reason = who + reason[len(label) :]
        return None, reason


def build_rows(entries: list[Entry]) -> list[Row]:
    """Entries sorted by (table, fingerprint, score, key), ranked within their section, with
    the significance of each row against the next-better row of the same section."""
    rows: list[Row] = []
    prev: Entry | None = None
    rank = 0
    for entry in sorted(entries, key=_sort_key):
        table, section = table_of(entry), section_of(entry)
        if not rows or (rows[-1].table, rows[-1].section) != (table, section):
            prev, rank = None, 0
        scored = _finite(entry.score_bpb) is not None
        rank += scored
        p, note = _vs_prev(entry, prev)
        std, n = _spread(entry)
        rows.append(Row(entry, table, section, rank if scored else None, std, n, p, note))
        prev = entry if scored else prev
    return rows


# ----------------------------------------------------------------------------- README.md


def _cells(row: Row) -> list[str]:
    e = row.entry
    std = "—" if row.std is None else round_half_up(row.std, 4)
    return [
        escape_md(e.name or e.key),
        round_half_up(_finite(e.score_bpb), 4),
        f"{std} ({row.n})",
        escape_md(e.author or e.github_id),
        escape_md(e.summary),
        escape_md(e.date),
        _int_cell(e.bytes_total),
        _int_cell(e.steps),
        round_half_up(_finite(e.ms_per_step), 2),
        escape_md(e.protocol),
        escape_md(_p_cell(row.vs_prev_p, row.vs_prev_note)),
        escape_md(", ".join(e.flags)),
    ]


def _table_md(title: str, rows: list[Row]) -> list[str]:
    lines = [f"## {escape_md(title)}", ""]
    if not rows:
        return lines + ["_No runs yet._", ""]
    for section in dict.fromkeys(r.section for r in rows):
        lines += [f"### Dataset / tokenizer fingerprints {escape_md(section)}", ""]
        lines += [
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join("---:" if c in _NUMERIC else "---" for c in COLUMNS) + "|",
        ]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows if r.section == section]
        lines.append("")
    return lines


_NUMERIC = {"Score", "± std (n)", "Bytes", "Steps", "ms/step"}

_LEGEND = [
    "Generated by `pgolf leaderboard` from `submission.json` files and train logs only; do not edit by hand.",
    "Rows are ranked only against rows with the same dataset and tokenizer fingerprints "
    "(first 12 hex chars of each sha256).",
    "Score: val_bpb (mean over seeds), rounded half-up to 4 decimals; "
    "± std: sample std over seeds (n seeds).",
    "vs. prev: one-sided Welch t-test p-value that the row above beats this row by at least 0.005 nats/token "
    "(README rule: significant when p < 0.01); per-seed bpb converted to nats with the recorded tokens/byte.",
]


_POOLING_LEGEND = (
    "Our runs: a row pools the valid runs of one submission with the same resolved config apart from the "
    "seed, the same fingerprints and the same shipped code, one run per seed (the newest); every other run "
    "is listed under Runs left out, with the reason, and never averaged in. Rows scored with an eval stride "
    "other than 64 are in non-record tables, never ranked with records."
)
EXCLUDED_COLUMNS = ("Submission", "Run", "Seed", "val_bpb", "Reason")


_PLOTS = {
    "bpb_vs_bytes.png": (
        "Score against bytes",
        "val_bpb against bytes_total in MB (1 MB = 1,000,000 bytes), the dashed line is the "
        "16,000,000-byte cap; one panel per table, every point labelled with its run.",
    ),
    "progression.png": (
        "Record progression",
        "every score by date, the step line is the best so far (one per table and fingerprint); "
        "our runs and upstream records in separate panels.",
    ),
    "seed_spread.png": (
        "Per-seed spread",
        "one column per entry with two or more seeds, sorted by mean: the seeds as dots, "
        "their mean as a bar.",
    ),
}


def _sorted_excluded(excluded: list[Excluded]) -> list[Excluded]:
    return sorted(excluded, key=lambda x: (x.name, x.run, x.reason))


def _excluded_md(excluded: list[Excluded]) -> list[str]:
    lines = ["## Runs left out", ""]
    if not excluded:
        return lines + ["_Every run is counted._", ""]
    lines += [
        "| " + " | ".join(EXCLUDED_COLUMNS) + " |",
        "|---|---|---|---:|---|",
    ]
    for x in _sorted_excluded(excluded):
        cells = [escape_md(x.name), escape_md(x.run), escape_md(x.seed or "—")]
        cells += [round_half_up(_finite(x.val_bpb), 4), escape_md(x.reason, limit=2 * MAX_CELL_CHARS)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def render_markdown(rows: list[Row], title: str, excluded: list[Excluded] | None = None) -> str:
    """The README: a legend, then one table per protocol/track, one section per fingerprint, the
    runs left out (with ``excluded``, our runs only), then the plots (`PLOT_FILES`) as images with
    a line each on what they show. The plots section is fixed text: no submitted string reaches
    it, so its links are the README's only ones."""
    legend = _LEGEND + ([_POOLING_LEGEND] if excluded is not None else [])
    lines = [f"# {escape_md(title)}", ""] + [f"* {x}" for x in legend]
    lines += [
        "* Plots (section Plots at the end): "
        + ", ".join(f"`{n}` ({a.lower()})" for n, (a, _) in _PLOTS.items()),
        "",
    ]
    if not rows:
        lines += ["No runs have been committed yet: the tables below are empty.", ""]
    tables = list(OUR_TABLES) + [t for t in dict.fromkeys(r.table for r in rows) if t not in OUR_TABLES]
    for table in tables:
        lines += _table_md(table_title(table), [r for r in rows if r.table == table])
    if excluded is not None:
        lines += _excluded_md(excluded)
    lines += ["## Plots", ""]
    for name, (alt, what) in _PLOTS.items():
        lines += [f"[![{alt}]({name})]({name})", "", f"`{name}`: {what}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- CSV / JSON


def _rel(path: str | None, root: Path | None) -> str | None:
    if not path or root is None:
        return path
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path


def _json_safe(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def row_record(row: Row, root: Path | None = None) -> dict[str, Any]:
    """One row as a flat dict (full precision), the same for CSV and JSON."""
    e = row.entry
    rec: dict[str, Any] = {
        "table": row.table,
        "fingerprint": row.section,
        "rank": row.rank,
        "key": e.key,
        "name": e.name,
        "author": e.author,
        "github_id": e.github_id,
        "date": e.date,
        "track": e.track,
        "protocol": e.protocol,
        "dataset_sha256": e.dataset_sha256,
        "tokenizer_sha256": e.tokenizer_sha256,
        "non_record": e.non_record,
        "score_bpb": e.score_bpb,
        "score_std": row.std,
        "n_seeds": row.n,
        "score_source": e.score_source,
        "bytes_total": e.bytes_total,
        "steps": e.steps,
        "ms_per_step": e.ms_per_step,
        "tokens_per_byte": e.tokens_per_byte,
        "vs_prev_p": row.vs_prev_p,
        "vs_prev_note": row.vs_prev_note,
        "flags": ";".join(e.flags),
        "summary": e.summary,
        "source_path": _rel(e.source_path, root),
    }
    return {k: _json_safe(v) for k, v in rec.items()}


def _seeds_json(row: Row, root: Path | None) -> list[dict[str, Any]]:
    out = []
    for s in row.entry.seeds:
        d = {
            "seed": s.seed,
            "val_bpb": s.val_bpb,
            "val_loss": s.val_loss,
            "bytes_total": s.bytes_total,
            "steps": s.steps,
            "ms_per_step": s.ms_per_step,
            "log_file": _rel(s.log_file, root),
        }
        out.append({k: _json_safe(v) for k, v in d.items()})
    return out


def write_csv(rows: list[Row], path: Path, root: Path | None = None) -> None:
    """leaderboard.csv: one line per row; floats at full (shortest round-trip) precision."""
    import pandas as pd

    records = [row_record(r, root) for r in rows]
    columns = list(row_record(rows[0], root)) if rows else _EMPTY_COLUMNS
    frame = pd.DataFrame(records, columns=columns, dtype=object)
    write_atomic(path, frame.to_csv(index=False, lineterminator="\n").encode("utf-8"))


_EMPTY_COLUMNS = [
    "table",
    "fingerprint",
    "rank",
    "key",
    "name",
    "author",
    "github_id",
    "date",
    "track",
    "protocol",
    "dataset_sha256",
    "tokenizer_sha256",
    "non_record",
    "score_bpb",
    "score_std",
    "n_seeds",
    "score_source",
    "bytes_total",
    "steps",
    "ms_per_step",
    "tokens_per_byte",
    "vs_prev_p",
    "vs_prev_note",
    "flags",
    "summary",
    "source_path",
]


def _excluded_json(excluded: list[Excluded], root: Path | None) -> list[dict[str, Any]]:
    out = []
    for x in _sorted_excluded(excluded):
        d = {
            "name": x.name,
            "run": x.run,
            "seed": x.seed,
            "val_bpb": x.val_bpb,
            "reason": x.reason,
            "entry_key": x.entry_key,
            "source_path": _rel(x.source_path, root),
        }
        out.append({k: _json_safe(v) for k, v in d.items()})
    return out


def write_json(
    rows: list[Row],
    path: Path,
    title: str,
    root: Path | None = None,
    excluded: list[Excluded] | None = None,
) -> None:
    """leaderboard.json: the title, a schema version, every row with its seeds and the runs left
    out (``excluded``: a list, empty for imported records)."""
    import pandas as pd

    records = [row_record(r, root) | {"seeds": _seeds_json(r, root)} for r in rows]
    # pandas keeps the column order and object dtype keeps ints as ints and None as null.
    frame = pd.DataFrame(records, dtype=object)
    data = {
        "title": title,
        "schema": 2,
        "entries": frame.to_dict(orient="records") if rows else [],
        "excluded": _excluded_json(excluded or [], root),
    }
    text = json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False)
    write_atomic(path, (text + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------- plots


def write_pngs(rows: list[Row], out_dir: Path) -> list[Path]:
    """The plots of `harness.leaderboard.plots` (``PLOT_FILES``), written into ``out_dir``."""
    from harness.leaderboard import plots

    paths = []
    for name, data in plots.render_pngs(rows).items():
        write_atomic(out_dir / name, data)
        paths.append(out_dir / name)
    return paths


# ----------------------------------------------------------------------------- entry points


def render(
    entries: list[Entry],
    out_dir: Path,
    *,
    title: str = DEFAULT_TITLE,
    root: Path | None = None,
    excluded: list[Excluded] | None = None,
) -> list[Path]:
    """Write `FILES` (README.md, leaderboard.csv, leaderboard.json and the plots) into ``out_dir``
    (created if needed), remove `OBSOLETE_FILES` there, and return the paths written.
    Deterministic: the same entries give byte-identical files. ``root``: paths in the entries
    are written relative to it. ``excluded``: our runs left out of every statistic, listed in
    README.md and leaderboard.json (None for imported records, which have no such list)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = build_rows(entries)
    paths = [out_dir / name for name in FILES[:3]]
    write_atomic(paths[0], render_markdown(rows, title, excluded).encode("utf-8"))
    write_csv(rows, paths[1], root)
    write_json(rows, paths[2], title, root, excluded)
    paths += write_pngs(rows, out_dir)
    for name in OBSOLETE_FILES:
        (out_dir / name).unlink(missing_ok=True)
    return paths


def regenerate(repo_root: Path, out_dir: Path | None = None, *, title: str = DEFAULT_TITLE) -> list[Path]:
    """`pgolf leaderboard`: our runs under ``repo_root/submissions/*/runs/*`` (JSON and logs
    only, pooled by `harness.leaderboard.ourruns.pool_runs`) rendered into ``out_dir`` (default
    ``repo_root/leaderboard``) with the runs left out, paths relative to ``repo_root``."""
    from harness.leaderboard.ourruns import pool_runs

    repo_root = Path(repo_root)
    runs = pool_runs(repo_root / "submissions")
    out = out_dir if out_dir is not None else repo_root / "leaderboard"
    return render(runs.entries, out, title=title, root=repo_root, excluded=runs.excluded)
