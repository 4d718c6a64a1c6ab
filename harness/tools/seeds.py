"""``pgolf run SUB --seeds 1337,42,2024``: one run per seed, then a multi-seed summary.

Each seed ``S`` is the normal run of ``harness/run.py`` in its own process (``torchrun`` when
``--nproc`` > 1) with ``--set train.seed=S`` added to the other ``--set`` flags and the run id
``<base>_seed<S>``, where ``<base>`` is ``--run-id``, else ``RUN_ID``, else a UTC timestamp. The
seeds run in the order given. When every run has finished, their ``submission.json`` files are
summarised into ``<submission>/runs/<base>_summary/submission.json`` and a per-seed table with
the mean and std is printed. A failing seed stops the series: the runs already written stay, no
summary is written, and the error names the seed.

Refused before anything is run or written (exit 2, the message names the flag): an empty seed
list, a seed that is not an integer, a seed given twice, ``--seeds`` with ``--set train.seed=...``
or with ``--resume``, and a run or summary folder that already exists.

Summary schema (the keys upstream's multi-seed records use, e.g.
``records/track_10min_16mb/2026-03-31_ParallelResiduals_MiniDepthRecurrence``)::

    name, author, github_id, date, track, blurb   from the first seed's run
    val_bpb        mean of the runs' val_bpb (the headline score of each run), summed in decimal
                   as the leaderboard's importer averages log values (runlogs.decimal_mean)
    val_bpb_std    sample standard deviation (n - 1) of val_bpb; null with one seed
    val_loss       mean of the runs' val_loss (nats per token)
    val_loss_std   sample standard deviation (n - 1) of val_loss; null with one seed
    seeds          the seeds, in run order (integers)
    seed_results   {"<seed>": {"val_bpb", "val_loss", "bytes_total", "run_id"}} (JSON keys are strings)
    bytes_total    the largest bytes_total over the seeds
    protocol       the first run's protocol (``full`` or ``smoke``)
    valid          true only when every run's submission.json says ``"valid": true``

Upstream spells the mean ``val_bpb`` (not ``mean_val_bpb``) in every multi-seed record that has
``seed_results``; the per-seed numbers of each run stay in its own folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from harness.api.config import parse_set_args
from harness.api.errors import ConfigError
from harness.api.fileio import write_atomic
from harness.leaderboard.runlogs import decimal_mean
from harness.pipeline.flags import RunFlags
from harness.pipeline.setup import check_run_id, new_run_id
from harness.tools.cli import run_command

SUMMARY_KEYS_FROM_FIRST = ("name", "author", "github_id", "date", "track", "blurb")
_INT = re.compile(r"[+-]?\d+")


def parse_seeds(text: str) -> list[int]:
    """``"1337,42,2024"`` -> ``[1337, 42, 2024]``; refuses an empty list, non-integers, duplicates."""
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ConfigError(f"--seeds {text!r}: empty seed list; expected e.g. --seeds 1337,42,2024")
    seeds: list[int] = []
    for item in items:
        if not _INT.fullmatch(item):
            raise ConfigError(f"--seeds {text!r}: {item!r} is not an integer seed")
        seed = int(item)
        if seed in seeds:
            raise ConfigError(f"--seeds {text!r}: seed {seed} is given twice")
        seeds.append(seed)
    return seeds


def seed_run_id(base: str, seed: int) -> str:
    """The run id of one seed's run."""
    return f"{base}_seed{seed}"


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def summarize(records: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The multi-seed summary (schema in the module docstring) of ``[(seed, submission.json), ...]``."""
    if not records:
        raise ValueError("no runs to summarise")
    first = records[0][1]
    bpbs = [float(rec["val_bpb"]) for _, rec in records]
    losses = [float(rec["val_loss"]) for _, rec in records]
    out: dict[str, Any] = {key: first.get(key) for key in SUMMARY_KEYS_FROM_FIRST}
    out.update(
        val_bpb=decimal_mean(bpbs),
        val_bpb_std=_std(bpbs),
        val_loss=decimal_mean(losses),
        val_loss_std=_std(losses),
        seeds=[seed for seed, _ in records],
        seed_results={
            str(seed): {
                "val_bpb": rec["val_bpb"],
                "val_loss": rec["val_loss"],
                "bytes_total": rec["bytes_total"],
                "run_id": rec.get("run_id"),
            }
            for seed, rec in records
        },
        bytes_total=max(int(rec["bytes_total"]) for _, rec in records),
        protocol=first.get("protocol"),
        valid=all(rec.get("valid") is True for _, rec in records),
    )
    return out


def _read_record(path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text(encoding="utf-8"))
    for key in ("val_bpb", "val_loss", "bytes_total"):
        value = record.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{path}: {key} is {value!r}, not a number; cannot summarise the seeds")
    return record


def _fmt(value: float | None, digits: int = 8) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(summary: dict[str, Any]) -> None:
    """The per-seed table, then the mean and std."""
    rows = [("seed", "run_id", "val_bpb", "val_loss", "bytes_total")]
    for seed, res in summary["seed_results"].items():
        rows.append(
            (seed, str(res["run_id"]), _fmt(res["val_bpb"]), _fmt(res["val_loss"]), str(res["bytes_total"]))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))
    print(
        f"mean val_bpb:{_fmt(summary['val_bpb'])} std:{_fmt(summary['val_bpb_std'])} "
        f"mean val_loss:{_fmt(summary['val_loss'])} std:{_fmt(summary['val_loss_std'])} "
        f"seeds:{len(summary['seeds'])} bytes_total_max:{summary['bytes_total']} valid:{summary['valid']}",
        flush=True,
    )


def run_seeds(args: argparse.Namespace) -> int:
    """`pgolf run --seeds`: validate, run each seed in its own process, summarise; the exit status."""
    seeds = parse_seeds(args.seeds)
    sets = parse_set_args(args.sets)
    if "train.seed" in sets:
        raise ConfigError("--seeds cannot be combined with --set train.seed=...; give the seeds to --seeds")
    if args.resume is not None:
        raise ConfigError("--seeds cannot be combined with --resume; resume each seed's run on its own")
    submission = Path(args.submission)
    if not submission.exists():
        raise ConfigError(f"submission {submission} does not exist")
    folder = submission.resolve() if submission.is_dir() else submission.resolve().parent
    base = check_run_id(args.run_id or os.environ.get("RUN_ID") or new_run_id(), "--seeds run id")
    runs = folder / "runs"
    summary_dir = runs / f"{base}_summary"
    taken = [runs / seed_run_id(base, s) for s in seeds] + [summary_dir]
    existing = [str(p) for p in taken if p.exists()]
    if existing:
        raise ConfigError(
            f"--seeds with run id {base!r}: {', '.join(existing)} already exists; "
            "choose another --run-id (nothing was run)"
        )
    records: list[tuple[int, dict[str, Any]]] = []
    for n, seed in enumerate(seeds, 1):
        rid = seed_run_id(base, seed)
        argv = RunFlags({**sets, "train.seed": str(seed)}, rid, None).argv()
        cmd = run_command(submission, argv, args.nproc)
        print(f"=== seed {seed} ({n}/{len(seeds)}): run {rid}", flush=True)
        print("+ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        result = runs / rid / "submission.json"
        if rc != 0 or not result.is_file():
            done = ", ".join(seed_run_id(base, s) for s, _ in records) or "none"
            print(
                f"error: --seeds: seed {seed} failed (exit {rc}, run {runs / rid}); "
                f"stopped before the remaining seeds; finished runs kept: {done}; no summary written",
                file=sys.stderr,
                flush=True,
            )
            return rc if rc > 0 else 1
        records.append((seed, _read_record(result)))
    summary = summarize(records)
    out = summary_dir / "submission.json"
    write_atomic(out, (json.dumps(summary, indent=2) + "\n").encode("utf-8"), overwrite=False)
    print_table(summary)
    print(f"summary: {out}", flush=True)
    return 0
