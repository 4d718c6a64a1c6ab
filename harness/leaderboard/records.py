"""Import leaderboard entries from files: upstream record folders
(``records/<track>/<date>_<Name>/`` with ``submission.json`` and train logs, the layout of
``openai/parameter-golf``) and our own ``submissions/*/runs/*`` results.

The JSON fallbacks follow docs/protocol.md §8.3 (score, seeds, bytes, date, track), the log
cross-check §9.4, and the flags the leaderboard issue asks for (over the 16,000,000-byte cap,
score not in any log, seeds claimed without logs, fewer than 3 seeds on the record track).
Only JSON and log text are read, with size limits; no submission code is imported or run.

Longer than 400 lines because upstream's record folders come in many historical shapes (JSON
key variants, seed dicts, log families, missing sizes), and every shape is read and checked
here in one place so the leaderboard has one importer.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.errors import DataError
from harness.leaderboard.entry import (
    FLAG_BASELINES,
    FLAG_FEW_SEEDS,
    FLAG_INVALID,
    FLAG_NO_LOGS,
    FLAG_OVER_BUDGET,
    FLAG_SCORE_UNSUPPORTED,
    FLAG_SEEDS_WITHOUT_LOGS,
    Entry,
    SeedResult,
)
from harness.leaderboard.logparse import LogSummary, is_score_line, matches, parse_log

BYTE_CAP = 16_000_000
MAX_JSON_BYTES = 1_000_000
MAX_LOG_BYTES = 50_000_000
RECORD_TRACK = "10min_16mb"
MIN_RECORD_SEEDS = 3
LN2 = math.log(2.0)

# Flags this importer adds beside those of harness.leaderboard.entry (stable strings too).
FLAG_BAD_JSON = "unreadable_submission_json"
FLAG_NO_JSON = "no_submission_json"
FLAG_LOG_TOO_LARGE = "log_too_large"
FLAG_NO_SCORE = "no_score"

_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_FLAT_SEED_KEY = re.compile(r"^seed_(\d+)$")


class RecordReadError(DataError):
    """A file of a record folder could not be read within the limits (message names it)."""


@dataclass
class _Log:
    """One train log of a folder, parsed."""

    rel: str
    seed: str | None
    summary: LogSummary
    digest: str


@dataclass
class _Folder:
    """Everything read from one record folder before it becomes an `Entry`."""

    path: Path
    track: str
    data: dict[str, Any] = field(default_factory=dict)
    logs: list[_Log] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- reading


def read_text_limited(path: Path, limit: int) -> str:
    """The file's text (UTF-8, bad bytes replaced); refuses files over ``limit`` bytes."""
    size = path.stat().st_size
    if size > limit:
        raise RecordReadError(f"{path}: {size} bytes, over the {limit}-byte limit for this kind of file")
    return path.read_bytes().decode("utf-8", errors="replace")


def complete_lines(text: str) -> str:
    """``text`` without an unterminated last line: our ``train.log`` is append-only and a
    killed writer can leave its last line torn (a cut ``val_bpb:1.23`` would read as a
    wrong number), so only newline-terminated lines are trusted."""
    cut = text.rfind("\n")
    return text[: cut + 1] if cut >= 0 else ""


def read_json_limited(path: Path, limit: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """A JSON object from ``path``; `RecordReadError` naming the file when it is too big,
    not JSON or not an object."""
    text = read_text_limited(path, limit)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordReadError(
            f"{path}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except ValueError as exc:  # an integer literal over Python's 4,300-digit conversion limit
        raise RecordReadError(f"{path}: invalid JSON ({exc})") from None
    except RecursionError:
        raise RecordReadError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise RecordReadError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _number(value: Any) -> float | None:
    """A finite float from a JSON value (bools, strings, NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _integer(value: Any) -> int | None:
    num = _number(value)
    return int(num) if num is not None and num == int(num) else None


# ----------------------------------------------------------------------------- folder scan


def _submission_json(folder: Path) -> Path | None:
    exact = folder / "submission.json"
    if exact.is_file():
        return exact
    variants = sorted(p for p in folder.glob("submission*.json") if p.is_file())
    return variants[0] if variants else None


def _log_files(folder: Path) -> list[Path]:
    """``*.log`` in the folder, ``*.log``/``*.txt`` under ``logs/`` (both occur in upstream records)."""
    found = [p for p in folder.glob("*.log") if p.is_file()]
    logs_dir = folder / "logs"
    if logs_dir.is_dir():
        found += [p for p in logs_dir.iterdir() if p.is_file() and p.suffix in (".log", ".txt")]
    return sorted(found)


def _read_logs(fold: _Folder) -> None:
    """Parse every log; drop exact duplicates (a ``train.log`` copy of a seed log)."""
    for path in _log_files(fold.path):
        rel = str(path.relative_to(fold.path))
        try:
            text = read_text_limited(path, MAX_LOG_BYTES)
        except RecordReadError as exc:
            _add_flag(fold.flags, FLAG_LOG_TOO_LARGE)
            fold.notes.append(str(exc))
            continue
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        name_seed = _SEED_IN_NAME.search(path.stem)
        summary = parse_log(text)
        log = _Log(rel, name_seed.group(1) if name_seed else summary.seed, summary, digest)
        fold.logs.append(log)
    fold.logs = _dedupe(fold.logs)


def _dedupe(logs: list[_Log]) -> list[_Log]:
    """Keep one log per run: same content, or same seed and same final lines (a ``train.log``
    copy of a ``train_seed*.log``); the copy whose file name carries the seed wins."""
    logs = sorted(logs, key=lambda lg: (_SEED_IN_NAME.search(Path(lg.rel).stem) is None, lg.rel))
    kept: dict[object, _Log] = {}
    for log in logs:
        run = (log.seed, tuple(log.summary.final_lines)) if log.seed and log.summary.final_lines else None
        if log.digest in kept or (run is not None and run in kept):
            continue
        kept[log.digest] = log
        if run is not None:
            kept[run] = log
    unique = {id(lg): lg for lg in kept.values()}
    return sorted(unique.values(), key=lambda lg: lg.rel)


def _add_flag(flags: list[str], flag: str) -> None:
    if flag not in flags:
        flags.append(flag)


# ----------------------------------------------------------------------------- JSON fields


def _seed_dicts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-seed dicts from ``seed_results``, a ``seeds`` dict and flat ``seed_<N>`` keys."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        m = _FLAT_SEED_KEY.match(key)
        if m and isinstance(value, dict):
            out[m.group(1)] = value
    for source in (data.get("seeds"), data.get("seed_results")):
        if isinstance(source, dict):
            for seed, value in source.items():
                out.setdefault(str(seed), {}).update(value if isinstance(value, dict) else {"val_bpb": value})
    return out


def claimed_seeds(data: dict[str, Any]) -> list[str]:
    """Seeds the JSON claims: ``seed_results`` keys ∪ ``seeds`` (list or dict) ∪ ``seed_<N>``."""
    seeds = list(_seed_dicts(data))
    listed = data.get("seeds")
    if isinstance(listed, list):
        seeds += [str(s) for s in listed if isinstance(s, (int, str)) and not isinstance(s, bool)]
    return list(dict.fromkeys(seeds))


def _json_score(data: dict[str, Any]) -> tuple[float | None, str]:
    """The first present of val_bpb, mean_val_bpb, mean_bpb, then the per-seed mean."""
    for key in ("val_bpb", "mean_val_bpb", "mean_bpb"):
        value = _number(data.get(key))
        if value is not None:
            return value, key
    per_seed = [_number(v.get("val_bpb")) for v in _seed_dicts(data).values()]
    per_seed = [v for v in per_seed if v is not None]
    if per_seed:
        return statistics.fmean(per_seed), "mean of per-seed val_bpb"
    return None, ""


def json_bytes(data: dict[str, Any]) -> tuple[int | None, str]:
    """bytes_total -> max per-seed artifact bytes -> artifact_bytes_max / artifact_bytes /
    artifact_bytes_mean -> artifact_size_bytes (docs/protocol.md §8.3)."""
    value = _integer(data.get("bytes_total"))
    if value is not None:
        return value, "bytes_total"
    per_seed = [
        _integer(v.get(k)) for v in _seed_dicts(data).values() for k in ("artifact_bytes", "bytes_total")
    ]
    per_seed = [v for v in per_seed if v is not None]
    if per_seed:
        return max(per_seed), "max of per-seed artifact_bytes"
    for key in ("artifact_bytes_max", "artifact_bytes", "artifact_bytes_mean", "artifact_size_bytes"):
        value = _integer(data.get(key))
        if value is not None:
            return value, key
    return None, ""


def _date(data: dict[str, Any], folder: str) -> str:
    for text in (data.get("date"), folder):
        m = _DATE.match(text) if isinstance(text, str) else None
        if m:
            return m.group(1)
    return ""


def _text(data: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


# ----------------------------------------------------------------------------- log support


def _mean_support(score: float, logs: list[_Log], tol: float) -> tuple[str, list[_Log]] | None:
    """The final-line name whose bpb, averaged over the logs carrying it, shows ``score``;
    `_exact` (8 dp) names and names present in more logs win."""
    names: dict[str, list[_Log]] = {}
    for log in logs:
        for name in log.summary.finals:
            if is_score_line(name):
                names.setdefault(name, []).append(log)
    best: tuple[tuple[int, bool], str, list[_Log]] | None = None
    for name, carriers in names.items():
        if matches(score, statistics.fmean(lg.summary.finals[name][1] for lg in carriers), tol):
            rank = (len(carriers), name.endswith("_exact"))
            if best is None or rank > best[0]:
                best = (rank, name, carriers)
    return (best[1], best[2]) if best else None


def _single_support(score: float, logs: list[_Log], tol: float) -> tuple[str, list[_Log]] | None:
    """A final line of one log that shows ``score`` (a designated-seed headline)."""
    for log in logs:
        hits = [n for n, _l, bpb in log.summary.final_lines if is_score_line(n) and matches(score, bpb, tol)]
        if hits:
            exact = [n for n in hits if n.endswith("_exact")]
            return (exact or hits)[-1], [log]
    return None


def log_support(score: float, logs: list[_Log], tol: float = 1e-5) -> tuple[str, list[_Log]] | None:
    """(final-line name, logs) that show ``score``: the mean over the seed logs (docs/protocol.md
    §9.4) or one log's line; None when no log supports it."""
    return _mean_support(score, logs, tol) or _single_support(score, logs, tol)


# ----------------------------------------------------------------------------- building


def _score(fold: _Folder) -> tuple[float | None, str, tuple[str, list[_Log]] | None]:
    """Headline score, its source and the log support; handles ``val_loss`` holding the bpb."""
    data = fold.data
    score, source = _json_score(data)
    if score is not None:
        return score, source, log_support(score, fold.logs)
    loss = _number(data.get("val_loss"))
    if loss is not None and loss < 1.5:
        # The 10L Int5MLP record stores its bpb under val_loss (docs/protocol.md §8.3): accept that
        # only when a log shows it as a bpb, or tentatively when there is no log to ask.
        found = log_support(loss, fold.logs)
        if found:
            return loss, "val_loss (holds the bpb; confirmed by logs)", found
        if not fold.logs:
            return loss, "val_loss (assumed to hold the bpb; no logs)", None
        fold.notes.append(f"val_loss {loss} looks like a bpb but no log shows it")
    return None, "", None


def _seed_results(fold: _Folder, tag: str | None) -> list[SeedResult]:
    """One `SeedResult` per seed (JSON claims ∪ seeds of logs), numbers from the JSON first,
    else from the log's ``tag`` line (the line that supports the headline)."""
    per_json = _seed_dicts(fold.data)
    by_seed = {lg.seed: lg for lg in fold.logs if lg.seed is not None}
    seeds = list(dict.fromkeys(claimed_seeds(fold.data) + sorted(by_seed, key=_seed_order)))
    out = [_one_seed(seed, per_json.get(seed, {}), by_seed.get(seed), tag) for seed in seeds]
    if not out and (fold.logs or fold.data):
        out = [_unnamed_seed(fold, tag)]
    return out


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() and len(seed) <= 18 else (1 << 62, seed)


def _one_seed(seed: str | None, js: dict[str, Any], log: _Log | None, tag: str | None) -> SeedResult:
    res = SeedResult(seed=seed, log_file=log.rel if log else None)
    res.val_bpb = _number(js.get("val_bpb"))
    res.val_loss = _number(js.get("val_loss"))
    res.bytes_total = _integer(js.get("artifact_bytes")) or _integer(js.get("bytes_total"))
    res.steps = _integer(js.get("steps"))
    res.ms_per_step = _number(js.get("ms_per_step")) or _number(js.get("step_avg_ms"))
    if log is not None:
        _fill_from_log(res, log.summary, tag)
    return res


def _fill_from_log(res: SeedResult, summary: LogSummary, tag: str | None) -> None:
    line = summary.finals.get(tag) if tag else None
    if line is None and summary.final_lines:
        line = summary.final_lines[-1][1:]
    if line is not None and res.val_bpb is None:
        res.val_loss, res.val_bpb = line
    elif line is not None and res.val_loss is None and matches(res.val_bpb, line[1]):
        res.val_loss = line[0]
    res.bytes_total = res.bytes_total if res.bytes_total is not None else summary.total_bytes
    res.steps = res.steps if res.steps is not None else summary.steps
    res.ms_per_step = res.ms_per_step if res.ms_per_step is not None else summary.ms_per_step


def _unnamed_seed(fold: _Folder, tag: str | None) -> SeedResult:
    """A run whose seed nobody states: JSON numbers, plus the log that supports them."""
    data = fold.data
    support_log = next((lg for lg in fold.logs if tag and tag in lg.summary.finals), None)
    res = SeedResult(seed=None, val_bpb=_number(data.get("val_bpb")), val_loss=_number(data.get("val_loss")))
    res.bytes_total = _integer(data.get("bytes_total"))
    res.steps = _integer(data.get("step_stop"))
    if support_log is not None:
        res.log_file = support_log.rel
        _fill_from_log(res, support_log.summary, tag)
    return res


def _tokens_per_byte(logs: Iterable[_Log], tag: str | None) -> float | None:
    """tokens/byte = val_bpb·ln2/val_loss (docs/protocol.md §2.4) from the logs' final lines."""
    ratios = []
    for log in logs:
        pair = log.summary.finals.get(tag) if tag else None
        pair = pair or next(
            ((loss, bpb) for _n, loss, bpb in reversed(log.summary.final_lines) if loss), None
        )
        if pair and pair[0]:
            ratios.append(pair[1] * LN2 / pair[0])
    return statistics.fmean(ratios) if ratios else None


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _bytes(fold: _Folder, seeds: list[SeedResult]) -> tuple[int | None, str]:
    value, source = json_bytes(fold.data)
    if value is not None:
        return value, source
    from_logs = [lg.summary.total_bytes for lg in fold.logs if lg.summary.total_bytes is not None]
    seed_logs = {s.log_file for s in seeds if s.log_file}
    preferred = [lg.summary.total_bytes for lg in fold.logs if lg.rel in seed_logs and lg.summary.total_bytes]
    if preferred or from_logs:
        return max(preferred or from_logs), "log: last Total submission size line"
    return None, ""


def _flag(fold: _Folder, entry: Entry, supported: bool) -> None:
    flags = fold.flags
    if entry.bytes_total is not None and entry.bytes_total > BYTE_CAP:
        _add_flag(flags, FLAG_OVER_BUDGET)
    if any(s.log_file and s.bytes_total and s.bytes_total > BYTE_CAP for s in entry.seeds):
        _add_flag(flags, FLAG_OVER_BUDGET)
    if not fold.logs:
        _add_flag(flags, FLAG_NO_LOGS)
    elif entry.score_bpb is not None and not supported:
        _add_flag(flags, FLAG_SCORE_UNSUPPORTED)
    if entry.score_bpb is None:
        _add_flag(flags, FLAG_NO_SCORE)
    claimed = claimed_seeds(fold.data)
    logged = {lg.seed for lg in fold.logs}
    if len(claimed) >= 2 and any(seed not in logged for seed in claimed):
        _add_flag(flags, FLAG_SEEDS_WITHOUT_LOGS)
    if entry.track == RECORD_TRACK and len({s.seed for s in entry.seeds} - {None}) < MIN_RECORD_SEEDS:
        _add_flag(flags, FLAG_FEW_SEEDS)
    entry.flags = list(flags)


def _entry(fold: _Folder) -> Entry:
    data, folder = fold.data, fold.path.name
    score, source, found = _score(fold)
    tag = found[0] if found else None
    entry = Entry(
        key=folder,
        name=_text(data, "name", "run_name") or folder,
        author=_text(data, "author"),
        github_id=_text(data, "github_id"),
        date=_date(data, folder),
        track=_text(data, "track") or fold.track,
        score_bpb=score,
        score_source=source + _support_note(found),
        source_path=str(fold.path),
    )
    entry.seeds = _seed_results(fold, tag)
    entry.bytes_total, bytes_source = _bytes(fold, entry.seeds)
    entry.steps = (
        _integer(data.get("step_stop"))
        or _integer(data.get("train_steps"))
        or _mean_int(s.steps for s in entry.seeds)
    )
    entry.ms_per_step = _number(data.get("step_avg_ms_mean")) or _mean_or_none(
        s.ms_per_step for s in entry.seeds
    )
    entry.tokens_per_byte = _tokens_per_byte(found[1] if found else fold.logs, tag)
    _flag(fold, entry, found is not None)
    entry.summary = _summary(fold, entry, bytes_source)
    return entry


def _support_note(found: tuple[str, list[_Log]] | None) -> str:
    if not found:
        return ""
    name, logs = found
    if len(logs) == 1:
        return f"; shown by {logs[0].rel}: {name}"
    return f"; = mean of {name} over {len(logs)} logs"


def _mean_int(values: Iterable[int | None]) -> int | None:
    mean = _mean_or_none(float(v) for v in values if v is not None)
    return round(mean) if mean is not None else None


def _summary(fold: _Folder, entry: Entry, bytes_source: str) -> str:
    blurb = _text(fold.data, "blurb", "technique_summary")
    parts = [blurb[:200]] if blurb else []
    if bytes_source:
        parts.append(f"bytes from {bytes_source}")
    parts += fold.notes
    return "; ".join(parts)


def _import_folder(path: Path, track: str) -> Entry:
    fold = _Folder(path=path, track=track)
    _read_logs(fold)
    json_path = _submission_json(path)
    if json_path is None:
        _add_flag(fold.flags, FLAG_NO_JSON)
        fold.notes.append(f"{path}: no submission*.json")
    else:
        try:
            fold.data = read_json_limited(json_path)
        except (RecordReadError, OSError) as exc:
            _add_flag(fold.flags, FLAG_BAD_JSON)
            fold.notes.append(str(exc))
    return _entry(fold)


def import_records(root: Path) -> list[Entry]:
    """One `Entry` per folder of ``root/<track>/<folder>/`` (upstream layout), sorted by
    (track, folder). Unreadable files become flags on their entry, never an exception."""
    root = Path(root)
    if not root.is_dir():
        raise RecordReadError(f"{root}: not a directory (expected records/<track>/<folder>/)")
    entries = []
    for track_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        track = track_dir.name.removeprefix("track_")
        for folder in sorted(p for p in track_dir.iterdir() if p.is_dir()):
            entries.append(_import_folder(folder, track))
    return entries


# ----------------------------------------------------------------------------- our runs


@dataclass
class _Run:
    """One of our runs: its submission.json and what its train.log shows."""

    path: Path
    data: dict[str, Any]
    log: LogSummary | None
    note: str = ""


def _read_run(path: Path) -> _Run:
    data = read_json_limited(path)
    log_path = path.parent / "train.log"
    if not log_path.is_file():
        return _Run(path, data, None, f"{log_path}: missing")
    try:
        return _Run(path, data, parse_log(complete_lines(read_text_limited(log_path, MAX_LOG_BYTES))))
    except RecordReadError as exc:
        return _Run(path, data, None, str(exc))


def _run_supported(run: _Run) -> bool:
    """The run's val_bpb (8 dp, as its ``_exact`` lines print it) is on a final line of its log."""
    bpb = _number(run.data.get("val_bpb"))
    if bpb is None or run.log is None:
        return False
    target = round(bpb, 8)
    return any(is_score_line(n) and abs(v - target) <= 5e-9 for n, _l, v in run.log.final_lines)


def _run_seed(run: _Run) -> SeedResult:
    data = run.data
    seed = data.get("seed")
    return SeedResult(
        seed=None if seed is None else str(seed),
        val_bpb=_number(data.get("val_bpb")),
        val_loss=_number(data.get("val_loss")),
        bytes_total=_integer(data.get("bytes_total")),
        steps=_integer(data.get("steps")),
        ms_per_step=_number(data.get("ms_per_step")),
        log_file=str(run.path.parent / "train.log") if run.log is not None else None,
    )


def _run_flags(runs: list[_Run], protocol: str) -> list[str]:
    flags: list[str] = []
    for run in runs:
        data = run.data
        if data.get("over_budget") is True or (_integer(data.get("bytes_total")) or 0) > BYTE_CAP:
            _add_flag(flags, FLAG_OVER_BUDGET)
        if data.get("valid") is False:
            _add_flag(flags, FLAG_INVALID)
        baselines = data.get("baselines")
        if isinstance(baselines, dict) and baselines.get("beats_all") is False:
            _add_flag(flags, FLAG_BASELINES)
        if run.log is None:
            _add_flag(flags, FLAG_NO_LOGS)
        elif not _run_supported(run):
            _add_flag(flags, FLAG_SCORE_UNSUPPORTED)
    if protocol == "full" and len(runs) < MIN_RECORD_SEEDS:
        _add_flag(flags, FLAG_FEW_SEEDS)
    return flags


def _group_entry(key: str, runs: list[_Run]) -> Entry:
    first = runs[0].data
    seeds = [_run_seed(r) for r in runs]
    scores = [s.val_bpb for s in seeds if s.val_bpb is not None]
    ratios = [
        _number(r.data.get("val_tokens")) / _number(r.data.get("val_bytes"))  # type: ignore[operator]
        for r in runs
        if _number(r.data.get("val_tokens")) and _number(r.data.get("val_bytes"))
    ]
    sizes = [s.bytes_total for s in seeds if s.bytes_total is not None]
    protocol = _text(first, "protocol") or "unknown"
    entry = Entry(
        key=key,
        name=_text(first, "name") or runs[0].path.parents[2].name,
        author=_text(first, "author"),
        github_id=_text(first, "github_id"),
        date=max(_date(r.data, "") for r in runs),
        track=_text(first, "track"),
        protocol=protocol,
        dataset_sha256=_text(first, "dataset_sha256") or None,
        score_bpb=statistics.fmean(scores) if scores else None,
        score_source=f"mean val_bpb of {len(scores)} run(s)" if scores else "",
        seeds=seeds,
        bytes_total=max(sizes) if sizes else None,
        steps=_mean_int(s.steps for s in seeds),
        ms_per_step=_mean_or_none(s.ms_per_step for s in seeds),
        tokens_per_byte=statistics.fmean(ratios) if ratios else None,
        source_path=str(runs[0].path.parents[2]),
    )
    entry.flags = _run_flags(runs, protocol)
    if entry.score_bpb is None:
        _add_flag(entry.flags, FLAG_NO_SCORE)
    notes = [r.note for r in runs if r.note]
    entry.summary = "; ".join([f"{len(runs)} run(s): {', '.join(r.path.parent.name for r in runs)}"] + notes)
    return entry


def _group_key(run: _Run) -> tuple[str, str, str]:
    data = run.data
    name = _text(data, "name") or run.path.parents[2].name
    return name, _text(data, "protocol"), _text(data, "dataset_sha256")


def import_runs(submissions_dir: Path) -> list[Entry]:
    """Our runs (``submissions/*/runs/*/submission.json`` + ``train.log``), one `Entry` per
    (submission name, protocol, dataset_sha256) with the runs as its seeds. An unreadable
    run JSON raises `RecordReadError` naming the file (our own files must be well formed)."""
    groups: dict[tuple[str, str, str], list[_Run]] = {}
    for path in sorted(Path(submissions_dir).glob("*/runs/*/submission.json")):
        run = _read_run(path)
        groups.setdefault(_group_key(run), []).append(run)
    names = [k[0] for k in groups]
    entries = []
    for (name, protocol, sha), runs in sorted(groups.items()):
        key = name if names.count(name) == 1 else f"{name}[{protocol or '?'}:{sha[:8] or '?'}]"
        entries.append(_group_entry(key, sorted(runs, key=lambda r: r.path)))
    return entries
