"""The train logs of one record folder: which run each log is, which runs belong together,
which of them the record reports, and the headline recomputed from them.

The rules are written out in `harness.leaderboard.records` (module docstring) and
docs/protocol.md §10.3; this module implements them on parsed logs (`logparse.LogSummary`)
and plain JSON values, and never reads files or raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import PurePosixPath

from harness.leaderboard.logparse import (
    PROTOCOLS,
    LogSummary,
    ScoreLine,
    decimals,
    final_score,
    matches,
    protocols,
)

SEED_IN_NAME = re.compile(r"seed[_-]?(\d{1,18})(?!\d)", re.IGNORECASE)
TRAILING_NUMBER = re.compile(r"[_-]s?(\d{1,18})$")
"""A weaker hint (``ternary_log_1337``, ``run_s42``): used only when the log has no seed line."""
PROTOCOL_TEXT = {"ttt": "test-time training", "sliding": "sliding window", "roundtrip": "roundtrip"}
_DEFAULT_STEMS = ("train", "train_log", "log")
"""Stems of a folder's "the run" log, which joins the seed-named family beside it."""


@dataclass
class RunLog:
    """One log of a record folder, parsed and attributed to a seed."""

    rel: str
    """Path relative to the record folder (POSIX separators)."""
    summary: LogSummary
    digest: str
    seed: str | None = None
    seed_source: str = ""
    """"file name", "seed line" or "" (unknown)."""
    seed_conflict: str = ""
    """Non-empty when the file name and the log's seed line name different seeds."""
    family: str = ""

    @property
    def scored(self) -> bool:
        return bool(self.summary.scores)


@dataclass
class Family:
    """Runs of one kind in a folder (one log per seed), e.g. ``train_seed*.log``."""

    label: str
    runs: list[RunLog] = field(default_factory=list)

    @property
    def protocol(self) -> str | None:
        """The best protocol every run of the family has a score line for."""
        common = [p for p in PROTOCOLS if self.runs and all(p in protocols(r.summary) for r in self.runs)]
        return common[0] if common else None

    def scores(self, protocol: str | None = None) -> list[tuple[RunLog, ScoreLine]]:
        proto = protocol or self.protocol
        out = []
        for run in self.runs:
            line = final_score(run.summary, proto) if proto else None
            if line is not None:
                out.append((run, line))
        return out

    def mean(self) -> float | None:
        return decimal_mean([line.bpb for _run, line in self.scores()])

    def seeds(self) -> set[str]:
        return {r.seed for r in self.runs if r.seed is not None}


@dataclass
class Reported:
    """The runs a record reports and how they were chosen."""

    protocol: str | None
    runs: list[tuple[RunLog, ScoreLine]]
    family: str
    rule: str
    """Which step of the choice rule picked the family (for the summary)."""
    others: list[Family]
    notes: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float | None:
        return decimal_mean([line.bpb for _run, line in self.runs])

    @property
    def decimals(self) -> int:
        """The coarsest precision among the lines averaged (4 when a log printed only 4)."""
        return min((line.decimals for _run, line in self.runs), default=8)


def decimal_mean(values: list[float]) -> float | None:
    """The mean of numbers as printed (their shortest decimal text), summed in decimal so that
    the mean of 1.0978 and 1.0979 is 1.09785 exactly and rounds half-up to 1.0979 (binary
    floating point gives 1.0978499999999999)."""
    if not values:
        return None
    total = sum((Decimal(repr(float(v))) for v in values), Decimal(0))
    return float(total / len(values))


def agrees(claim: float, value: float, value_decimals: int = 8) -> bool:
    """A JSON number agrees with a recomputed one up to rounding: they differ by less than one
    unit of the coarser of the two precisions (the JSON's written decimals, the logs' printed
    decimals), so a rounded or a truncated mean agrees; e.g. 1.14276 vs 1.1427666 (5 decimals:
    less than 1e-5 apart) agrees, 1.12484502 vs 1.12503176 and 1.3 vs 1.2 do not."""
    places = min(decimals(claim), value_decimals)
    return abs(float(claim) - float(value)) < 10.0**-places


# ----------------------------------------------------------------------------- seeds


def attribute_seed(log: RunLog) -> None:
    """Seed from the file name (``train_seed42.log``, ``seed_42.log``, ``log_seed-7.txt``),
    else from the log's own ``seed:`` line; a disagreement between the two is recorded
    (the file name wins: it is how the submitter labelled the run)."""
    name = SEED_IN_NAME.search(PurePosixPath(log.rel).stem)
    header = log.summary.seed
    if name:
        log.seed, log.seed_source = str(int(name.group(1))), "file name"
        if header is not None and str(int(header)) != log.seed:
            log.seed_conflict = f"{log.rel}: file name says seed {log.seed}, its seed line says {header}"
    elif header is not None:
        log.seed, log.seed_source = str(int(header)), "seed line"
    elif trailing := TRAILING_NUMBER.search(PurePosixPath(log.rel).stem):
        log.seed, log.seed_source = str(int(trailing.group(1))), "file name"


def _template(log: RunLog) -> str:
    """The family label: directory + file name with the seed cut out."""
    path = PurePosixPath(log.rel)
    stem = SEED_IN_NAME.sub("seed*", path.stem, count=1)
    if stem == path.stem:
        stem = TRAILING_NUMBER.sub(lambda m: m.group(0)[: -len(m.group(1))] + "*", stem, count=1)
    if stem == path.stem and log.seed is not None:
        stem = re.sub(rf"(?<!\d){re.escape(log.seed)}(?!\d)", "*", stem, count=1)
    return str(path.with_name(stem + path.suffix))


# ----------------------------------------------------------------------------- families


def families(logs: list[RunLog]) -> list[Family]:
    """Scored logs grouped by `_template`, except that when every log has a seed and no seed
    has two logs they are all one family; a default-named log (``train.log``) with a seed the ``train_seed*``
    family beside it lacks joins that family."""
    scored = [lg for lg in logs if lg.scored]
    seeds = [lg.seed for lg in scored if lg.seed is not None]
    if len(seeds) == len(scored) and len(seeds) == len(set(seeds)):
        for lg in scored:
            lg.family = "all logs"
        return [Family("all logs", scored)] if scored else []
    groups: dict[str, Family] = {}
    for lg in scored:
        lg.family = _template(lg)
        groups.setdefault(lg.family, Family(lg.family)).runs.append(lg)
    for label, fam in list(groups.items()):
        path = PurePosixPath(label)
        sibling = groups.get(str(path.with_name("train_seed*" + path.suffix)))
        if path.stem in _DEFAULT_STEMS and sibling is not None and len(fam.runs) == 1:
            run = fam.runs[0]
            if run.seed is not None and run.seed not in sibling.seeds():
                run.family = sibling.label
                sibling.runs.append(run)
                del groups[label]
    return sorted(groups.values(), key=lambda f: f.label)


def _depth(fam: Family) -> int:
    return len(PurePosixPath(fam.label).parts)


def choose(fams: list[Family], claim: float | None, per_seed: dict[str, float]) -> tuple[Family, str] | None:
    """The reported family: (1) the one whose logs show the most of the JSON's per-seed
    values, (2) the one whose mean agrees with the JSON headline, (3) the one with one run
    showing the JSON headline (a single designated run), (4) the one with the most seeds,
    then the shallowest folder, then the first label."""
    if not fams:
        return None
    if len(fams) == 1:
        return fams[0], "the only family"

    def shown(fam: Family) -> int:
        count = 0
        for seed, value in per_seed.items():
            runs = [r for r in fam.runs if r.seed == seed]
            count += any(matches(value, s.bpb) for r in runs for s in r.summary.scores)
        return count

    best = max(shown(f) for f in fams)
    pool = [f for f in fams if shown(f) == best] if best else fams
    if best and len(pool) == 1:
        return pool[0], "shows the most per-seed values of submission.json"
    if claim is not None:
        hit = [f for f in pool if f.mean() is not None and agrees(claim, f.mean(), _coarsest(f))]
        if hit:
            return hit[0], "its mean agrees with submission.json"
        hit = [
            f
            for f in pool
            if len(f.runs) == 1 and any(agrees(claim, s.bpb, s.decimals) for s in f.runs[0].summary.scores)
        ]
        if hit:
            return hit[0], "its run shows submission.json's value"
    pool = sorted(pool, key=lambda f: (-len(f.runs), _depth(f), f.label))
    return pool[0], "most seeds"


def _coarsest(fam: Family) -> int:
    return min((line.decimals for _r, line in fam.scores()), default=8)


def reported(logs: list[RunLog], claim: float | None, per_seed: dict[str, float]) -> Reported | None:
    """The reported runs of a folder's logs (None when no log has a score line). Seeds the
    JSON claims that the chosen family lacks are taken from another family's log for that
    seed when it shows the JSON's per-seed value (a record that reuses another PR's seed run)."""
    fams = families(logs)
    picked = choose(fams, claim, per_seed)
    if picked is None:
        return None
    fam, rule = picked
    protocol = fam.protocol
    runs = fam.scores(protocol)
    notes = []
    have = {r.seed for r, _l in runs}
    for seed, value in per_seed.items():
        if seed in have:
            continue
        for other in fams:
            found = [(r, final_score(r.summary, protocol)) for r in other.runs if r.seed == seed and protocol]
            found = [(r, line) for r, line in found if line is not None and matches(value, line.bpb)]
            if found and other is not fam:
                runs.append(found[0])
                have.add(seed)
                notes.append(f"seed {seed} taken from {found[0][0].rel} (shows submission.json's {value})")
                break
    best = protocols_in(fam)
    if protocol and best and best[0] != protocol:
        missing = [r.rel for r in fam.runs if best[0] not in protocols(r.summary)]
        notes.append(
            f"{PROTOCOL_TEXT[best[0]]} line missing in {', '.join(missing)}: "
            f"the {PROTOCOL_TEXT[protocol]} line every run has is used"
        )
    return Reported(protocol, runs, fam.label, rule, [f for f in fams if f is not fam], notes)


def protocols_in(fam: Family) -> list[str]:
    """Protocols any run of the family has, best first."""
    found = {p for r in fam.runs for p in protocols(r.summary)}
    return [p for p in PROTOCOLS if p in found]
