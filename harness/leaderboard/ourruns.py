"""Our runs as leaderboard entries: every ``submissions/*/runs/*/submission.json`` with its
``train.log`` is read and checked (`harness.leaderboard.runfolder`), pooled by the rule of
`harness.leaderboard.pooling` (comparable, honest runs only, one per seed), and turned into one
`Entry` per group plus one `Excluded` per run left out, with its reason.

Only JSON and log text are read (the shipped files of a local run are hashed, never run).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from harness.leaderboard.entry import FLAG_BASELINES, FLAG_FEW_SEEDS, Entry, Excluded, SeedResult
from harness.leaderboard.pooling import Group, GroupKey, pool
from harness.leaderboard.records import (
    MIN_RECORD_SEEDS,
    add_flag,
    json_date,
    json_integer,
    json_number,
    json_text,
    mean_int,
    mean_or_none,
)
from harness.leaderboard.runfolder import RunFolder, read_run_folder


@dataclass
class RunPool:
    """Our runs: the entries the leaderboard ranks and the runs no statistic counts."""

    entries: list[Entry] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)


def _is_seed_summary(data: dict) -> bool:
    """A multi-seed summary (``seed_results`` and no ``seed`` of its own), not a run."""
    return isinstance(data.get("seed_results"), dict) and "seed" not in data


def _seed_result(run: RunFolder) -> SeedResult:
    data = run.data
    return SeedResult(
        seed=run.seed,
        val_bpb=json_number(data.get("val_bpb")),
        val_loss=json_number(data.get("val_loss")),
        bytes_total=json_integer(data.get("bytes_total")),
        steps=json_integer(data.get("steps")),
        ms_per_step=json_number(data.get("ms_per_step")),
        log_file=str(run.path / "train.log"),
    )


def _tokens_per_byte(runs: list[RunFolder]) -> float | None:
    ratios = []
    for run in runs:
        tokens, size = json_number(run.data.get("val_tokens")), json_number(run.data.get("val_bytes"))
        if tokens and size:
            ratios.append(tokens / size)
    return statistics.fmean(ratios) if ratios else None


def entry_key(key: GroupKey, ambiguous: bool) -> str:
    """The submission's name, or with the group's protocol and fingerprints (first 8 hex
    digits of data, tokenizer, config, code) when the submission has several groups."""
    if not ambiguous:
        return key.name
    parts = (key.dataset_sha256, key.tokenizer_sha256, key.config_sha256, key.code_sha256)
    return f"{key.name}[{key.protocol}:" + ":".join(p[:8] or "?" for p in parts) + "]"


def _entry(key: str, group: Group, left_out: int) -> Entry:
    runs = group.runs
    first = runs[0].data
    seeds = [_seed_result(r) for r in runs]
    scores = [s.val_bpb for s in seeds if s.val_bpb is not None]
    sizes = [s.bytes_total for s in seeds if s.bytes_total is not None]
    entry = Entry(
        key=key,
        name=group.key.name,
        author=json_text(first, "author"),
        github_id=json_text(first, "github_id"),
        date=max(json_date(r.data, "") for r in runs),
        track=json_text(first, "track"),
        protocol=group.key.protocol,
        dataset_sha256=group.key.dataset_sha256,
        tokenizer_sha256=group.key.tokenizer_sha256,
        non_record=group.non_record,
        score_bpb=statistics.fmean(scores),
        score_source=f"mean val_bpb of {len(scores)} run(s), one per seed",
        seeds=seeds,
        bytes_total=max(sizes) if sizes else None,
        steps=mean_int(s.steps for s in seeds),
        ms_per_step=mean_or_none(s.ms_per_step for s in seeds),
        tokens_per_byte=_tokens_per_byte(runs),
        source_path=str(runs[0].path.parents[1]),
    )
    for run in runs:
        baselines = run.data.get("baselines")
        if isinstance(baselines, dict) and baselines.get("beats_all") is False:
            add_flag(entry.flags, FLAG_BASELINES)
    if entry.protocol == "full" and len(runs) < MIN_RECORD_SEEDS:
        add_flag(entry.flags, FLAG_FEW_SEEDS)
    parts = [f"{len(runs)} run(s): {', '.join(r.path.name for r in runs)}"]
    parts.append(f"config {group.key.config_sha256[:12]}, code {group.key.code_sha256[:12] or '?'}")
    if group.non_record:
        parts.append(f"non-record protocol: {group.non_record}")
    if left_out:
        parts.append(f"{left_out} more run(s) left out (see the runs left out)")
    entry.summary = "; ".join(parts)
    return entry


def pool_runs(submissions_dir: Path) -> RunPool:
    """Every run of ``submissions_dir/*/runs/*``, pooled (`harness.leaderboard.pooling`).
    An unreadable ``submission.json`` raises `RecordReadError` naming the file (our own files
    must be well formed); a multi-seed summary of `pgolf run --seeds` is not a run and is skipped."""
    runs = []
    for path in sorted(Path(submissions_dir).glob("*/runs/*/submission.json")):
        run = read_run_folder(path)
        if not _is_seed_summary(run.data):
            runs.append(run)
    result = pool(runs)
    names = [g.key.name for g in result.groups]
    keys = {g.key: entry_key(g.key, names.count(g.key.name) > 1) for g in result.groups}
    out = RunPool()
    for group in result.groups:
        left = sum(1 for x in result.left_out if x.run.submission == group.key.name)
        out.entries.append(_entry(keys[group.key], group, left))
    for item in result.left_out:
        out.excluded.append(
            Excluded(
                name=item.run.submission,
                run=item.run.path.name,
                seed=item.run.seed,
                val_bpb=json_number(item.run.data.get("val_bpb")),
                reason=item.reason,
                entry_key=keys.get(item.group, "") if item.group is not None else "",
                source_path=str(item.run.path),
            )
        )
    return out


def import_runs(submissions_dir: Path) -> list[Entry]:
    """The entries of `pool_runs` (the runs left out are dropped: use `pool_runs` to list them)."""
    return pool_runs(submissions_dir).entries
