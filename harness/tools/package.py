"""``pgolf package RUN_DIR... --out DIR``: the record folder upstream expects, from our runs.

A pull request to ``openai/parameter-golf`` adds one folder ``records/<track>/<date>_<Name>/``
holding ``README.md``, ``submission.json``, the ``train_gpt.py`` that ran and its train logs
(upstream README, "Submission Process"; docs/protocol.md §5). This module builds that folder
from one run per seed (``submissions/<name>/runs/<run_id>/``):

* ``submission.json``: upstream's multi-seed keys, written by the same code as the summary of
  ``pgolf run --seeds`` (`harness.tools.seeds.summarize`), plus ``bytes_code``, ``hardware``,
  ``pytorch_version``, ``technique_summary`` and a ``compliance`` object with upstream's keys.
  Every per-seed number is the one the run's log prints (its last ``_exact`` line of the
  best protocol all runs share, as the leaderboard's importer reads it), so the folder
  imports through ``pgolf leaderboard --records`` with exactly these numbers; the packager
  imports the folder itself before publishing it and refuses when they differ.
* ``train_seed<S>.log``: each run's ``train.log``, byte for byte.
* ``train_gpt.py``: one run's shipped bundle (the file whose bytes were counted; the largest).
  Each run ships a bundle that replays its own seed; the runs' bundles must be the same code
  apart from that recorded seed (`harness.tools.record_code.code_without_seed`).
* ``README.md``: `harness.tools.record_readme`.

Refused, before anything is written (the message names the run and the field): a folder that
is no run, a multi-seed summary, a run whose ``submission.json`` says ``valid: false`` or
``over_budget`` (or bytes over 16,000,000), a smoke-protocol run without ``--allow-smoke``,
runs whose resolved configs differ other than in ``train.seed``, repeated seeds, runs that
shipped different code or ran on different data, world sizes or protocols, and a log whose
final line disagrees with its ``submission.json``. An existing destination folder is never
touched: the folder is assembled beside it and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.api.errors import ConfigError, DataError
from harness.leaderboard.logparse import ScoreLine, parse_log
from harness.leaderboard.records import (
    BYTE_CAP,
    MAX_LOG_BYTES,
    complete_lines,
    import_records,
    read_json_limited,
    read_text_limited,
)
from harness.leaderboard.runlogs import Family, RunLog
from harness.pipeline.checkpoint import config_differences
from harness.tools.record_code import code_without_seed, reproducing_sets, without_seed
from harness.tools.record_readme import render_readme
from harness.tools.seeds import summarize

SAME_ACROSS_SEEDS = (
    "name",
    "track",
    "protocol",
    "dataset_sha256",
    "tokenizer_sha256",
    "world_size",
)
"""Fields of ``submission.json`` every packaged run must share (the seed is what differs)."""
EVAL_CAP_MS = 600_000.0
"""The challenge's separate evaluation budget: 10 minutes on 8xH100 (docs/protocol.md §5)."""
TRAIN_CAP_MS = 600_000.0
"""The challenge's training budget: 10 minutes on 8xH100 (docs/protocol.md §5)."""


@dataclass(frozen=True)
class SeedRun:
    """One run folder, read and checked, with the score its log prints."""

    path: Path
    record: dict[str, Any]
    config: dict[str, Any]
    log_bytes: bytes
    line: ScoreLine

    @property
    def seed(self) -> int:
        return int(self.record["seed"])


# ----------------------------------------------------------------------------- reading


def _read_run(run_dir: Path, allow_smoke: bool) -> tuple[dict, dict, bytes]:
    run_dir = Path(run_dir)
    for name in ("submission.json", "config.json", "train.log"):
        if not (run_dir / name).is_file():
            raise DataError(f"{run_dir}: no {name}; expected a run folder submissions/<name>/runs/<run_id>/")
    record = read_json_limited(run_dir / "submission.json")
    if isinstance(record.get("seed_results"), dict) and "seed" not in record:
        raise ConfigError(f"{run_dir}: a multi-seed summary, not a run; pass the runs of its seeds")
    seed = record.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"{run_dir}/submission.json: seed is {seed!r}; expected an integer")
    if record.get("valid") is not True:
        reasons = "; ".join(map(str, record.get("invalid_reasons") or [])) or "no reason given"
        raise ConfigError(
            f"{run_dir}: submission.json says valid={record.get('valid')!r} ({reasons}); refused"
        )
    size = record.get("bytes_total")
    if record.get("over_budget") is not False or not isinstance(size, int) or size > BYTE_CAP:
        raise ConfigError(
            f"{run_dir}: bytes_total {size!r} (over_budget={record.get('over_budget')!r}); "
            f"a record must be at most {BYTE_CAP:,} bytes"
        )
    protocol = record.get("protocol")
    if protocol == "smoke" and not allow_smoke:
        raise ConfigError(
            f"{run_dir}: protocol is 'smoke' (the CPU smoke profile, not the challenge's protocol); "
            "pass --allow-smoke to package smoke runs anyway"
        )
    if protocol not in ("full", "smoke"):
        raise DataError(f"{run_dir}/submission.json: protocol is {protocol!r}; expected 'full' or 'smoke'")
    code = _code_path(run_dir, record)
    if not code.is_file() or hashlib.sha256(code.read_bytes()).hexdigest() != record.get("code_sha256"):
        raise DataError(f"{code}: missing or not the file whose sha256 the run recorded (code_sha256)")
    config = read_json_limited(run_dir / "config.json")
    read_text_limited(run_dir / "train.log", MAX_LOG_BYTES)  # refuses an oversized log
    log = (run_dir / "train.log").read_bytes()  # shipped byte for byte
    return record, config, log


def load_runs(run_dirs: list[Path], allow_smoke: bool = False) -> list[SeedRun]:
    """The runs, checked one by one and against each other (module docstring), in the order given."""
    if not run_dirs:
        raise ConfigError("pgolf package: no run folders given")
    read = [(Path(d), *_read_run(Path(d), allow_smoke)) for d in run_dirs]
    _check_same_runs(read)
    logs = []
    for _path, record, _config, log in read:
        text = complete_lines(log.decode("utf-8", errors="replace"))
        logs.append(RunLog(f"train_seed{record['seed']}.log", parse_log(text), "", seed=str(record["seed"])))
    family = Family("train_seed*.log", logs)
    protocol = family.protocol
    if protocol is None:
        raise DataError(f"the logs of {', '.join(str(p) for p, *_ in read)} share no final score line")
    lines = [line for _log, line in family.scores(protocol)]  # one per run: the protocol is common
    out = []
    for (path, record, config, log), line in zip(read, lines, strict=True):
        if abs(line.bpb - float(record["val_bpb"])) > 0.5 * 10.0**-line.decimals + 1e-12:
            raise DataError(
                f"{path}: train.log's final {protocol} line says val_bpb {line.bpb} but submission.json "
                f"says {record['val_bpb']}; the log is what a record is scored from"
            )
        out.append(SeedRun(path, record, config, log, line))
    return out


def _code_path(run_dir: Path, record: dict[str, Any]) -> Path:
    return run_dir / str(record.get("code_file") or "train_gpt.py")


def _check_same_runs(read: list[tuple[Path, dict, dict, bytes]]) -> None:
    first_path, first, first_config, _ = read[0]
    seen: dict[int, Path] = {}
    for path, record, config, _log in read:
        if record["seed"] in seen:
            raise ConfigError(
                f"{path} and {seen[record['seed']]} both ran seed {record['seed']}; seeds must differ"
            )
        seen[record["seed"]] = path
        for key in SAME_ACROSS_SEEDS:
            if record.get(key) != first.get(key):
                raise ConfigError(
                    f"{path}: {key} is {record.get(key)!r} but {first_path} has {first.get(key)!r}; "
                    "a record packages runs of one configuration that differ only in the seed"
                )
        diffs = config_differences(without_seed(first_config), without_seed(config))
        if diffs:
            raise ConfigError(
                f"{path}: its config differs from {first_path}'s other than in train.seed: {'; '.join(diffs)}"
            )
        if code_without_seed(_code_path(path, record)) != code_without_seed(_code_path(first_path, first)):
            raise ConfigError(
                f"{_code_path(path, record)}: the shipped code differs from {first_path}'s other than in "
                "the recorded seed; a record ships one train_gpt.py"
            )


# ----------------------------------------------------------------------------- the record


def compliance(runs: list[SeedRun]) -> dict[str, Any]:
    """Upstream's ``compliance`` keys, each computed from the runs' own numbers."""
    ttt = any(r.record.get("ttt_val_bpb") is not None for r in runs)
    return {
        "train_under_600s": all(float(r.record["train_time_ms"]) <= TRAIN_CAP_MS for r in runs),
        "eval_under_600s": all(float(r.record["eval_time_ms"]) <= EVAL_CAP_MS for r in runs),
        "artifact_under_16mb": all(int(r.record["bytes_total"]) <= BYTE_CAP for r in runs),
        # TTT only runs through the harness's score-first walk (harness.pipeline.adaptation): an
        # adapter is handed chunks after they are scored. None: the runs did no TTT at all.
        "score_first_ttt": True if ttt else None,
        "no_pre_quant_ttt": True,
        "no_val_data_before_quantization": True,
        "three_seeds": len(runs) >= 3,
    }


def technique_summary(config: dict[str, Any]) -> str:
    """The components the config composes, by class name, e.g. ``GPTConfig + MuonConfig + ...``."""
    names = []
    for key in ("model", "optimizer", "schedule", "quantizer", "compressor"):
        value = config.get(key)
        if isinstance(value, dict) and "_class" in value:
            names.append(value["_class"].rsplit(".", 1)[-1])
        if key == "model" and isinstance(value, dict):
            names += [c["_class"].rsplit(".", 1)[-1] for c in value.get("components", []) if "_class" in c]
    names += [p["_class"].rsplit(".", 1)[-1] for p in config.get("plugins", []) if "_class" in p]
    return " + ".join(names)


def build_record(runs: list[SeedRun]) -> dict[str, Any]:
    """The packaged ``submission.json``: `summarize` over the logs' numbers, plus upstream's extras."""
    per_seed = [
        (
            r.seed,
            {**r.record, "val_bpb": r.line.bpb, "val_loss": r.line.loss, "run_id": r.record.get("run_id")},
        )
        for r in runs
    ]
    record = summarize(per_seed)
    for r in runs:
        record["seed_results"][str(r.seed)].update(
            steps=r.record.get("steps"),
            step_avg_ms=r.record.get("ms_per_step"),
            train_time_ms=r.record.get("train_time_ms"),
            eval_time_ms=r.record.get("eval_time_ms"),
        )
    first = runs[0].record
    record.update(
        bytes_code=max(int(r.record["bytes_code"]) for r in runs),
        score_method=first.get("score_method"),
        hardware=f"{first.get('device')} x{first.get('world_size')}",
        pytorch_version=first.get("torch_version"),
        technique_summary=technique_summary(runs[0].config),
        compliance=compliance(runs),
        dataset_sha256=first.get("dataset_sha256"),
        tokenizer_sha256=first.get("tokenizer_sha256"),
    )
    return record


def folder_name(record: dict[str, Any]) -> tuple[str, str]:
    """(``track_<track>``, ``<YYYY-MM-DD>_<Name>``) with the name reduced to ``[A-Za-z0-9._-]``."""
    date = str(record.get("date") or "")[:10]
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date):
        raise DataError(f"submission.json date {record.get('date')!r}: expected YYYY-MM-DD...")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(record.get("name") or "")).strip("._-") or "submission"
    track = re.sub(r"[^A-Za-z0-9._-]+", "_", str(record.get("track") or "")) or "10min_16mb"
    return f"track_{track}", f"{date}_{name}"


def shipped_run(runs: list[SeedRun]) -> SeedRun:
    """The run whose ``train_gpt.py`` the folder ships: the largest (first on a tie), so the
    shipped file's size is the record's ``bytes_code`` (the bundles differ only in the seed
    they replay)."""
    return max(runs, key=lambda r: int(r.record["bytes_code"]))


# ----------------------------------------------------------------------------- writing


def _check_import(root: Path, folder: Path, record: dict[str, Any]) -> None:
    """Import the assembled folder as the leaderboard would; refuse when its numbers differ."""
    entry = next((e for e in import_records(root) if Path(e.source_path) == folder), None)
    if entry is None:
        raise DataError(
            f"the records importer does not find the packaged folder {folder}; nothing was written"
        )
    got = (entry.score_bpb, [s.seed for s in entry.seeds], entry.bytes_total)
    want = (record["val_bpb"], [str(s) for s in record["seeds"]], record["bytes_total"])
    if got != want or "json_disagrees" in entry.flags:
        raise DataError(
            f"the packaged folder imports as (val_bpb, seeds, bytes) {got} with flags {entry.flags}, "
            f"but its submission.json says {want}; nothing was written"
        )


def package(run_dirs: list[Path], out: Path, allow_smoke: bool = False) -> Path:
    """Write the record folder of ``run_dirs`` under ``out`` (``out/<track>/<date>_<Name>/``)
    and return its path; refusals as in the module docstring."""
    runs = load_runs(run_dirs, allow_smoke)
    record = build_record(runs)
    track, name = folder_name(record)
    dest = Path(out) / track / name
    if dest.exists():
        raise ConfigError(
            f"{dest} already exists; move it away or choose another --out (nothing was written)"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pgolf-package-", dir=dest.parent))
    try:
        folder = staging / track / name
        folder.mkdir(parents=True)
        (folder / "submission.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        for run in runs:
            (folder / f"train_seed{run.seed}.log").write_bytes(run.log_bytes)
        shipped = shipped_run(runs)
        shutil.copyfile(_code_path(shipped.path, shipped.record), folder / "train_gpt.py")
        source = f"submissions/{runs[0].path.parent.parent.name}"
        sets = reproducing_sets(runs[0].path, runs[0].record, runs[0].config)
        readme = render_readme(record, [r.record for r in runs], runs[0].config, sets, source, shipped.seed)
        (folder / "README.md").write_text(readme, encoding="utf-8")
        _check_import(staging, folder, record)
        for path in folder.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.rename(folder, dest)  # same filesystem: the folder appears whole or not at all
        parent = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(parent)  # the rename itself survives a crash
        finally:
            os.close(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def package_main(args: argparse.Namespace) -> int:
    """``pgolf package``: write the folder, print where and its headline."""
    dest = package([Path(p) for p in args.run_dirs], Path(args.out), allow_smoke=args.allow_smoke)
    record = json.loads((dest / "submission.json").read_text(encoding="utf-8"))
    std = record["val_bpb_std"]
    shown_std = "n/a" if std is None else f"{std:.8f}"
    print(
        f"packaged {len(record['seeds'])} run(s) into {dest}: val_bpb {record['val_bpb']:.8f} "
        f"std {shown_std} seeds {record['seeds']} bytes_total {record['bytes_total']}"
    )
    return 0
