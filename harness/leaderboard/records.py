"""Import leaderboard entries from files: upstream record folders
(``records/<track>/<date>_<Name>/`` with ``submission.json`` and train logs, the layout of
``openai/parameter-golf``), and the JSON/text readers that `harness.leaderboard.ourruns`
(our own ``submissions/*/runs/*``) shares. Only JSON and log text are read, with size
limits; no submission code is imported or run.

The score rule for a record folder (docs/protocol.md §10.3):

1. **Logs.** Every ``*.log`` and ``*.txt`` at any depth below the folder is read; files with
   nothing a train log prints (``requirements.txt``) are ignored, exact copies (a
   ``train.log`` copy of ``train_seed42.log``) are dropped. Each log is attributed to a seed
   by its file name (``train_seed42.log``, ``seed_42.log``, ``log_seed-7.txt``), else by its
   own ``seed:`` line; when the two disagree the file name wins and ``seed_conflict`` is set.
2. **Protocol of a score line.** A final line (``final_…``, ``quantized…``, ``legal_ttt…``
   with ``val_bpb:``; pre-quantization lines never count) is test-time training when its
   name or text says ``ttt``, sliding window when it says ``sliding`` or gives a ``stride:``
   (or follows ``final_eval_mode:sliding_window``), else roundtrip; an ``_exact`` line
   takes the protocol of the rounded line it repeats. A run's score for a protocol is its
   last ``_exact`` line of that protocol, else its last line of it.
3. **Families.** When no seed has two logs, all logs are one family. Otherwise logs are
   grouped by directory and file name with the seed cut out (``train_seed*_original.log``
   vs ``train_seed*_rerun_gptq8s.log``, ``train_seed*.log`` vs ``ttt_pr1767/seed_*.log``);
   a ``train.log`` joins the ``train_seed*.log`` family when its seed is not there yet.
4. **The reported family** is the one whose logs show the most per-seed values of
   ``submission.json``; else the one whose mean agrees with the JSON headline; else the one
   whose single run shows it; else the one with the most seeds (then the shallowest
   folder, then the first name). Seeds the JSON claims that this family lacks are taken
   from another family's log for that seed when it shows the JSON's per-seed value.
5. **The headline** is the mean over the reported runs of their final line of the best
   protocol every one of them has (TTT, else sliding window, else roundtrip). The JSON's
   value for that protocol (``sliding_val_bpb``/``ttt_val_bpb`` when given, else
   ``val_bpb``, ``mean_val_bpb``, ``mean_bpb``, the per-seed mean) is only compared: when
   the two differ by one unit of the coarser of their precisions or more, ``json_disagrees``
   is set (a rounded or truncated mean agrees). The README prints the mean rounded half-up to 4 decimals
   (`harness.leaderboard.render.round_half_up`). Without any score line in the logs the
   JSON value is the headline, flagged ``no_logs`` or ``score_not_in_logs``.
6. **Bytes** are the maximum over the JSON's size fields and the last ``Total submission
   size`` line of every log that finished (has a score line; a log that stopped before
   scoring counts only when none finished); above 16,000,000 is ``over_budget`` whatever the
   JSON says; a negative or non-integer size is ``bytes_invalid``, no size ``bytes_missing``.

`import_records` refuses (`RecordReadError`, exit 2 in the CLI) a folder that is a track
folder, a single record folder, or holds no record folders (a record folder is a
directory with a ``submission*.json`` or a dated name ``YYYY-MM-DD_…``).

Longer than 400 lines because upstream's record folders come in many historical shapes (JSON
key variants, seed dicts, log families, missing sizes), and every shape is read and checked
here in one place so the leaderboard has one importer.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.api.errors import DataError
from harness.leaderboard.entry import (
    FLAG_FEW_SEEDS,
    FLAG_NO_LOGS,
    FLAG_OVER_BUDGET,
    FLAG_SCORE_UNSUPPORTED,
    FLAG_SEEDS_WITHOUT_LOGS,
    Entry,
    SeedResult,
)
from harness.leaderboard.logparse import LogSummary, parse_log
from harness.leaderboard.runlogs import PROTOCOL_TEXT, Reported, RunLog, agrees, attribute_seed, reported

BYTE_CAP = 16_000_000
MAX_JSON_BYTES = 1_000_000
MAX_LOG_BYTES = 50_000_000
MAX_LOG_FILES = 200
"""Log files read per record folder (sorted by path); more are noted and skipped."""
RECORD_TRACK = "10min_16mb"
MIN_RECORD_SEEDS = 3
LN2 = math.log(2.0)

# Flags this importer adds beside those of harness.leaderboard.entry (stable strings too).
FLAG_BAD_JSON = "unreadable_submission_json"
FLAG_NO_JSON = "no_submission_json"
FLAG_LOG_TOO_LARGE = "log_too_large"
FLAG_NO_SCORE = "no_score"
FLAG_JSON_DISAGREES = "json_disagrees"
FLAG_BYTES_MISSING = "bytes_missing"
FLAG_BYTES_INVALID = "bytes_invalid"
FLAG_SEED_CONFLICT = "seed_conflict"

_SEED_IN_NAME = re.compile(r"seed[_-]?(\d+)", re.IGNORECASE)
_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})")
_FLAT_SEED_KEY = re.compile(r"^seed_(\d+)$")
_LOG_SUFFIXES = (".log", ".txt")
_PROTOCOL_KEYS = {"ttt": ("ttt_val_bpb", "legal_ttt_val_bpb"), "sliding": ("sliding_val_bpb",)}
_HEADLINE_KEYS = ("val_bpb", "mean_val_bpb", "mean_bpb")
_SIZE_KEYS = (
    "bytes_total",
    "artifact_bytes_max",
    "artifact_bytes",
    "artifact_bytes_mean",
    "artifact_size_bytes",
)


class RecordReadError(DataError):
    """A file of a record folder could not be read within the limits, or the folder given is
    not a records folder (message names it and what was expected)."""


@dataclass
class _Folder:
    """Everything read from one record folder before it becomes an `Entry`."""

    path: Path
    track: str
    data: dict[str, Any] = field(default_factory=dict)
    logs: list[RunLog] = field(default_factory=list)
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


def json_number(value: Any) -> float | None:
    """A finite float from a JSON value (bools, strings, NaN are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def json_integer(value: Any) -> int | None:
    num = json_number(value)
    return int(num) if num is not None and num == int(num) else None


# ----------------------------------------------------------------------------- folder scan


def _dated(path: Path) -> bool:
    return _DATE.match(path.name) is not None


def is_record_folder(path: Path) -> bool:
    """A directory with a ``submission*.json`` or a dated name (``2026-03-17_NaiveBaseline``)."""
    try:
        return path.is_dir() and (_dated(path) or any(p.is_file() for p in path.glob("submission*.json")))
    except OSError:
        return False


def record_folders(root: Path) -> list[tuple[str, Path]]:
    """(track, folder) for every record folder of ``root/<track>/<folder>/``, sorted; stray
    directories inside a track are skipped. `RecordReadError` naming ``root`` when it is not a
    directory, is a track folder (named ``track_*`` or holding record folders) or a record
    folder itself, or holds no record folder."""
    root = Path(root)
    expected = (
        "expected the records/ folder: <DIR>/<track>/<record>/, e.g. records/track_10min_16mb/<record>/"
    )
    if not root.is_dir():
        raise RecordReadError(f"{root}: not a directory ({expected})")
    children = sorted(p for p in root.iterdir() if p.is_dir())
    direct = [c for c in children if is_record_folder(c)]
    found = []
    if not root.name.startswith("track_"):
        for track_dir in children:
            track = track_dir.name.removeprefix("track_")
            found += [(track, p) for p in sorted(track_dir.iterdir()) if p.is_dir() and is_record_folder(p)]
    if found:
        return found
    if root.name.startswith("track_") or direct:
        example = f" such as {direct[0].name}" if direct else ""
        raise RecordReadError(
            f"{root}: this is a track folder (it holds record folders{example}); pass its parent "
            f"{root.parent} ({expected})"
        )
    own = [p for p in root.iterdir() if p.is_file() and p.name.lower().endswith((".json", *_LOG_SUFFIXES))]
    if any(p.name.startswith("submission") or p.name.lower().endswith(_LOG_SUFFIXES) for p in own):
        raise RecordReadError(
            f"{root}: this is a record folder (it holds submission.json or train logs), not a records "
            f"folder; pass {root.parent.parent} ({expected})"
        )
    names = ", ".join(c.name for c in children[:8]) or "no subfolders"
    raise RecordReadError(
        f"{root}: no record folders found (subfolders: {names}); {expected}, where a record folder "
        "has a submission*.json or a dated name (YYYY-MM-DD_...)"
    )


def _submission_json(folder: Path) -> Path | None:
    exact = folder / "submission.json"
    if exact.is_file():
        return exact
    variants = sorted(p for p in folder.glob("submission*.json") if p.is_file())
    return variants[0] if variants else None


def _log_files(folder: Path) -> list[Path]:
    """``*.log`` and ``*.txt`` at any depth, sorted by path (symlinks are not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath) / f for f in filenames if f.lower().endswith(_LOG_SUFFIXES)]
    return sorted(p for p in found if p.is_file() and not p.is_symlink())


def _is_run_log(summary: LogSummary) -> bool:
    """Whether a text file is a train log at all (``requirements.txt`` is not)."""
    return bool(
        summary.final_lines
        or summary.total_bytes is not None
        or summary.steps is not None
        or summary.seed is not None
        or summary.model_params is not None
    )


def _read_logs(fold: _Folder) -> None:
    """Parse every log, attribute its seed; drop files that are no log and exact copies."""
    paths = _log_files(fold.path)
    if len(paths) > MAX_LOG_FILES:
        fold.notes.append(f"{fold.path}: {len(paths)} log files, only the first {MAX_LOG_FILES} read")
        paths = paths[:MAX_LOG_FILES]
    for path in paths:
        rel = path.relative_to(fold.path).as_posix()
        try:
            text = read_text_limited(path, MAX_LOG_BYTES)
        except (RecordReadError, OSError) as exc:
            add_flag(fold.flags, FLAG_LOG_TOO_LARGE)
            fold.notes.append(str(exc))
            continue
        summary = parse_log(text)
        if not _is_run_log(summary):
            continue
        log = RunLog(rel, summary, hashlib.sha256(text.encode("utf-8")).hexdigest())
        attribute_seed(log)
        fold.logs.append(log)
    fold.logs = _dedupe(fold.logs)
    for log in fold.logs:
        if log.seed_conflict:
            add_flag(fold.flags, FLAG_SEED_CONFLICT)
            fold.notes.append(log.seed_conflict)


def _dedupe(logs: list[RunLog]) -> list[RunLog]:
    """Keep one log per run: same content, or same seed and same final lines (a ``train.log``
    copy of a ``train_seed*.log``); the copy whose file name carries the seed wins."""
    logs = sorted(logs, key=lambda lg: (_SEED_IN_NAME.search(Path(lg.rel).stem) is None, lg.rel))
    kept: dict[object, RunLog] = {}
    for log in logs:
        run = (log.seed, tuple(log.summary.final_lines)) if log.seed and log.summary.final_lines else None
        if log.digest in kept or (run is not None and run in kept):
            continue
        kept[log.digest] = log
        if run is not None:
            kept[run] = log
    unique = {id(lg): lg for lg in kept.values()}
    return sorted(unique.values(), key=lambda lg: lg.rel)


def add_flag(flags: list[str], flag: str) -> None:
    if flag not in flags:
        flags.append(flag)


# ----------------------------------------------------------------------------- JSON fields


def _seed_dicts(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-seed dicts from ``seed_results``, a ``seeds`` dict, flat ``seed_<N>`` keys and a
    ``seeds`` list beside a ``seed_scores`` list of the same length."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        m = _FLAT_SEED_KEY.match(key)
        if m and isinstance(value, dict):
            out[m.group(1)] = value
    for source in (data.get("seeds"), data.get("seed_results")):
        if isinstance(source, dict):
            for seed, value in source.items():
                out.setdefault(str(seed), {}).update(value if isinstance(value, dict) else {"val_bpb": value})
    seeds, scores = data.get("seeds"), data.get("seed_scores")
    if isinstance(seeds, list) and isinstance(scores, list) and len(seeds) == len(scores):
        for seed, value in zip(seeds, scores, strict=True):
            if isinstance(seed, (int, str)) and not isinstance(seed, bool):
                out.setdefault(str(seed), {}).setdefault("val_bpb", value)
    return out


def claimed_seeds(data: dict[str, Any]) -> list[str]:
    """Seeds the JSON claims: ``seed_results`` keys ∪ ``seeds`` (list or dict) ∪ ``seed_<N>``."""
    seeds = list(_seed_dicts(data))
    listed = data.get("seeds")
    if isinstance(listed, list):
        seeds += [str(s) for s in listed if isinstance(s, (int, str)) and not isinstance(s, bool)]
    return list(dict.fromkeys(seeds))


def json_per_seed(data: dict[str, Any]) -> dict[str, float]:
    """seed -> the JSON's per-seed val_bpb (seeds without a finite number are left out)."""
    out = {seed: json_number(v.get("val_bpb")) for seed, v in _seed_dicts(data).items()}
    return {seed: v for seed, v in out.items() if v is not None}


def json_claim(data: dict[str, Any], protocol: str | None = None) -> tuple[float | None, str]:
    """The JSON's headline for ``protocol``: its protocol key (``sliding_val_bpb``,
    ``ttt_val_bpb``) when given, else val_bpb, mean_val_bpb, mean_bpb, else the per-seed mean."""
    for key in _PROTOCOL_KEYS.get(protocol or "", ()) + _HEADLINE_KEYS:
        value = json_number(data.get(key))
        if value is not None:
            return value, key
    per_seed = list(json_per_seed(data).values())
    if per_seed:
        return statistics.fmean(per_seed), "mean of per-seed val_bpb"
    return None, ""


def _json_sizes(data: dict[str, Any]) -> tuple[list[tuple[int, int, str]], list[str]]:
    """(bytes, 0, field) for every size field of the JSON, and a note per invalid one."""
    fields: list[tuple[str, Any]] = [(k, data.get(k)) for k in _SIZE_KEYS]
    for seed, value in _seed_dicts(data).items():
        fields += [(f"seed {seed} {k}", value.get(k)) for k in ("artifact_bytes", "bytes_total")]
    sizes: list[tuple[int, int, str]] = []
    bad: list[str] = []
    for name, value in fields:
        if value is None:
            continue
        num = json_integer(value)
        if num is None or num < 0:
            bad.append(f"submission.json {name} = {str(value)[:40]!r}: expected a whole number of bytes >= 0")
        else:
            sizes.append((num, 0, f"submission.json {name}"))
    return sizes, bad


def json_bytes(data: dict[str, Any]) -> tuple[int | None, str]:
    """The largest valid size field of the JSON and its name (None when there is none)."""
    sizes, _bad = _json_sizes(data)
    return (max(sizes)[0], max(sizes)[2]) if sizes else (None, "")


def json_date(data: dict[str, Any], folder: str) -> str:
    for text in (data.get("date"), folder):
        m = _DATE.match(text) if isinstance(text, str) else None
        if m:
            return m.group(1)
    return ""


def json_text(data: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


# ----------------------------------------------------------------------------- building


def _score(fold: _Folder, rep: Reported | None) -> tuple[float | None, str]:
    """The headline (docstring rule 5) and where it came from; flags a disagreeing JSON."""
    data = fold.data
    if rep is not None and rep.mean is not None:
        mean, proto = rep.mean, rep.protocol or "roundtrip"
        source = (
            f"logs: mean of the {PROTOCOL_TEXT[proto]} final line over {len(rep.runs)} run(s) "
            f"[{rep.family}; {rep.rule}]"
        )
        claim, key = json_claim(data, proto)
        if claim is not None:
            if not agrees(claim, mean, rep.decimals):
                add_flag(fold.flags, FLAG_JSON_DISAGREES)
                fold.notes.append(
                    f"submission.json {key} = {claim} disagrees with the logs' mean {mean:.8f} "
                    f"({PROTOCOL_TEXT[proto]}, {len(rep.runs)} run(s))"
                )
            return mean, source
        loss = json_number(data.get("val_loss"))
        if loss is not None and loss < 1.5 and agrees(loss, mean, rep.decimals):
            # The 10L Int5MLP record stores its bpb under val_loss (docs/protocol.md §8.3).
            fold.notes.append(f"submission.json val_loss = {loss} holds the bpb")
        return mean, source
    score, key = json_claim(data)
    if score is None:
        loss = json_number(data.get("val_loss"))
        if loss is not None and loss < 1.5 and not fold.logs:
            score, key = loss, "val_loss (assumed to hold the bpb)"
    if score is None:
        return None, ""
    add_flag(fold.flags, FLAG_SCORE_UNSUPPORTED if fold.logs else FLAG_NO_LOGS)
    return score, f"submission.json {key} (no score line in any log)"


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if seed.isdigit() and len(seed) <= 18 else (1 << 62, seed)


def _run_result(log: RunLog, line: Any, js: dict[str, Any]) -> SeedResult:
    summary = log.summary
    return SeedResult(
        seed=log.seed,
        val_bpb=line.bpb,
        val_loss=line.loss,
        bytes_total=summary.total_bytes,
        steps=summary.steps if summary.steps is not None else json_integer(js.get("steps")),
        ms_per_step=summary.ms_per_step
        if summary.ms_per_step is not None
        else (json_number(js.get("ms_per_step")) or json_number(js.get("step_avg_ms"))),
        log_file=log.rel,
    )


def _json_result(seed: str | None, js: dict[str, Any]) -> SeedResult:
    return SeedResult(
        seed=seed,
        val_bpb=json_number(js.get("val_bpb")),
        val_loss=json_number(js.get("val_loss")),
        bytes_total=json_integer(js.get("artifact_bytes")) or json_integer(js.get("bytes_total")),
        steps=json_integer(js.get("steps")),
        ms_per_step=json_number(js.get("ms_per_step")) or json_number(js.get("step_avg_ms")),
    )


def _seed_results(fold: _Folder, rep: Reported | None) -> list[SeedResult]:
    """With scored logs: one result per reported run (JSON-claimed seeds without a log get an
    empty result); without: the JSON's per-seed numbers, or one unnamed result."""
    per_json = _seed_dicts(fold.data)
    claimed = claimed_seeds(fold.data)
    if rep is None or not rep.runs:
        out = [_json_result(seed, per_json.get(seed, {})) for seed in claimed]
        if not out and fold.data:
            out = [_json_result(None, fold.data)]
            out[0].steps = out[0].steps or json_integer(fold.data.get("step_stop"))
        return out
    runs = {log.seed: (log, line) for log, line in rep.runs if log.seed is not None}
    order = claimed + sorted((s for s in runs if s not in claimed), key=_seed_order)
    out = []
    for seed in order:
        if seed in runs:
            out.append(_run_result(runs[seed][0], runs[seed][1], per_json.get(seed, {})))
        else:
            out.append(SeedResult(seed=seed))
    unnamed = sorted(((lg, ln) for lg, ln in rep.runs if lg.seed is None), key=lambda p: p[0].rel)
    return out + [_run_result(lg, ln, {}) for lg, ln in unnamed]


def _tokens_per_byte(rep: Reported | None) -> float | None:
    """tokens/byte = val_bpb·ln2/val_loss (docs/protocol.md §2.4) from the reported lines."""
    ratios = [line.bpb * LN2 / line.loss for _log, line in (rep.runs if rep else []) if line.loss]
    return statistics.fmean(ratios) if ratios else None


def mean_or_none(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.fmean(vals) if vals else None


def _bytes(fold: _Folder) -> tuple[int | None, str]:
    """Docstring rule 6: the largest of the JSON sizes and the finished logs' totals."""
    sizes, bad = _json_sizes(fold.data)
    for note in bad:
        add_flag(fold.flags, FLAG_BYTES_INVALID)
        fold.notes.append(note)
    finished = [lg for lg in fold.logs if lg.scored] or fold.logs
    sizes += [
        (lg.summary.total_bytes, 1, f"{lg.rel} Total submission size")
        for lg in finished
        if lg.summary.total_bytes is not None
    ]
    if not sizes:
        add_flag(fold.flags, FLAG_BYTES_MISSING)
        fold.notes.append(
            "no size: no bytes field in submission.json and no Total submission size line in the logs"
        )
        return None, ""
    value, _log, source = max(sizes)
    if value > BYTE_CAP:
        add_flag(fold.flags, FLAG_OVER_BUDGET)
    return value, f"max of {len(sizes)} size(s): {source}"


def _flag(fold: _Folder, entry: Entry, rep: Reported | None) -> None:
    flags = fold.flags
    if not fold.logs:
        add_flag(flags, FLAG_NO_LOGS)
    if entry.score_bpb is None:
        add_flag(flags, FLAG_NO_SCORE)
    claimed = claimed_seeds(fold.data)
    logged = {lg.seed for lg, _line in rep.runs} if rep else set()
    if len(claimed) >= 2 and any(seed not in logged for seed in claimed):
        add_flag(flags, FLAG_SEEDS_WITHOUT_LOGS)
    scored = {s.seed for s in entry.seeds if s.val_bpb is not None} - {None}
    if entry.track == RECORD_TRACK and len(scored) < MIN_RECORD_SEEDS:
        add_flag(flags, FLAG_FEW_SEEDS)
    entry.flags = list(flags)


def _entry(fold: _Folder) -> Entry:
    data, folder = fold.data, fold.path.name
    claim, _key = json_claim(data)
    loss = json_number(data.get("val_loss"))
    if claim is None and loss is not None and loss < 1.5:
        claim = loss
    rep = reported(fold.logs, claim, json_per_seed(data))
    if rep is not None:
        fold.notes += rep.notes
    entry = Entry(
        key=folder,
        name=json_text(data, "name", "run_name") or folder,
        author=json_text(data, "author"),
        github_id=json_text(data, "github_id"),
        date=json_date(data, folder),
        track=json_text(data, "track") or fold.track,
        source_path=str(fold.path),
    )
    entry.score_bpb, entry.score_source = _score(fold, rep)
    entry.seeds = _seed_results(fold, rep)
    entry.bytes_total, bytes_source = _bytes(fold)
    entry.steps = (
        json_integer(data.get("step_stop"))
        or json_integer(data.get("train_steps"))
        or mean_int(s.steps for s in entry.seeds)
    )
    entry.ms_per_step = json_number(data.get("step_avg_ms_mean")) or mean_or_none(
        s.ms_per_step for s in entry.seeds
    )
    entry.tokens_per_byte = _tokens_per_byte(rep)
    _flag(fold, entry, rep)
    entry.summary = _summary(fold, rep, bytes_source)
    return entry


def mean_int(values: Iterable[int | None]) -> int | None:
    mean = mean_or_none(float(v) for v in values if v is not None)
    return round(mean) if mean is not None else None


def _summary(fold: _Folder, rep: Reported | None, bytes_source: str) -> str:
    blurb = json_text(fold.data, "blurb", "technique_summary")
    parts = [blurb[:200]] if blurb else []
    if bytes_source:
        parts.append(f"bytes: {bytes_source}")
    for fam in rep.others if rep else []:
        mean = fam.mean()
        shown = f"{mean:.8f}" if mean is not None else "no common score line"
        parts.append(f"not reported: {fam.label} ({len(fam.runs)} run(s), mean {shown})")
    parts += fold.notes
    return "; ".join(parts)


def _import_folder(path: Path, track: str) -> Entry:
    fold = _Folder(path=path, track=track)
    _read_logs(fold)
    json_path = _submission_json(path)
    if json_path is None:
        add_flag(fold.flags, FLAG_NO_JSON)
        fold.notes.append(f"{path}: no submission*.json")
    else:
        try:
            fold.data = read_json_limited(json_path)
        except (RecordReadError, OSError) as exc:
            add_flag(fold.flags, FLAG_BAD_JSON)
            fold.notes.append(str(exc))
    return _entry(fold)


def import_records(root: Path) -> list[Entry]:
    """One `Entry` per record folder of ``root/<track>/<folder>/`` (upstream layout), sorted by
    (track, folder). Unreadable files become flags on their entry, never an exception; a
    ``root`` that is no records folder raises `RecordReadError` (see `record_folders`)."""
    return [_import_folder(folder, track) for track, folder in record_folders(root)]
