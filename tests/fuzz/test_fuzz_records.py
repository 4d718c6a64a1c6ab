"""Fuzz the leaderboard's readers (`harness.leaderboard.records`, `harness.leaderboard.logparse`) and its
Markdown renderer with mutated copies of every real ``submission.json`` and train log (upstream
records in ``../shared/data/records`` and our own ``submissions/*/runs/*``).

Contract: `import_records` turns an unreadable file into a flag on its entry (never an
exception), `pool_runs` raises only `PgolfError`s naming the file, `parse_log` never
raises, and whatever was read renders to Markdown in which no hostile text is live
(no raw ``<script``, no row broken out of its table).

Mutation families: JSON values replaced by hostile ones (wrong types, NaN/Infinity, huge
integers beyond Python's 4,300-digit limit, deep nesting, ``<script>``, pipes and
newlines), raw byte mutations (invalid UTF-8 included), pickle payloads, oversized files;
for logs, hostile lines inserted (numbers with thousands of digits, ``1e999``, NUL bytes,
f-string templates, giant lines), lines deleted or duplicated.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.leaderboard.logparse import LogSummary, parse_log
from harness.leaderboard.ourruns import pool_runs
from harness.leaderboard.records import MAX_JSON_BYTES, import_records
from harness.leaderboard.render import build_rows, render_markdown
from tests.conftest import ROOT, SHARED_DATA
from tests.fuzz.conftest import Mutator, dumps_hostile, fuzz_count, pickle_payload

DEFAULT_N = 1000
DEFAULT_JSON_N = 600
"""submission.json inputs in the default suite (each import re-reads the folder's logs)."""
MAX_LOG_SAMPLE = 200_000
"""Logs over this size are fuzzed as their first and last 150 lines (the rest is steps)."""

HOSTILE_LINES = (
    "final_int8_zlib_roundtrip_exact val_loss:nan val_bpb:1e999",
    "final_int8_zlib_roundtrip val_loss:" + "9" * 5000 + " val_bpb:" + "9" * 5000,
    "final_x val_bpb:" + "1" * 5000 + ".5",
    "step:" + "9" * 5000 + "/1 train_loss:1.0 train_time:" + "9" * 5000 + "ms step_avg:" + "9" * 5000 + "ms",
    "9" * 5000 + "/" + "9" * 5000 + " train_loss: 1.0 train_time: " + "9" * 5000 + "m",
    "stopping_early: wallclock_cap train_time:" + "9" * 5000 + "ms step:" + "9" * 5000 + "/0",
    "Total submission size int8+zlib: " + "9" * 5000 + " bytes",
    "Code size (compressed): " + "9" * 5000 + " bytes",
    "model_params:" + "9" * 5000,
    "seed: " + "9" * 5000,
    "final_<script>alert(1)</script> val_loss:1.0 val_bpb:1.0",
    "step:0/0 train_loss:1 train_time:0ms step_avg:0ms",
    "\x00\x00\x00 final_int8_zlib_roundtrip val_bpb:1.0",
    'log0(f"final_int8_zlib_roundtrip val_bpb:{q_val_bpb:.8f}")',
    "x" * 1_000_000,
    "run_id:<script> run_dir:|||",
    "1700000000.123 final_int8_zlib_roundtrip_exact val_loss:2.0 val_bpb:1.2",
)


@dataclass(frozen=True)
class Source:
    """One real file to mutate, with the folder layout its reader expects."""

    kind: str
    """"record" (upstream folder) or "run" (our submissions/*/runs/*)."""
    folder: Path
    json_name: str | None
    logs: dict[str, str]
    """Log file names in the folder -> text (large logs sampled)."""


def _sample(text: str) -> str:
    if len(text) <= MAX_LOG_SAMPLE:
        return text
    lines = text.splitlines()
    return "\n".join(lines[:150] + lines[-150:]) + "\n"


def _record_sources() -> list[Source]:
    root = SHARED_DATA / "records"
    out = []
    for folder in sorted(p for p in root.glob("*/*") if p.is_dir()) if root.is_dir() else []:
        logs = {
            p.name: _sample(p.read_text(encoding="utf-8", errors="replace"))
            for p in sorted(folder.glob("*.log"))
        }
        json_name = "submission.json" if (folder / "submission.json").is_file() else None
        out.append(Source("record", folder, json_name, logs))
    return out


def _run_sources() -> list[Source]:
    out = []
    for path in sorted((ROOT / "submissions").glob("*/runs/*/submission.json")):
        log = path.parent / "train.log"
        logs = (
            {"train.log": _sample(log.read_text(encoding="utf-8", errors="replace"))} if log.is_file() else {}
        )
        out.append(Source("run", path.parent, "submission.json", logs))
    return out


@pytest.fixture(scope="module")
def sources() -> list[Source]:
    found = _record_sources() + _run_sources()
    if not found:
        pytest.skip(
            f"no real records under {SHARED_DATA / 'records'} and no submissions/*/runs/* in the repo"
        )
    return found


class RecordMutator(Mutator):
    """Mutations of submission.json text and of train log text."""

    def json_text(self, text: str, marker: Path) -> tuple[str, bytes]:
        roll = self.rng.random()
        if roll < 0.55:
            return "json:hostile", dumps_hostile(self.json_value(json.loads(text))).encode("utf-8")
        if roll < 0.9:
            sub, out = self.bytes_(text.encode("utf-8"))
            return f"json:bytes:{sub}", out
        if roll < 0.97:
            return "json:pickle", pickle_payload(marker)
        return "json:oversized", b'{"name": "' + b"x" * (MAX_JSON_BYTES + 10) + b'"}'

    def log_text(self, text: str) -> tuple[str, bytes]:
        roll = self.rng.random()
        if roll < 0.3:
            sub, out = self.bytes_(text.encode("utf-8"))
            return f"log:bytes:{sub}", out
        lines = text.splitlines()
        at = self.rng.randrange(len(lines) + 1)
        if roll < 0.8:
            new = lines[:at] + [self.rng.choice(HOSTILE_LINES)] + lines[at:]
            return "log:hostile_line", "\n".join(new).encode("utf-8")
        if roll < 0.9 and lines:
            return "log:delete_line", "\n".join(lines[:at] + lines[at + 1 :]).encode("utf-8")
        return "log:duplicate_tail", "\n".join(lines + lines[at:]).encode("utf-8")


def _stage(src: Source, dest_root: Path) -> Path:
    """A fresh copy of ``src``'s JSON and logs in the layout its importer scans; returns the
    folder holding submission.json."""
    shutil.rmtree(dest_root, ignore_errors=True)
    if src.kind == "record":
        folder = dest_root / "track_10min_16mb" / src.folder.name
    else:
        folder = dest_root / src.folder.parents[1].name / "runs" / src.folder.name
    folder.mkdir(parents=True)
    if src.json_name:
        shutil.copyfile(src.folder / src.json_name, folder / src.json_name)
    for name, text in src.logs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def _import_and_render(src: Source, root: Path) -> str:
    if src.kind == "record":
        entries, excluded = import_records(root), None
        assert len(entries) == 1, f"{len(entries)} entries from one folder"
    else:  # a mutated run is either counted or listed as left out, never lost or doubled
        pooled = pool_runs(root)
        entries, excluded = pooled.entries, pooled.excluded
        assert len(entries) + len(excluded) == 1, f"{len(entries)} entries, {len(excluded)} left out"
    return render_markdown(build_rows(entries), "fuzz", excluded)


def _check_inert(readme: str) -> None:
    assert "<script" not in readme.lower() and "<img" not in readme.lower(), "live HTML in the README"
    header = 0
    for line in readme.splitlines():
        if not line.startswith("|"):
            header = 0
        elif not header:
            header = line.count("|")  # a table's header: its cells are fixed text
        elif "---" not in line:
            # Every data row has as many unescaped cell separators as its table's header.
            assert line.replace("\\|", "").count("|") == header, f"a row broke out of its table: {line[:120]}"


def _fuzz_json(sources: list[Source], tmp_path: Path, make_tally, n: int, seed: int) -> None:
    rng = random.Random(seed)
    mut = RecordMutator(rng)
    marker = tmp_path / "UNPICKLED"
    usable = [s for s in sources if s.json_name]
    # Each source is staged once; an input replaces one file, which is put back afterwards.
    staged = [
        (src, tmp_path / f"root{i}", _stage(src, tmp_path / f"root{i}")) for i, src in enumerate(usable)
    ]
    tally = make_tally(f"submission.json -> import + render ({len(usable)} real files, seed {seed})")
    for i in range(n):
        src, root, folder = staged[i % len(staged)]
        original = (folder / src.json_name).read_bytes()
        kind, data = mut.json_text(original.decode("utf-8"), marker)
        (folder / src.json_name).write_bytes(data)
        tally.run(
            f"{src.kind}:{kind}", lambda src=src, root=root: _import_and_render(src, root), _check_inert
        )
        (folder / src.json_name).write_bytes(original)
    assert not marker.exists(), "a pickle payload was unpickled"


def _fuzz_logs(sources: list[Source], tmp_path: Path, make_tally, n: int, seed: int) -> None:
    rng = random.Random(seed)
    mut = RecordMutator(rng)
    logs = [(s, name) for s in sources for name in s.logs]
    roots = {
        id(src): (tmp_path / f"root{i}", _stage(src, tmp_path / f"root{i}")) for i, src in enumerate(sources)
    }
    parse = make_tally(f"train log -> parse_log ({len(logs)} real logs, seed {seed})")
    full = make_tally(f"train log -> import + render ({len(logs)} real logs, seed {seed})")
    for i in range(n):
        src, name = logs[i % len(logs)]
        kind, data = mut.log_text(src.logs[name])
        parse.run(kind, lambda data=data: parse_log(data.decode("utf-8", errors="replace")), _check_summary)
        if i % 5 == 0:  # the whole importer is slower; a fifth of the inputs go through it
            root, folder = roots[id(src)]
            (folder / name).write_bytes(data)
            full.run(
                f"{src.kind}:{kind}", lambda src=src, root=root: _import_and_render(src, root), _check_inert
            )
            (folder / name).write_text(src.logs[name], encoding="utf-8")


def _check_summary(summary: LogSummary) -> None:
    assert isinstance(summary, LogSummary)
    for value in (summary.total_bytes, summary.code_bytes, summary.steps, summary.iterations):
        assert value is None or isinstance(value, int)


def test_fuzz_submission_json(sources, tmp_path, tally_guard):
    _fuzz_json(sources, tmp_path, tally_guard, DEFAULT_JSON_N, seed=3)


def test_fuzz_train_logs(sources, tmp_path, tally_guard):
    _fuzz_logs(sources, tmp_path, tally_guard, DEFAULT_N, seed=5)


@pytest.mark.fuzz
def test_fuzz_records_long(sources, tmp_path, tally_guard, request):
    n = fuzz_count(request, DEFAULT_N)
    _fuzz_json(sources, tmp_path / "j", tally_guard, n, seed=30)
    _fuzz_logs(sources, tmp_path / "l", tally_guard, n, seed=50)


def test_unmutated_sources_import(sources, tmp_path):
    """The fuzz seeds import cleanly, so mutations start from real, working inputs."""
    for src in sources:
        root = tmp_path / src.folder.name
        _stage(src, root)
        _check_inert(_import_and_render(src, root))
